"""Strict parsers for the text clients send: JSON documents and decimal integers. Every place
that reads client JSON or client digits goes through these, so that one rule holds for all."""

from __future__ import annotations

import json
import re
from typing import Any

from service.domain.errors import invalid

MAX_JSON_BYTES = 1024 * 1024
# Only a `\u` escape can put a surrogate or a NUL into a decoded string (raw control bytes
# and invalid UTF-8 are refused by the decoder), so documents without one skip the walk.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89abcdefABCDEF]|0000)")
# The decoder joins an escaped pair into one character, so any surrogate left is alone.
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() in C; only an object with a repeated key is looked at in Python, for its name.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _unstorable_path(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding a lone surrogate or NUL, if any."""
    if isinstance(value, str):
        return path if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _UNSTORABLE.search(key):
                # Named by its JSON escape: the key itself cannot travel in an answer either.
                escaped = json.dumps(key)[1:-1]
                return f"{path}.{escaped}" if path else escaped
            where = f"{path}.{key}" if path else key
            found = _unstorable_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


# Made once: json.loads with hooks builds a new decoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def loads_json(raw: bytes | str, what: str = "body", limit: int = MAX_JSON_BYTES) -> Any:
    """Parses client JSON strictly: UTF-8, no duplicate keys, no NaN or Infinity, and no
    string that no backend can store (a lone surrogate such as `\\ud800`, or NUL). Errors
    name `what`, or the offending member inside it."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise invalid(what, f"at most {limit} bytes", reason="BODY_TOO_LARGE")
    try:
        # Decoded here rather than by json.loads, which guesses UTF-16 and UTF-32 too.
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        document = _DECODER.decode(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid(what, f"must be valid JSON: {error}", reason="MALFORMED_JSON") from None
    except RecursionError:  # a few hundred kilobytes of '[' exhaust the parser's stack
        raise invalid(
            what, "must not nest arrays and objects this deeply", reason="MALFORMED_JSON"
        ) from None
    if _SUSPECT_ESCAPE.search(text):
        path = _unstorable_path(document, "")
        if path is not None:
            field = what if not path else path if what == "body" else f"{what}.{path}"
            raise invalid(
                field,
                "must be valid Unicode text: no lone surrogate escape such as \\ud800 (only a "
                "high and low pair that forms one character) and no \\u0000",
                reason="MALFORMED_JSON",
            )
    return document


def parse_digits(text: str, field: str, rule: str, max_digits: int = 18) -> int:
    """A non-negative integer written in ASCII digits, at most `max_digits` of them (so it
    fits a 64-bit column). `str.isdigit` also accepts `²` and other scripts' digits, which
    `int` refuses or reads differently: clients get `rule` for those instead."""
    if len(text) > max_digits or not _ASCII_DIGITS.fullmatch(text):
        raise invalid(field, rule)
    return int(text)


def is_digits(text: str) -> bool:
    """True when `text` is ASCII digits only, the form parse_digits reads."""
    return _ASCII_DIGITS.fullmatch(text) is not None
