"""Alarm storms as the database holds them (`alarm_storms`, migration 37): one row per scope
whose rate is exceeded, shared by every server process, written through the group-commit
writer together with the storm's start and end events (service/domain/storms.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from persistence.rows import event_row
from service.domain.storms import StormEventBuilder, StormPer, StormRecord

if TYPE_CHECKING:
    from persistence.store import Store

_COLUMNS = (
    "scope",
    "per",
    "tenant_id",
    "domain",
    "entity_type",
    "entity_id",
    "type_id",
    "limit_count",
    "window_s",
    "started_at",
    "last_window",
    "folded",
    "refused",
)


def _values(record: StormRecord) -> tuple[Any, ...]:
    return (
        record.scope,
        record.per.value,
        record.tenant_id,
        record.domain,
        record.entity_type,
        record.entity_id,
        record.type_id,
        record.limit,
        record.window_s,
        record.started_at,
        record.last_window,
        record.folded,
        record.refused,
    )


def _record(row: Any) -> StormRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    return StormRecord(
        scope=values["scope"],
        per=StormPer(values["per"]),
        tenant_id=values["tenant_id"],
        domain=values["domain"],
        entity_type=values["entity_type"],
        entity_id=values["entity_id"],
        type_id=values["type_id"],
        limit=int(values["limit_count"]),
        window_s=int(values["window_s"]),
        started_at=int(values["started_at"]),
        last_window=int(values["last_window"]),
        folded=int(values["folded"]),
        refused=int(values["refused"]),
    )


class StormRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def exceeded(self, record: StormRecord, make_event: StormEventBuilder) -> bool:
        p = self._store.database.param

        def write(cursor: Any) -> bool:
            cursor.execute(
                f"UPDATE alarm_storms SET last_window = CASE WHEN last_window < {p} THEN {p} "
                f"ELSE last_window END WHERE scope = {p}",
                (record.last_window, record.last_window, record.scope),
            )
            if cursor.rowcount == 1:
                return False
            cursor.execute(
                f"INSERT INTO alarm_storms ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join([p] * len(_COLUMNS))}) ON CONFLICT (scope) DO NOTHING",
                _values(record),
            )
            if cursor.rowcount != 1:  # another process started it meanwhile
                return False
            self._store.writes.insert_rows(cursor, [event_row(make_event(record, False))])
            return True

        started: bool = await self._store.writer.submit(write)
        return started

    async def add_counts(self, counts: dict[str, tuple[int, int]]) -> None:
        p = self._store.database.param

        def write(cursor: Any) -> None:
            cursor.executemany(
                f"UPDATE alarm_storms SET folded = folded + {p}, refused = refused + {p} "
                f"WHERE scope = {p}",
                [(folded, refused, scope) for scope, (folded, refused) in sorted(counts.items())],
            )

        await self._store.writer.submit(write)

    async def end_calm(self, now: int, make_event: StormEventBuilder) -> list[StormRecord]:
        p = self._store.database.param

        def write(cursor: Any) -> list[StormRecord]:
            # Ended: a whole window went by after the last one over the rate.
            cursor.execute(
                f"DELETE FROM alarm_storms WHERE last_window + 2 * window_s * 1000000 <= {p} "
                f"RETURNING {', '.join(_COLUMNS)}",
                (now,),
            )
            ended = [_record(row) for row in cursor.fetchall()]
            if ended:
                self._store.writes.insert_rows(
                    cursor, [event_row(make_event(record, True)) for record in ended]
                )
            return ended

        result: list[StormRecord] = await self._store.writer.submit(write)
        return result
