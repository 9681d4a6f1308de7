"""First start on a developer's machine: a development tenant, an Admin key and an Admin
user to sign in with."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from persistence.store import Store
from service.domain.access import ROOT_DOMAIN, Principal, Role
from service.domain.users import UserAdmin

log = logging.getLogger(__name__)
DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"
DEV_LOGIN_FILE = "dev-login.json"
DEV_USERNAME = "dev-admin"


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def ensure_dev_key(store: Store, data_dir: Path) -> Path:
    """Creates tenant `dev` and an Admin key on first start and writes the key to
    `data_dir/dev-api-key` (mode 0600); later starts reuse the file. Never in production."""
    path = data_dir / DEV_KEY_FILE
    if path.exists() and store.keys.tenant_exists(DEV_TENANT):
        return path
    store.keys.create_tenant(DEV_TENANT, "Development tenant")
    issued = store.keys.create_key(DEV_TENANT, "dev-admin", Role.ADMIN, ROOT_DOMAIN)
    _write_secret(path, issued.secret + "\n")
    log.info("created development tenant %r and Admin key %s", DEV_TENANT, issued.key_id)
    return path


async def ensure_dev_login(store: Store, data_dir: Path) -> Path:
    """Creates the Admin user `dev-admin` of tenant `dev` with a random password on first
    start and writes `{"username", "password"}` to `data_dir/dev-login.json` (mode 0600);
    later starts reuse it while the user exists. The password is never logged."""
    path = data_dir / DEV_LOGIN_FILE
    if path.exists() and await store.users.login_record(DEV_USERNAME) is not None:
        return path
    operator = Principal(DEV_TENANT, "cli", "operator", Role.ADMIN, ROOT_DOMAIN)
    admin = UserAdmin(store.users)
    password = secrets.token_urlsafe(18)
    existing = await store.users.login_record(DEV_USERNAME)
    if existing is None:
        user = await admin.create(operator, DEV_USERNAME, password, "Admin")
    else:  # the file was lost: a new password
        user = await admin.update(operator, existing[0].id, ["password"], password=password)
    _write_secret(path, json.dumps({"username": DEV_USERNAME, "password": password}) + "\n")
    log.info("development user %r (Admin, tenant %r): login in %s", user.username, DEV_TENANT, path)
    return path
