"""The settings of `eventmgmt serve`, apart from the server so that the CLI can read their
defaults without importing the server (and prometheus_client) before it chose the metrics'
multiprocess directory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# A gateway token as a header value needs no quoting or escaping anywhere (Envoy's `%`).
GATEWAY_TOKEN_RULE = re.compile(r"[A-Za-z0-9._-]{16,256}")


@dataclass
class ServerSettings:
    database_url: str = "sqlite:///data/eventmgmt.db"
    grpc_address: str = "127.0.0.1:50051"
    rest_host: str = "127.0.0.1"
    rest_port: int = 8080
    admin_port: int = 9901
    data_dir: Path = Path("data")
    gateway: bool = True
    production: bool = False
    grace_seconds: float = 5.0
    # How often pending device reports (answered 202) are turned into events; also at start.
    pending_interval: float = 1.0
    # How often expired events are deleted (seconds); 0 turns the sweeper off.
    retention_interval: float = 600.0
    mqtt_url: str = ""
    # `cloudevents` publishes CloudEvents 1.0 structured-mode JSON; the event's JSON when "".
    mqtt_format: str = ""
    # Prometheus metrics on this port (on rest_host); 0 turns them off.
    metrics_port: int = 9464
    # Server processes on the one gRPC port (service.workers); 1 serves in this process.
    workers: int = 1
    # Rate limits (service.domain.rate_limits.RULES_SYNTAX; README "Rate limits"); None:
    # PRODUCTION_RULES with `production`, none in development.
    rate_limits: str | None = None

    # Storm control (service.domain.storms.STORMS_SYNTAX; README "Alarms"); None:
    # PRODUCTION_STORMS with `production`, none in development.
    alarm_storms: str | None = None

    @property
    def storm_rules(self) -> str:
        from service.domain.storms import PRODUCTION_STORMS

        if self.alarm_storms is None:
            return PRODUCTION_STORMS if self.production else ""
        return self.alarm_storms

    @property
    def rate_rules(self) -> str:
        from service.domain.rate_limits import PRODUCTION_RULES

        if self.rate_limits is None:
            return PRODUCTION_RULES if self.production else ""
        return self.rate_limits

    # The token signing keys (service.token_keys): this JSON file, or when "" the data
    # directory's token-keys.json, made on first start.
    token_keys: str = ""
    token_ttl_seconds: int = 3600
    # The login throttle (service.domain.users.LoginThrottle).
    login_slow_after: int = 3
    login_lock_after: int = 10
    login_address_lock_after: int = 50
    login_lock_seconds: float = 300.0
    # What the gateway sends as `x-eventmgmt-gateway` to vouch for the X-Forwarded-For it sets
    # (service.servicers.auth_service.client_address); "" makes a new one at every start. Set it
    # (env EVENTMGMT_GATEWAY_TOKEN, never a flag: a command line is visible to every user) for a
    # proxy of your own in front of `serve --no-gateway`.
    gateway_token: str = field(default="", repr=False)
