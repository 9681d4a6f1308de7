"""Where the token signing keys come from: a JSON file named by configuration (`serve
--token-keys`, env EVENTMGMT_TOKEN_KEYS), or `token-keys.json` in the data directory, created
with one new key (mode 0600) on first start. Replicas that verify each other's tokens share
one file. README, "Signing keys", describes the format and how keys rotate."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import time
from pathlib import Path

from service.domain.tokens import MIN_KEY_BYTES, SigningKeys

log = logging.getLogger(__name__)
KEYS_FILE = "token-keys.json"


def _decode(kid: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"signing key {kid!r} must be a base64url string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_keys(document: object) -> SigningKeys:
    """`{"active": "<kid>", "keys": {"<kid>": "<base64url secret>", ...}}`."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), dict):
        raise ValueError('the signing keys must be {"active": ..., "keys": {kid: secret}}')
    keys = {str(kid): _decode(str(kid), text) for kid, text in document["keys"].items()}
    return SigningKeys(keys, str(document.get("active", "")))


def new_keys_document() -> dict[str, object]:
    kid = time.strftime("k%Y%m%d-", time.gmtime()) + secrets.token_hex(4)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(MIN_KEY_BYTES)).rstrip(b"=").decode()
    return {"active": kid, "keys": {kid: secret}}


def load_signing_keys(configured: Path | None, data_dir: Path) -> SigningKeys:
    """The keys of the configured file, or of the data directory's (made when missing)."""
    path = configured or data_dir / KEYS_FILE
    if configured is None and not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a process that starts
        # meanwhile reads the complete file or makes none of its own.
        draft = path.with_name(f".{KEYS_FILE}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(new_keys_document(), handle)
        try:
            os.link(draft, path)
            log.info("created token signing keys in %s", path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read the token signing keys in {path}: {error}") from None
    try:
        return parse_keys(document)
    except ValueError as error:
        raise SystemExit(f"the token signing keys in {path}: {error}") from None
