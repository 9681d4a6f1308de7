"""First start on a developer's machine: a development tenant and Admin key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from persistence.store import Store
from service.domain.access import ROOT_DOMAIN, Role

log = logging.getLogger(__name__)
DEV_TENANT = "dev"
DEV_KEY_FILE = "dev-api-key"


def ensure_dev_key(store: Store, data_dir: Path) -> Path:
    """Creates tenant `dev` and an Admin key on first start and writes the key to
    `data_dir/dev-api-key` (mode 0600); later starts reuse the file. Never in production."""
    path = data_dir / DEV_KEY_FILE
    if path.exists() and store.keys.tenant_exists(DEV_TENANT):
        return path
    store.keys.create_tenant(DEV_TENANT, "Development tenant")
    issued = store.keys.create_key(DEV_TENANT, "dev-admin", Role.ADMIN, ROOT_DOMAIN)
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(issued.secret + "\n")
    os.chmod(path, 0o600)
    log.info("created development tenant %r and Admin key %s", DEV_TENANT, issued.key_id)
    return path
