"""Versioned schema migrations, applied in order on start.

Each migration is frozen once released: never edit one, add the next. Migrations run in one
transaction each; on PostgreSQL an advisory lock keeps replicas that start together from
applying the same one twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import peewee

from persistence.database import is_postgres

log = logging.getLogger(__name__)
_ADVISORY_LOCK_KEY = 7_301_245_001


def _v1_initial(db: peewee.Database) -> None:
    blob = "BYTEA" if is_postgres(db) else "BLOB"
    statements = [
        """CREATE TABLE tenants (
            id VARCHAR(64) PRIMARY KEY,
            name VARCHAR(255) NOT NULL,
            create_time BIGINT NOT NULL)""",
        """CREATE TABLE api_keys (
            id VARCHAR(32) PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL REFERENCES tenants (id),
            name VARCHAR(128) NOT NULL,
            key_hash CHAR(64) NOT NULL UNIQUE,
            role SMALLINT NOT NULL,
            domain VARCHAR(1024) NOT NULL,
            create_time BIGINT NOT NULL,
            revoke_time BIGINT)""",
        f"""CREATE TABLE events (
            id VARCHAR(36) PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL,
            type_id VARCHAR(64) NOT NULL,
            correlation_id VARCHAR(128) NOT NULL,
            entity_type VARCHAR(64) NOT NULL,
            entity_id VARCHAR(128) NOT NULL,
            domain VARCHAR(1024) NOT NULL,
            ts BIGINT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            etag BIGINT NOT NULL,
            severity SMALLINT NOT NULL,
            code VARCHAR(32) NOT NULL,
            description TEXT NOT NULL,
            source TEXT,
            classification VARCHAR(16) NOT NULL,
            category VARCHAR(128) NOT NULL,
            ack_required BOOLEAN NOT NULL,
            acknowledged BOOLEAN NOT NULL,
            acknowledged_at BIGINT,
            acknowledged_by VARCHAR(128) NOT NULL,
            app_id VARCHAR(64) NOT NULL,
            internal BOOLEAN NOT NULL,
            payload_type VARCHAR(255),
            payload_data {blob},
            custom TEXT)""",
        # The list queries: a tenant's events by time, by entity and time, by type and time.
        # The id closes each index so that paging by (time, id) stays an index range scan.
        "CREATE INDEX events_tenant_ts ON events (tenant_id, ts, id)",
        "CREATE INDEX events_tenant_entity_ts ON events (tenant_id, entity_id, ts)",
        "CREATE INDEX events_tenant_type_ts ON events (tenant_id, type_id, ts)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v2_event_types(db: peewee.Database) -> None:
    statements = [
        # Ids are unique over all tenants, so that a GLOBAL type and a tenant's LOCAL type can
        # never share one. `fields` is the JSON list of field definitions.
        """CREATE TABLE event_types (
            id VARCHAR(64) PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL,
            name VARCHAR(255) NOT NULL,
            parent_id VARCHAR(64) NOT NULL,
            scope VARCHAR(8) NOT NULL,
            fields TEXT NOT NULL,
            ttl_days INTEGER NOT NULL,
            etag BIGINT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL)""",
        "CREATE INDEX event_types_parent ON event_types (parent_id)",
        "CREATE INDEX event_types_tenant ON event_types (tenant_id, id)",
        "CREATE INDEX event_types_scope ON event_types (scope, id)",
        # The retention sweeper deletes a type's events stored before a cutoff, and deleting a
        # type asks whether any event of any tenant still uses it.
        "CREATE INDEX events_type_create_time ON events (type_id, create_time)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v3_list_indexes(db: peewee.Database) -> None:
    statements = [
        # The newest event of each correlation (tenant, correlation id, entity id, type id),
        # kept by the writer in the inserting transaction: lists without history read a flag
        # instead of comparing every event with its group.
        "ALTER TABLE events ADD COLUMN latest BOOLEAN NOT NULL DEFAULT TRUE",
        # The writer's upkeep: a correlation's rows still flagged latest (the previous newest
        # and the rows just inserted), and after a delete its newest remaining row, are each
        # one index range however long the correlation grows.
        "CREATE INDEX events_correlation ON events "
        "(tenant_id, correlation_id, entity_id, type_id, latest, ts, id)",
        """UPDATE events SET latest = FALSE WHERE correlation_id <> '' AND EXISTS (
            SELECT 1 FROM events newer WHERE newer.tenant_id = events.tenant_id
            AND newer.correlation_id = events.correlation_id
            AND newer.entity_id = events.entity_id AND newer.type_id = events.type_id
            AND (newer.ts > events.ts OR (newer.ts = events.ts AND newer.id > events.id)))""",
        # The list shapes: by time, by entity, by type, by severity, each within a tenant.
        # (ts, id) is the keyset a cursor resumes from, so deep pages are index range scans;
        # `latest` last lets a list without history skip older versions (and count) inside
        # the index, without reading the table.
        "DROP INDEX events_tenant_ts",
        "DROP INDEX events_tenant_entity_ts",
        "DROP INDEX events_tenant_type_ts",
        "CREATE INDEX events_tenant_ts ON events (tenant_id, ts, id, latest)",
        "CREATE INDEX events_tenant_entity_ts ON events (tenant_id, entity_id, ts, id, latest)",
        "CREATE INDEX events_tenant_type_ts ON events (tenant_id, type_id, ts, id, latest)",
        "CREATE INDEX events_tenant_severity_ts ON events (tenant_id, severity, ts, id, latest)",
    ]
    for statement in statements:
        db.execute_sql(statement)
    if is_postgres(db):
        db.execute_sql("ANALYZE events")


def _v4_device_registry(db: peewee.Database) -> None:
    statements = [
        """CREATE TABLE devices (
            tenant_id VARCHAR(64) NOT NULL REFERENCES tenants (id),
            id VARCHAR(128) NOT NULL,
            domain VARCHAR(1024) NOT NULL,
            entity_type VARCHAR(64) NOT NULL,
            enabled BOOLEAN NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, id))""",
        """CREATE TABLE tenant_apps (
            tenant_id VARCHAR(64) NOT NULL REFERENCES tenants (id),
            id VARCHAR(64) NOT NULL,
            name VARCHAR(255) NOT NULL,
            licence_active BOOLEAN NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, id))""",
        # The device path's duplicate rule (docs/device-api.md#responses), enforced by the database
        # so that two identical reports racing on any number of replicas store one event: the hash
        # covers the report's other fields (description, app id, severity, data). Other events leave
        # it NULL and stay out of the (partial) index.
        "ALTER TABLE events ADD COLUMN report_hash CHAR(64)",
        """CREATE UNIQUE INDEX events_device_report ON events
            (tenant_id, entity_id, type_id, ts, report_hash) WHERE report_hash IS NOT NULL""",
        # Reports answered 202: saved here durably, turned into events by a background task
        # (also after a restart). `event` is the event as it will be stored, as JSON.
        """CREATE TABLE pending_device_events (
            id VARCHAR(36) PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL,
            entity_id VARCHAR(128) NOT NULL,
            type_id VARCHAR(64) NOT NULL,
            ts BIGINT NOT NULL,
            report_hash CHAR(64) NOT NULL,
            accept_time BIGINT NOT NULL,
            event TEXT NOT NULL)""",
        """CREATE UNIQUE INDEX pending_device_events_report ON pending_device_events
            (tenant_id, entity_id, type_id, ts, report_hash)""",
        "CREATE INDEX pending_device_events_accept ON pending_device_events (accept_time)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v5_entity_shares(db: peewee.Database) -> None:
    db.execute_sql(
        """CREATE TABLE entity_shares (
            owner_tenant_id VARCHAR(64) NOT NULL,
            entity_id VARCHAR(128) NOT NULL,
            receiver_tenant_id VARCHAR(64) NOT NULL,
            create_time BIGINT NOT NULL,
            PRIMARY KEY (owner_tenant_id, entity_id, receiver_tenant_id))"""
    )
    # Shared reads ask "which entities of which owners may this receiver see".
    db.execute_sql(
        "CREATE INDEX entity_shares_receiver ON entity_shares "
        "(receiver_tenant_id, owner_tenant_id, entity_id)"
    )


def _v7_live_feed(db: peewee.Database) -> None:
    statements = [
        # The commit-ordered feed position of a created event, assigned inside the writing
        # transaction (see feed_state). Events stored before this migration have none and are
        # not in the feed.
        "ALTER TABLE events ADD COLUMN seq BIGINT",
        # A client's key for one event of a streamed ingest: a resend stores nothing twice.
        "ALTER TABLE events ADD COLUMN idempotency_key VARCHAR(128)",
        "CREATE UNIQUE INDEX events_seq ON events (seq)",
        # Catch-up of one tenant's subscriber reads its events by feed position.
        "CREATE INDEX events_tenant_seq ON events (tenant_id, seq)",
        # NULLs are distinct in a unique index on both backends: keyless events never clash.
        "CREATE UNIQUE INDEX events_tenant_idempotency ON events (tenant_id, idempotency_key)",
        # The last feed position handed out. Every write transaction that creates events
        # updates this one row; on PostgreSQL its row lock, held until commit, orders the
        # transactions of every replica, so feed order is commit order and has no holes that
        # a later commit could fill. A counter rather than MAX(seq): deleting the newest
        # events must never make a position be handed out twice.
        "CREATE TABLE feed_state (id INTEGER PRIMARY KEY, last_seq BIGINT NOT NULL)",
        "INSERT INTO feed_state VALUES (1, 0)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v8_jobs(db: peewee.Database) -> None:
    statements = [
        # A bulk job, its submitter's scope (the job runs with it) and its lease: the process
        # that holds an unexpired lease runs the job; a crashed holder's lease runs out.
        """CREATE TABLE jobs (
            id VARCHAR(36) PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL,
            kind VARCHAR(16) NOT NULL,
            state VARCHAR(24) NOT NULL,
            owner_key_id VARCHAR(32) NOT NULL,
            owner_name VARCHAR(128) NOT NULL,
            owner_role SMALLINT NOT NULL,
            owner_domain VARCHAR(1024) NOT NULL,
            request TEXT NOT NULL,
            total BIGINT NOT NULL,
            done BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            lease_owner VARCHAR(64),
            lease_until BIGINT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            expire_time BIGINT)""",
        "CREATE INDEX jobs_runnable ON jobs (state, lease_until, create_time)",
        "CREATE INDEX jobs_expire ON jobs (expire_time)",
        """CREATE TABLE job_results (
            job_id VARCHAR(36) NOT NULL,
            item INTEGER NOT NULL,
            result_code SMALLINT NOT NULL,
            event_id VARCHAR(36),
            error_message TEXT,
            PRIMARY KEY (job_id, item))""",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v9_standard_type_id(db: peewee.Database) -> None:
    # The v3 API's id of the standard type (68 characters, docs/rest-v3.md#standard-type) replaces
    # `StandardEvent` in stored events and as a parent; type ids may be 128 characters long.
    # Widening a VARCHAR is a catalogue change on PostgreSQL (no table rewrite); SQLite does not
    # enforce lengths.
    if is_postgres(db):
        for table, column in (("events", "type_id"), ("event_types", "id")):
            db.execute_sql(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(128)")
        db.execute_sql("ALTER TABLE event_types ALTER COLUMN parent_id TYPE VARCHAR(128)")
    p = db.param
    standard = "com.siemens.mindsphere.eventmgmt.event.type.MindSphereStandardEvent"
    for table, column in (("events", "type_id"), ("event_types", "parent_id")):
        db.execute_sql(
            f"UPDATE {table} SET {column} = {p} WHERE {column} = {p}", (standard, "StandardEvent")
        )


def _v10_access(db: peewee.Database) -> None:
    statements = [
        # A key may hold fewer privileges than its role grants: their names, comma-separated
        # (NULL: the role's).
        "ALTER TABLE api_keys ADD COLUMN privileges VARCHAR(512)",
        # Bumped in every transaction that revokes or changes a credential (a key, a user, a
        # token). Each process compares it with what its credential cache was built from
        # (SQLite: per call; PostgreSQL: a NOTIFY on eventmgmt_auth tells every replica).
        "CREATE TABLE auth_state (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
        "INSERT INTO auth_state VALUES (1, 0)",
        # People who sign in. Usernames are unique over all tenants: a login names no tenant.
        # Tokens issued before `tokens_after` (microseconds) are void: a password change or a
        # revocation ends every session at once.
        """CREATE TABLE users (
            id VARCHAR(32) PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL REFERENCES tenants (id),
            username VARCHAR(128) NOT NULL UNIQUE,
            password_hash VARCHAR(255) NOT NULL,
            role SMALLINT NOT NULL,
            privileges VARCHAR(512),
            domain VARCHAR(1024) NOT NULL,
            tokens_after BIGINT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            revoke_time BIGINT)""",
        "CREATE INDEX users_tenant ON users (tenant_id, username)",
        # Tokens ended by logout before they expire; purged once expired.
        """CREATE TABLE revoked_tokens (
            id VARCHAR(64) PRIMARY KEY,
            user_id VARCHAR(32) NOT NULL,
            expire_time BIGINT NOT NULL)""",
        "CREATE INDEX revoked_tokens_expire ON revoked_tokens (expire_time)",
        # Failed logins per username and per client address, shared by every replica.
        """CREATE TABLE login_failures (
            subject VARCHAR(300) PRIMARY KEY,
            failures INTEGER NOT NULL,
            last_time BIGINT NOT NULL,
            locked_until BIGINT NOT NULL)""",
        # Rate limit windows: what a tenant or key used of a limit in one window, shared by
        # every replica (each reserves a share of the window at a time).
        """CREATE TABLE rate_counters (
            scope VARCHAR(255) NOT NULL,
            window_start BIGINT NOT NULL,
            used BIGINT NOT NULL,
            PRIMARY KEY (scope, window_start))""",
        "CREATE INDEX rate_counters_window ON rate_counters (window_start)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v11_share_domains(db: peewee.Database) -> None:
    statements = [
        # A share covers the entity's events inside the sharer's domain subtree only, so that
        # a key limited to /root/sub1 cannot hand out events of /root/sub2. The subtree is in
        # the key: keys of two subtrees may share one entity with one tenant independently.
        # Shares made before were made with whole-tenant reach: "/".
        """CREATE TABLE entity_shares_by_domain (
            owner_tenant_id VARCHAR(64) NOT NULL,
            entity_id VARCHAR(128) NOT NULL,
            receiver_tenant_id VARCHAR(64) NOT NULL,
            domain VARCHAR(1024) NOT NULL,
            create_time BIGINT NOT NULL,
            PRIMARY KEY (owner_tenant_id, entity_id, receiver_tenant_id, domain))""",
        """INSERT INTO entity_shares_by_domain
            SELECT owner_tenant_id, entity_id, receiver_tenant_id, '/', create_time
            FROM entity_shares""",
        "DROP TABLE entity_shares",
        "ALTER TABLE entity_shares_by_domain RENAME TO entity_shares",
        "CREATE INDEX entity_shares_receiver ON entity_shares "
        "(receiver_tenant_id, owner_tenant_id, entity_id)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v30_partitioned_events(db: peewee.Database) -> None:
    # Idempotency keys move to a side table: on PostgreSQL a unique index of the partitioned
    # events table must hold the partition key, and a key must be unique whatever the
    # timestamps of its events. `ts` lets a dropped partition's keys go by range.
    statements = [
        """CREATE TABLE event_idempotency_keys (
            tenant_id VARCHAR(64) NOT NULL,
            idempotency_key VARCHAR(128) NOT NULL,
            event_id VARCHAR(36) NOT NULL,
            ts BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, idempotency_key))""",
        "CREATE INDEX event_idempotency_keys_ts ON event_idempotency_keys (ts)",
        """INSERT INTO event_idempotency_keys
            SELECT tenant_id, idempotency_key, id, ts FROM events
            WHERE idempotency_key IS NOT NULL""",
        "DROP INDEX events_tenant_idempotency",
    ]
    for statement in statements:
        db.execute_sql(statement)
    if is_postgres(db):
        _partition_events(db)


def _partition_events(db: peewee.Database) -> None:
    """Copies events into a table partitioned by month of `ts` (see persistence/partitions.py)
    with the same columns and indexes; unique indexes without `ts` change as that module says."""
    from persistence import partitions

    cursor = db.cursor()
    cursor.execute(
        "SELECT i.indexname, i.indexdef, x.indisunique, x.indisprimary FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname AND c.relkind = 'i' "
        "JOIN pg_index x ON x.indexrelid = c.oid "
        "WHERE i.tablename = 'events' AND i.schemaname = current_schema()"
    )
    definitions = []
    for name, definition, unique, primary in cursor.fetchall():
        if primary:
            continue
        if unique and name == "events_seq":  # one feed counter hands out every position
            definition = definition.replace("CREATE UNIQUE INDEX", "CREATE INDEX", 1)
        elif unique and " ts" not in definition.split(" USING ", 1)[1]:
            raise RuntimeError(f"unique index {name} lacks the partition key ts: {definition}")
        definitions.append(definition)
    cursor.execute("SELECT min(ts), max(ts) FROM events")
    low, high = cursor.fetchone()
    now = time.time_ns() // 1000
    months: list[tuple[int, int]] = []
    if low is not None:
        first = max(
            partitions.month_of(low),
            partitions.shift(partitions.month_of(now), -partitions.PARTITIONS_BEHIND),
        )
        last = min(
            partitions.month_of(high),
            partitions.shift(partitions.month_of(now), partitions.PARTITIONS_AHEAD),
        )
        months = partitions.months_between(first, last)
    statements = [
        "ALTER TABLE events RENAME TO events_unpartitioned",
        "CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (ts)",
        f"CREATE TABLE {partitions.DEFAULT_PARTITION} PARTITION OF events DEFAULT",
    ]
    for statement in statements:
        cursor.execute(statement)
    partitions.ensure_partitions(cursor, now, months)
    cursor.execute("INSERT INTO events SELECT * FROM events_unpartitioned")
    cursor.execute("DROP TABLE events_unpartitioned")  # and its indexes, whose names return
    cursor.execute("ALTER TABLE events ADD PRIMARY KEY (id, ts)")
    for definition in definitions:
        cursor.execute(definition)
    cursor.execute("ANALYZE events")


def _v31_rollups(db: peewee.Database) -> None:
    from persistence.upkeep import day_sql

    # Events per tenant, domain, type and UTC day of their timestamp (persistence/upkeep.py),
    # kept in every transaction that inserts or deletes events.
    day = day_sql("ts", is_postgres(db))
    statements = [
        """CREATE TABLE event_rollups (
            tenant_id VARCHAR(64) NOT NULL,
            domain VARCHAR(1024) NOT NULL,
            type_id VARCHAR(128) NOT NULL,
            day_us BIGINT NOT NULL,
            event_count BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, domain, type_id, day_us))""",
        # Retention forgets a dropped partition's days by range.
        "CREATE INDEX event_rollups_day ON event_rollups (day_us)",
        f"""INSERT INTO event_rollups SELECT tenant_id, domain, type_id, {day}, COUNT(*)
            FROM events GROUP BY tenant_id, domain, type_id, {day}""",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v32_alarm_status(db: peewee.Database) -> None:
    statements = [
        # The alarm lifecycle (service/domain/alarm_status.py): ACTIVE, ACKNOWLEDGED or
        # CLEARED for events classified ALARM, '' for the others, and who cleared and when.
        # Adding a column with a constant default rewrites no rows on either backend.
        "ALTER TABLE events ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN cleared_at BIGINT",
        "ALTER TABLE events ADD COLUMN cleared_by VARCHAR(128) NOT NULL DEFAULT ''",
        # Alarms stored before have the status their acknowledgement gives them.
        """UPDATE events SET status = CASE WHEN acknowledged THEN 'ACKNOWLEDGED' ELSE 'ACTIVE'
            END WHERE classification = 'ALARM'""",
        # The consoles' question, "which alarms are active", and bulk acknowledge and clear
        # jobs read one tenant's events of one status by time.
        "CREATE INDEX events_tenant_status_ts ON events (tenant_id, status, ts, id, latest)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v33_event_transitions(db: peewee.Database) -> None:
    statements = [
        # Each acknowledgement or clearing of an alarm, written with the change itself and
        # numbered from the live feed's counter (feed_state), so that subscribers receive it
        # in commit order beside creations. `event_ts` finds the event's partition.
        """CREATE TABLE event_transitions (
            seq BIGINT PRIMARY KEY,
            tenant_id VARCHAR(64) NOT NULL,
            event_id VARCHAR(36) NOT NULL,
            event_ts BIGINT NOT NULL,
            kind VARCHAR(16) NOT NULL,
            from_status VARCHAR(16) NOT NULL,
            to_status VARCHAR(16) NOT NULL,
            actor VARCHAR(128) NOT NULL,
            change_time BIGINT NOT NULL)""",
        # A tenant's subscriber catches up by feed position; an event's history by its id.
        "CREATE INDEX event_transitions_tenant_seq ON event_transitions (tenant_id, seq)",
        "CREATE INDEX event_transitions_event ON event_transitions (event_id, seq)",
    ]
    for statement in statements:
        db.execute_sql(statement)


def _v34_job_kinds(db: peewee.Database) -> None:
    # Job kinds such as `acknowledgeEvents` are longer than 16 characters. Widening a VARCHAR
    # is a catalogue change on PostgreSQL; SQLite does not enforce lengths.
    if is_postgres(db):
        db.execute_sql("ALTER TABLE jobs ALTER COLUMN kind TYPE VARCHAR(32)")


def _v35_alarm_occurrences(db: peewee.Database) -> None:
    from service.domain.alarms import dedup_key
    from service.domain.events import Event

    statements = [
        # Alarms count their occurrences (service/domain/alarms.py); other events leave these
        # NULL. Alarms stored before count one occurrence, at their timestamp.
        "ALTER TABLE events ADD COLUMN occurrence_count BIGINT",
        "ALTER TABLE events ADD COLUMN first_occurrence BIGINT",
        "ALTER TABLE events ADD COLUMN last_occurrence BIGINT",
        "UPDATE events SET occurrence_count = 1, first_occurrence = ts, last_occurrence = ts "
        "WHERE classification = 'ALARM'",
        # The open alarm of each de-duplication key (a hash of domain, entity type and id,
        # type id and code) within a tenant. Creating an alarm inserts its key or, when the
        # key is there, counts the occurrence into that alarm, in the writing transaction: the
        # primary key makes concurrent identical creates on every replica end as one alarm.
        # `ts` is the alarm's (the partition key of events on PostgreSQL).
        """CREATE TABLE open_alarms (
            tenant_id VARCHAR(64) NOT NULL,
            alarm_key CHAR(64) NOT NULL,
            event_id VARCHAR(36) NOT NULL,
            ts BIGINT NOT NULL,
            PRIMARY KEY (tenant_id, alarm_key))""",
        # Clearing or deleting an alarm forgets its key by the alarm's id.
        "CREATE INDEX open_alarms_event ON open_alarms (event_id)",
    ]
    for statement in statements:
        db.execute_sql(statement)
    # Alarms stored before are open: the newest of each key absorbs the next occurrences.
    newest: dict[tuple[str, str], tuple[str, int]] = {}
    rows = db.execute_sql(
        "SELECT tenant_id, domain, entity_type, entity_id, type_id, code, id, ts FROM events "
        "WHERE classification = 'ALARM' ORDER BY ts, id"
    )
    for tenant, domain, entity_type, entity_id, type_id, code, event_id, ts in rows:
        alarm = Event(
            id=event_id,
            tenant_id=tenant,
            domain=domain,
            entity_type=entity_type,
            entity_id=entity_id,
            type_id=type_id,
            code=code,
        )
        newest[(tenant, dedup_key(alarm))] = (event_id, ts)
    p = db.param
    db.cursor().executemany(
        f"INSERT INTO open_alarms VALUES ({p}, {p}, {p}, {p})",
        [(tenant, key, event_id, ts) for (tenant, key), (event_id, ts) in newest.items()],
    )


def _v36_type_alarm_dedup(db: peewee.Database) -> None:
    # An event type may turn alarm de-duplication off for its alarms (service/domain/alarms.py).
    db.execute_sql(
        "ALTER TABLE event_types ADD COLUMN deduplicate_alarms BOOLEAN NOT NULL DEFAULT TRUE"
    )


def _v37_alarm_storms(db: peewee.Database) -> None:
    # The storms on now (service/domain/storms.py): one row per scope (a tenant, or an entity
    # and type of one) while its create rate is exceeded, with what the storm counted and
    # refused; deleted, with an end event, once a whole window stays within the rate.
    db.execute_sql(
        """CREATE TABLE alarm_storms (
            scope VARCHAR(255) PRIMARY KEY,
            per VARCHAR(8) NOT NULL,
            tenant_id VARCHAR(64) NOT NULL,
            domain VARCHAR(1024) NOT NULL,
            entity_type VARCHAR(64) NOT NULL,
            entity_id VARCHAR(128) NOT NULL,
            type_id VARCHAR(128) NOT NULL,
            limit_count BIGINT NOT NULL,
            window_s INTEGER NOT NULL,
            started_at BIGINT NOT NULL,
            last_window BIGINT NOT NULL,
            folded BIGINT NOT NULL,
            refused BIGINT NOT NULL)"""
    )


def _v38_correlated_only_index(db: peewee.Database) -> None:
    # SQLite: the correlation index holds correlated events only. Every other event has
    # correlation_id '' and is its own newest, so the writer never looks it up there, and
    # entries keyed by entity first are written all over the index: with them a commit of
    # 1,000 events dirtied a page per entity and ingest into SQLite ran at half the rate. The
    # queries that use the index say `correlation_id <> ''` (persistence/queries.py), as
    # SQLite uses a partial index only for queries whose terms include its condition.
    # PostgreSQL keeps its index whole.
    if is_postgres(db):
        return
    db.execute_sql("DROP INDEX events_correlation")
    db.execute_sql(
        "CREATE INDEX events_correlation ON events "
        "(tenant_id, correlation_id, entity_id, type_id, latest, ts, id) "
        "WHERE correlation_id <> ''"
    )


def _v39_counted(db: peewee.Database) -> None:
    # Each transition records the alarm's count and last occurrence as it left them, so that
    # one read back from the store rebuilds the alarm as it was then (an occurrence counted
    # into an open alarm is a transition too: COUNTED). NULL in transitions stored before.
    for statement in (
        "ALTER TABLE event_transitions ADD COLUMN alarm_count BIGINT",
        "ALTER TABLE event_transitions ADD COLUMN alarm_last_occurrence BIGINT",
    ):
        db.execute_sql(statement)


MIGRATIONS: list[tuple[int, str, Callable[[peewee.Database], None]]] = [
    (1, "tenants, api keys and events with their list indexes", _v1_initial),
    (2, "event types; events by type and store time for retention", _v2_event_types),
    (3, "the latest flag of correlated events, and indexes for every list shape", _v3_list_indexes),
    (4, "devices, tenant apps, device report duplicates and pending reports", _v4_device_registry),
    (5, "entities shared with other tenants", _v5_entity_shares),
    (7, "live feed position and ingest idempotency keys on events", _v7_live_feed),
    (8, "bulk jobs and their per-event results", _v8_jobs),
    (9, "the v3 standard type id in stored events; type ids up to 128", _v9_standard_type_id),
    (10, "privileges, users, revocation, login throttling, rate limits", _v10_access),
    (11, "entity shares bounded by the sharer's domain subtree", _v11_share_domains),
    (
        30,
        "idempotency keys in a side table; PostgreSQL events partitioned by month",
        _v30_partitioned_events,
    ),
    (31, "daily event counts per tenant, domain and type (rollups)", _v31_rollups),
    (32, "alarm status, cleared time and person, existing alarms backfilled", _v32_alarm_status),
    (33, "alarm transitions numbered in the live feed", _v33_event_transitions),
    (34, "job kinds up to 32 characters (bulk acknowledge and clear)", _v34_job_kinds),
    (35, "alarm occurrence counts and times; the open alarm of each key", _v35_alarm_occurrences),
    (36, "event types may turn alarm de-duplication off", _v36_type_alarm_dedup),
    (37, "alarm storms on now, shared by every replica", _v37_alarm_storms),
    (38, "SQLite: the correlation index holds correlated events only", _v38_correlated_only_index),
    (39, "alarm transitions record the count they left; counted occurrences", _v39_counted),
]


def migrate(db: peewee.Database) -> list[int]:
    """Applies the migrations the database lacks; returns their versions."""
    applied: list[int] = []
    with db.connection_context():
        if is_postgres(db):
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            db.execute_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, description VARCHAR(255) NOT NULL, "
                "applied_time BIGINT NOT NULL)"
            )
            done = {row[0] for row in db.execute_sql("SELECT version FROM schema_migrations")}
            for version, description, apply in MIGRATIONS:
                if version in done:
                    continue
                with db.atomic():
                    apply(db)
                    p = db.param
                    db.execute_sql(
                        f"INSERT INTO schema_migrations VALUES ({p}, {p}, {p})",
                        (version, description, time.time_ns() // 1000),
                    )
                log.info("applied schema migration %s: %s", version, description)
                applied.append(version)
        finally:
            if is_postgres(db):
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied
