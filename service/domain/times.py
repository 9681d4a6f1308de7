"""The one codec between ISO-8601 text and the service's times (integer microseconds since the
epoch, UTC). Callers turn its ValueError into their own error shape (REST field rule, filter
path, find clause)."""

from __future__ import annotations

from datetime import UTC, datetime
from time import gmtime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_ZONE = "must include a time zone, such as Z or +02:00"


class MissingZone(ValueError):
    """ISO-8601 text without a zone where one is required."""

    def __init__(self) -> None:
        super().__init__(NO_ZONE)


def micros_since_epoch(moment: datetime) -> int:
    """Exact integer microseconds of an aware datetime (no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_iso(text: str, *, assume_utc: bool = False) -> int:
    """Microseconds since the epoch of an ISO-8601 date or time (`2018-07-29T06:09:29.743Z`).
    Without a zone: MissingZone, or UTC with `assume_utc`. Text that is not ISO-8601: the
    ValueError of datetime.fromisoformat."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        if not assume_utc:
            raise MissingZone
        moment = moment.replace(tzinfo=UTC)
    return micros_since_epoch(moment)


# The last whole second format_micros wrote, and its text: the times of one event (its
# timestamp, creation and update) and of events listed together mostly share their second.
# One tuple, replaced whole, so threads never see half of it.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def format_micros(micros: int) -> str:
    """ISO-8601 in UTC with a `Z`: milliseconds, or microseconds where the time has them."""
    global _last_second
    seconds, fraction = divmod(micros, 1_000_000)
    last = _last_second
    if last[0] == seconds:
        moment = last[1]
    else:
        # gmtime and %-formatting: a sixth of what a datetime and its strftime cost; the year
        # always has its four digits, as fromisoformat reads it back.
        moment = "%04d-%02d-%02dT%02d:%02d:%02d" % gmtime(seconds)[:6]  # noqa: UP031 - twice as fast
        _last_second = (seconds, moment)
    if fraction % 1000 == 0:
        return f"{moment}.{fraction // 1000:03d}Z"
    return f"{moment}.{fraction:06d}Z"


def format_millis(millis: int) -> str:
    """ISO-8601 in UTC with milliseconds and a `Z`, for a time in epoch milliseconds."""
    return format_micros(millis * 1000)
