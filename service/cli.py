"""`eventmgmt`: the one console command. `serve` runs the service and its REST gateway;
`admin` manages tenants, API keys, users, devices and apps; `migrate` applies schema
migrations; `events` works with events over gRPC (service.cli_events); `completion` prints
the shell completion script."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import argcomplete

from persistence.store import Store
from service import cli_events, event_loop, logs
from service.domain.access import (
    ROLE_PRIVILEGES,
    ROOT_DOMAIN,
    Principal,
    Role,
    check_domain_path,
    format_privileges,
    parse_privileges,
    privileges_from_text,
)
from service.domain.errors import DomainError
from service.domain.rate_limits import PRODUCTION_RULES, RULES_SYNTAX, parse_rate_limits
from service.domain.registry import RegistryManager
from service.domain.storms import PRODUCTION_STORMS, STORMS_SYNTAX, parse_storm_rules
from service.domain.users import User, UserAdmin
from service.settings import GATEWAY_TOKEN_RULE, ServerSettings
from service.workers import default_workers


def _env(name: str, default: str) -> str:
    return os.environ.get(f"EVENTMGMT_{name}", default)


def _rate_limits(text: str) -> str:
    try:
        parse_rate_limits(text)
    except DomainError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return text


def _alarm_storms(text: str) -> str:
    try:
        parse_storm_rules(text)
    except DomainError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return text


def _gateway_token() -> str:
    token = _env("GATEWAY_TOKEN", "")
    if token and not GATEWAY_TOKEN_RULE.fullmatch(token):
        raise SystemExit(
            "EVENTMGMT_GATEWAY_TOKEN: use 16 to 256 letters, digits, '-', '_' or '.' "
            "(a header value a proxy sends as it is)"
        )
    return token


def _parser() -> argparse.ArgumentParser:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(prog="eventmgmt", description=__doc__)
    parser.add_argument(
        "--database",
        default=_env("DATABASE_URL", defaults.database_url),
        help="sqlite:///path.db or postgresql://user@host/db (env EVENTMGMT_DATABASE_URL)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=_env("LOG_FORMAT", "auto"),
        help="json (one object per line), text, or auto: text on a terminal, else json "
        "(env EVENTMGMT_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the gRPC server and the Envoy REST gateway")
    run.add_argument("--grpc-address", default=_env("GRPC_ADDRESS", defaults.grpc_address))
    run.add_argument("--rest-host", default=_env("REST_HOST", defaults.rest_host))
    run.add_argument(
        "--rest-port", type=int, default=int(_env("REST_PORT", str(defaults.rest_port)))
    )
    run.add_argument(
        "--admin-port", type=int, default=int(_env("ADMIN_PORT", str(defaults.admin_port)))
    )
    run.add_argument(
        "--data-dir", type=Path, default=Path(_env("DATA_DIR", str(defaults.data_dir)))
    )
    run.add_argument("--no-gateway", action="store_true", help="gRPC only, no Envoy")
    run.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "0")),
        help="server processes sharing the gRPC port; default (0): one per core "
        "(env EVENTMGMT_WORKERS)",
    )
    run.add_argument(
        "--pending-interval",
        type=float,
        default=float(_env("PENDING_INTERVAL", str(defaults.pending_interval))),
        help="seconds between passes that store device reports answered 202",
    )
    run.add_argument(
        "--retention-interval",
        type=float,
        default=float(_env("RETENTION_INTERVAL", str(defaults.retention_interval))),
        help="seconds between deletions of expired events; 0 turns them off",
    )
    run.add_argument(
        "--mqtt-url",
        default=_env("MQTT_URL", ""),
        help="publish committed events to this broker, e.g. mqtt://127.0.0.1:1883 "
        "(env EVENTMGMT_MQTT_URL)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("METRICS_PORT", str(defaults.metrics_port))),
        help="serve Prometheus metrics at http://REST_HOST:PORT/metrics; 0 turns them off "
        "(env EVENTMGMT_METRICS_PORT)",
    )
    run.add_argument(
        "--mqtt-format",
        choices=["json", "cloudevents"],
        default=_env("MQTT_FORMAT", "json"),
        help="MQTT payloads: the event's JSON, or CloudEvents 1.0 structured-mode JSON "
        "(env EVENTMGMT_MQTT_FORMAT)",
    )
    run.add_argument(
        "--token-keys",
        default=_env("TOKEN_KEYS", ""),
        help="JSON file of the login token signing keys, shared by replicas; default: "
        "DATA_DIR/token-keys.json, made on first start (env EVENTMGMT_TOKEN_KEYS)",
    )
    run.add_argument(
        "--token-ttl",
        type=int,
        default=int(_env("TOKEN_TTL_SECONDS", str(defaults.token_ttl_seconds))),
        help="seconds a login token is valid (env EVENTMGMT_TOKEN_TTL_SECONDS)",
    )
    run.add_argument(
        "--login-lock-after",
        type=int,
        default=int(_env("LOGIN_LOCK_AFTER", str(defaults.login_lock_after))),
        help="failed logins of a username that lock it for --login-lock-seconds "
        "(env EVENTMGMT_LOGIN_LOCK_AFTER); answers slow down after "
        "EVENTMGMT_LOGIN_SLOW_AFTER; an address locks after EVENTMGMT_LOGIN_ADDRESS_LOCK_AFTER",
    )
    run.add_argument(
        "--login-lock-seconds",
        type=float,
        default=float(_env("LOGIN_LOCK_SECONDS", str(defaults.login_lock_seconds))),
        help="how long a locked username or address is refused (env EVENTMGMT_LOGIN_LOCK_SECONDS)",
    )
    run.add_argument(
        "--production",
        action="store_true",
        default=_env("PRODUCTION", "") in ("1", "true"),
        help="no development tenant or key, and default rate limits (env EVENTMGMT_PRODUCTION=1)",
    )
    run.add_argument(
        "--rate-limits",
        type=_rate_limits,
        default=os.environ.get("EVENTMGMT_RATE_LIMITS"),
        help=f"{RULES_SYNTAX}; default: none in development, {PRODUCTION_RULES} with "
        "--production (env EVENTMGMT_RATE_LIMITS; README: Rate limits)",
    )
    run.add_argument(
        "--alarm-storms",
        type=_alarm_storms,
        default=os.environ.get("EVENTMGMT_ALARM_STORMS"),
        help=f"storm control, {STORMS_SYNTAX}; default: none in development, "
        f"{PRODUCTION_STORMS} with --production (env EVENTMGMT_ALARM_STORMS; README: Alarms)",
    )

    commands.add_parser("migrate", help="apply schema migrations and exit")

    admin = commands.add_parser("admin", help="manage tenants and API keys")
    actions = admin.add_subparsers(dest="action", required=True)
    tenant = actions.add_parser("create-tenant", help="create a tenant")
    tenant.add_argument("tenant_id")
    tenant.add_argument("--name", default="")
    key = actions.add_parser("create-key", help="create an API key; prints the secret once")
    key.add_argument("--tenant", required=True)
    key.add_argument("--role", required=True, help="Read, ReadWrite or Admin")
    key.add_argument("--domain", default="/", help="domain subtree, such as /root/sub1")
    key.add_argument("--name", default="api-key")
    key.add_argument(
        "--privileges",
        default="",
        help="comma-separated privileges narrower than the role's, such as "
        "'Events.READ,Events.CREATE' ('read event.tenant' works too)",
    )
    listing = actions.add_parser("list-keys", help="list API keys (never their secrets)")
    listing.add_argument("--tenant")
    revoke = actions.add_parser("revoke-key", help="revoke an API key by its id")
    revoke.add_argument("key_id")

    device = actions.add_parser("create-device", help="register a device of a tenant")
    device.add_argument("device_id")
    device.add_argument("--tenant", required=True)
    device.add_argument("--domain", default="/", help="domain path, such as /root/sub1")
    device.add_argument("--entity-type", default="", help="entity type of its events (Device)")
    actions.add_parser("list-devices", help="list a tenant's devices").add_argument(
        "--tenant", required=True
    )
    disable_device = actions.add_parser("disable-device", help="refuse a device's reports")
    disable_device.add_argument("device_id")
    disable_device.add_argument("--tenant", required=True)
    app = actions.add_parser("create-app", help="register a tenant app with an active licence")
    app.add_argument("app_id")
    app.add_argument("--tenant", required=True)
    app.add_argument("--name", default="")
    actions.add_parser("list-apps", help="list a tenant's apps").add_argument(
        "--tenant", required=True
    )
    disable_app = actions.add_parser("disable-app", help="deactivate an app's licence")
    disable_app.add_argument("app_id")
    disable_app.add_argument("--tenant", required=True)

    _add_user_parsers(actions)
    cli_events.add_parsers(commands)
    return parser


def _add_user_parsers(actions: Any) -> None:
    users = actions.add_parser("users", help="manage the users who sign in (POST /auth/login)")
    verbs = users.add_subparsers(dest="verb", required=True)
    password_help = (
        "read the password from the first line of standard input; without it a random "
        "password is made and printed once"
    )
    create = verbs.add_parser("create", help="create a user")
    create.add_argument("username")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, help="Read, ReadWrite or Admin")
    create.add_argument("--domain", default="/", help="domain subtree, such as /root/sub1")
    create.add_argument("--privileges", default="", help="comma-separated, narrower than the role")
    create.add_argument("--password-stdin", action="store_true", help=password_help)
    verbs.add_parser("list", help="list a tenant's users").add_argument("--tenant", required=True)
    for verb, text in (("get", "show a user"), ("revoke", "revoke a user and its sessions")):
        one = verbs.add_parser(verb, help=text)
        one.add_argument("user_id")
        one.add_argument("--tenant", required=True)
    update = verbs.add_parser("update", help="change a user's password, role, privileges or domain")
    update.add_argument("user_id")
    update.add_argument("--tenant", required=True)
    update.add_argument("--role")
    update.add_argument("--domain")
    update.add_argument("--privileges", help="comma-separated; '' for the role's own")
    update.add_argument("--password", action="store_true", help="set a new password")
    update.add_argument("--password-stdin", action="store_true", help=password_help)


def _new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from standard input, or a random one (True: print it once)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(18), True


def _print_user(user: User) -> None:
    state = "active" if user.revoke_time is None else "revoked"
    granted = format_privileges(user.privileges)
    print(f"{user.id}  {user.username}  {user.role.title:9}  {user.domain}  {state}  {granted}")


async def _users(store: Store, args: argparse.Namespace) -> None:
    operator = Principal(args.tenant, "cli", "operator", Role.ADMIN, ROOT_DOMAIN)
    admin = UserAdmin(store.users)
    if args.verb == "create":
        password, show = _new_password(args)
        user = await admin.create(
            operator,
            args.username,
            password,
            args.role,
            args.privileges.split(","),
            args.domain,
        )
        _print_user(user)
        if show:
            print("the password is shown once:", file=sys.stderr)
            print(password)
    elif args.verb == "list":
        after = ""
        while users := await admin.list(operator, after):
            for user in users:
                _print_user(user)
            after = users[-1].username
    elif args.verb == "get":
        _print_user(await admin.get(operator, args.user_id))
    elif args.verb == "revoke":
        _print_user(await admin.revoke(operator, args.user_id))
    else:
        fields = [
            name
            for name, value in (
                ("role", args.role),
                ("domain", args.domain),
                ("privileges", args.privileges),
            )
            if value is not None
        ]
        password, show = "", False
        if args.password or args.password_stdin:
            fields.append("password")
            password, show = _new_password(args)
        user = await admin.update(
            operator,
            args.user_id,
            fields,
            password=password,
            role_text=args.role or "",
            privileges=(args.privileges or "").split(","),
            domain=args.domain or "",
        )
        _print_user(user)
        if show:
            print("the new password is shown once:", file=sys.stderr)
            print(password)


_REGISTRY_ACTIONS = (
    "create-device",
    "list-devices",
    "disable-device",
    "create-app",
    "list-apps",
    "disable-app",
)


async def _registry(store: Store, args: argparse.Namespace) -> None:
    # The operator at the terminal acts as an Admin of the whole tenant.
    operator = Principal(args.tenant, "cli", "operator", Role.ADMIN, ROOT_DOMAIN)
    registry = RegistryManager(store.registry)
    if args.action == "create-device":
        d = await registry.create_device(operator, args.device_id, args.domain, args.entity_type)
        print(f"device {d.id} created in tenant {d.tenant_id} ({d.entity_type}, {d.domain})")
    elif args.action == "list-devices":
        after = ""
        while devices := await registry.list_devices(operator, after):
            for d in devices:
                state = "enabled" if d.enabled else "disabled"
                print(f"{d.id}  {d.domain}  {d.entity_type}  {state}")
            after = devices[-1].id
    elif args.action == "disable-device":
        d = await registry.disable_device(operator, args.device_id)
        print(f"device {d.id} disabled")
    elif args.action == "create-app":
        a = await registry.create_app(operator, args.app_id, args.name)
        print(f"app {a.id} created in tenant {a.tenant_id} with an active licence")
    elif args.action == "list-apps":
        after = ""
        while apps := await registry.list_apps(operator, after):
            for a in apps:
                state = "licence active" if a.licence_active else "licence inactive"
                print(f"{a.id}  {a.name}  {state}")
            after = apps[-1].id
    else:
        a = await registry.disable_app(operator, args.app_id)
        print(f"app {a.id} licence deactivated")


def _admin(store: Store, args: argparse.Namespace) -> int:
    if args.action in (*_REGISTRY_ACTIONS, "users"):
        if not store.keys.tenant_exists(args.tenant):
            print(
                f"no tenant {args.tenant}; create it with `eventmgmt admin create-tenant`",
                file=sys.stderr,
            )
            return 1
        asyncio.run((_users if args.action == "users" else _registry)(store, args))
        return 0
    if args.action == "create-tenant":
        created = store.keys.create_tenant(args.tenant_id, args.name or args.tenant_id)
        print(f"tenant {args.tenant_id} {'created' if created else 'already exists'}")
        return 0
    if args.action == "create-key":
        if not store.keys.tenant_exists(args.tenant):
            print(
                f"no tenant {args.tenant}; create it with `eventmgmt admin create-tenant`",
                file=sys.stderr,
            )
            return 1
        role = Role.parse(args.role)
        issued = store.keys.create_key(
            args.tenant,
            args.name,
            role,
            check_domain_path(args.domain),
            parse_privileges(args.privileges.split(","), role),
        )
        granted = format_privileges(issued.privileges or ROLE_PRIVILEGES[role])
        print(
            f"key id {issued.key_id} ({issued.role.title}: {granted}; tenant "
            f"{issued.tenant_id}, domain {issued.domain}); the secret is shown once:",
            file=sys.stderr,
        )
        print(issued.secret)
        return 0
    if args.action == "list-keys":
        for row in store.keys.list_keys(args.tenant):
            state = "revoked" if row["revoke_time"] else "active"
            role = Role(row["role"])
            granted = format_privileges(privileges_from_text(row["privileges"], role))
            print(
                f"{row['id']}  {row['tenant_id']}  {role.title:9}  "
                f"{row['domain']}  {row['name']}  {state}  {granted}"
            )
        return 0
    revoked = store.keys.revoke_key(args.key_id)
    print(f"key {args.key_id} {'revoked' if revoked else 'not found or already revoked'}")
    return 0 if revoked else 1


def _use_metrics_dir(directory: Path) -> None:
    """Every server process started from here (one now, several workers later) writes its
    metrics into one directory, which one scrape adds up; a new start begins empty. A
    directory set by the operator (PROMETHEUS_MULTIPROC_DIR) is kept as it is."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Answers the shell's completion requests (and exits) when the completion script calls.
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(cli_events.completion_script(args.shell))
        return 0
    if args.command == "events":
        return cli_events.run(args)
    logs.configure(args.log_level, args.log_format)
    if args.command == "serve":
        _use_metrics_dir(args.data_dir / "metrics")
        # Imported only now: prometheus_client picks its multiprocess mode at import.
        from service.server import serve

        defaults = ServerSettings()
        settings = ServerSettings(
            database_url=args.database,
            grpc_address=args.grpc_address,
            rest_host=args.rest_host,
            rest_port=args.rest_port,
            admin_port=args.admin_port,
            data_dir=args.data_dir,
            gateway=not args.no_gateway,
            production=args.production,
            pending_interval=args.pending_interval,
            retention_interval=args.retention_interval,
            mqtt_url=args.mqtt_url,
            metrics_port=args.metrics_port,
            workers=args.workers if args.workers > 0 else default_workers(),
            mqtt_format="" if args.mqtt_format == "json" else args.mqtt_format,
            rate_limits=args.rate_limits,
            alarm_storms=args.alarm_storms,
            token_keys=args.token_keys,
            token_ttl_seconds=args.token_ttl,
            login_lock_after=args.login_lock_after,
            login_lock_seconds=args.login_lock_seconds,
            login_slow_after=int(_env("LOGIN_SLOW_AFTER", str(defaults.login_slow_after))),
            login_address_lock_after=int(
                _env("LOGIN_ADDRESS_LOCK_AFTER", str(defaults.login_address_lock_after))
            ),
            gateway_token=_gateway_token(),
        )
        # Worker processes (service.workers) log as this one does.
        os.environ.update(EVENTMGMT_LOG_LEVEL=args.log_level, EVENTMGMT_LOG_FORMAT=args.log_format)
        event_loop.run(serve(settings))
        return 0
    store = Store(args.database)
    try:
        applied = store.migrate()
        if args.command == "migrate":
            print(f"applied migrations: {applied or 'none, schema is current'}")
            return 0
        return _admin(store, args)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    finally:
        store.close()
