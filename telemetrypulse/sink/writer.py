"""PostgreSQL writing of the sink: one SinkBatch, one transaction, every statement idempotent.

Per transaction: binary COPY of the batch's identifiers and rows into temporary staging tables (per session,
emptied at commit), then one set-based statement per target table, then the consumed positions. Safe to repeat,
in any order, from any number of sink processes:
- raw rows `INSERT … ON CONFLICT DO NOTHING`;
- windows and latest values move only forward (`WHERE excluded.version > t.version`; the version is the source
  offset of the last event folded in);
- alerts move only from open to resolved, and their peak only up;
- positions (`sink_offsets`) only forward (`GREATEST`), written in the same transaction as the rows they cover,
  so rows and positions never disagree after a crash.
Raw rows go in before windows in the same transaction, so a reader never sees a window counting an event whose raw
row is not there. Hourly and daily windows follow the 15-minute upsert inside PostgreSQL (migration 0006's triggers).

Retention (telemetrypulse/retention.py): rows older than the boundaries in `telemetry_retention` are not written —
raw rows before `raw_before`, window rows ending at or before `window_5m_before` / `window_15m_before` — and no
daily partition is created for a day wholly before `raw_before`. Late data older than the retention is dropped here
rather than stored until the next retention run: the retention job can then drop a partition knowing no sink will
write into it again. Every transaction holds the history lock shared (db.HISTORY_LOCK_ID); the job moves the
boundaries under it exclusively, so no transaction writes with boundaries that have moved under it.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import numpy as np

from telemetrypulse.changes import SENSORS
from telemetrypulse.db import HISTORY_LOCK_ID, DailyPartitions
from telemetrypulse.exceptions import SinkError
from telemetrypulse.models import SENSOR_UNITS
from telemetrypulse.sink.batch import SinkBatch
from telemetrypulse.sink.copy import encode_columns, encode_dims

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
# A statement that runs this long is stuck (a network partition, a lock held by someone else): give up and retry
# on a new connection rather than wait forever.
COMMAND_TIMEOUT_S = 120
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Staging tables live in the session; ON COMMIT DELETE ROWS empties them at every commit (and a rolled-back
# transaction leaves nothing either). Column order is the COPY order below.
SETUP_SQL = """
CREATE TEMP TABLE IF NOT EXISTS sink_dims (
    dim int4, device_id text, site_id text, zone_id text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sink_raw (
    dim int4, event_id uuid, sensor int2, late bool, unit_given bool, value float8, ts_us int8, ingest_us int8
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sink_windows (
    dim int4, sensor int2, size_s int4, start_us int8, count int8, sum float8, min float8, max float8,
    sum_sq float8, first_us int8, last_us int8, version int8) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sink_latest (
    dim int4, sensor int2, value float8, ts_us int8, event_id uuid, version int8) ON COMMIT DELETE ROWS;
"""

# (staging column, PostgreSQL type, source field of the packed row)
RAW_COPY = [
    ("dim", "int4", "dim"),
    ("event_id", "uuid", "event_id"),
    ("sensor", "int2", "sensor"),
    ("late", "bool", "late"),
    ("unit_given", "bool", "unit_given"),
    ("value", "float8", "value"),
    ("ts_us", "int8", "ts_us"),
    ("ingest_us", "int8", "ingest_us"),
]
WINDOW_COPY = [
    ("dim", "int4", "dim"),
    ("sensor", "int2", "sensor"),
    ("size_s", "int4", "size_s"),
    ("start_us", "int8", "start_us"),
    ("count", "int8", "count"),
    ("sum", "float8", "sum"),
    ("min", "float8", "min"),
    ("max", "float8", "max"),
    ("sum_sq", "float8", "sum_sq"),
    ("first_us", "int8", "first_us"),
    ("last_us", "int8", "last_us"),
    ("version", "int8", "version"),
]
LATEST_COPY = [
    ("dim", "int4", "dim"),
    ("sensor", "int2", "sensor"),
    ("value", "float8", "value"),
    ("ts_us", "int8", "ts_us"),
    ("event_id", "uuid", "event_id"),
    ("version", "int8", "version"),
]


def _text_array(values) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]::text[]"


SENSOR_NAME = f"({_text_array(SENSORS)})[{{}}.sensor + 1]"
SENSOR_UNIT = f"({_text_array(SENSOR_UNITS[s] for s in SENSORS)})[{{}}.sensor + 1]"
# Integer µs to timestamptz with exact interval arithmetic: no float seconds, so no rounding at window edges.
US = "'epoch'::timestamptz + ({}) * interval '1 microsecond'"
# A retention boundary (migration 0006). A missing row must not read as NULL: every comparison would fail, and
# every row be dropped.
BOUNDARY = "COALESCE((SELECT {} FROM telemetry_retention), '-infinity')"

# Raw rows are new in all but a replay. A plain INSERT costs PostgreSQL about half of `ON CONFLICT DO NOTHING`
# (speculative insertion: a lock, an extra index probe and WAL record per row), so it is tried first under a
# savepoint; the unique key (ts_event, device_id, event_id) refuses any row already stored — a replay, another sink
# during a rebalance, one record twice in a batch — and then the batch's raw rows go in again with ON CONFLICT.
INSERT_RAW_NEW = f"""
INSERT INTO telemetry_events (event_id, device_id, site_id, zone_id, sensor_type, value, unit, ts_event, ts_ingest, late)
SELECT r.event_id, d.device_id, d.site_id, d.zone_id, {SENSOR_NAME.format("r")}, r.value,
       CASE WHEN r.unit_given THEN {SENSOR_UNIT.format("r")} END, {US.format("r.ts_us")}, {US.format("r.ingest_us")},
       r.late
FROM sink_raw r JOIN sink_dims d ON d.dim = r.dim
WHERE {US.format("r.ts_us")} >= {BOUNDARY.format("raw_before")}
"""
INSERT_RAW = INSERT_RAW_NEW + "ON CONFLICT DO NOTHING\n"

UPSERT_WINDOWS = f"""
INSERT INTO {{table}} AS t (window_start, window_end, device_id, site_id, zone_id, sensor_type, count_events,
                          sum_value, avg_value, min_value, max_value, sum_sq_value, first_ts, last_ts, version)
SELECT {US.format("w.start_us")}, {US.format("w.start_us + w.size_s * 1000000::int8")}, d.device_id, d.site_id,
       d.zone_id, {SENSOR_NAME.format("w")}, w.count, w.sum, w.sum / w.count, w.min, w.max, w.sum_sq,
       {US.format("w.first_us")}, {US.format("w.last_us")}, w.version
FROM sink_windows w JOIN sink_dims d ON d.dim = w.dim
WHERE w.size_s = {{size_s}}
  AND {US.format("w.start_us + w.size_s * 1000000::int8")} > {BOUNDARY.format("{boundary}")}
ON CONFLICT (device_id, sensor_type, window_start) DO UPDATE SET
    site_id = excluded.site_id, zone_id = excluded.zone_id, count_events = excluded.count_events,
    sum_value = excluded.sum_value, avg_value = excluded.avg_value, min_value = excluded.min_value,
    max_value = excluded.max_value, sum_sq_value = excluded.sum_sq_value, first_ts = excluded.first_ts,
    last_ts = excluded.last_ts, version = excluded.version, updated_at = now()
WHERE excluded.version > t.version
"""
WINDOW_TABLES = {300: "telemetry_device_agg_5m", 900: "telemetry_device_agg_15m"}
RETENTION_BOUNDARIES = {300: "window_5m_before", 900: "window_15m_before"}
UPSERT_WINDOWS_BY_SIZE = {
    size_s: UPSERT_WINDOWS.format(table=table, size_s=size_s, boundary=RETENTION_BOUNDARIES[size_s])
    for size_s, table in WINDOW_TABLES.items()
}

# First in every transaction: the retention job moves the boundaries only while no sink transaction runs.
LOCK_HISTORY = "SELECT pg_advisory_xact_lock_shared($1)"
# The first day still kept (raw readings), read before a new daily partition is created.
RAW_BOUNDARY_DAY = (
    "SELECT (NULLIF(raw_before, '-infinity') AT TIME ZONE 'UTC')::date FROM telemetry_retention"
)

UPSERT_LATEST = f"""
INSERT INTO telemetry_device_latest AS t (device_id, sensor_type, site_id, zone_id, value, ts_event, event_id, version)
SELECT d.device_id, {SENSOR_NAME.format("l")}, d.site_id, d.zone_id, l.value, {US.format("l.ts_us")}, l.event_id,
       l.version
FROM sink_latest l JOIN sink_dims d ON d.dim = l.dim
ON CONFLICT (device_id, sensor_type) DO UPDATE SET
    site_id = excluded.site_id, zone_id = excluded.zone_id, value = excluded.value,
    ts_event = excluded.ts_event, event_id = excluded.event_id, version = excluded.version, updated_at = now()
WHERE excluded.version > t.version
"""

# Open -> resolved only, the peak only up; an open row arriving after its resolution changes nothing. rule_id and
# severity are the opening rule's (an episode keeps them), so they are written once, with the row.
UPSERT_ALERTS = """
INSERT INTO telemetry_alerts AS t (alert_id, status, rule, alert_type, device_id, site_id, zone_id, sensor_type,
                                   threshold, value, peak_value, opened_at, resolved_at, event_id, resolved_event_id,
                                   rule_id, severity)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::float8[], $10::float8[], $11::float8[], $12::timestamptz[],
                     $13::timestamptz[], $14::uuid[], $15::uuid[], $16::text[], $17::text[])
ON CONFLICT (alert_id) DO UPDATE SET
    status = excluded.status,
    peak_value = GREATEST(t.peak_value, excluded.peak_value),
    resolved_at = COALESCE(t.resolved_at, excluded.resolved_at),
    resolved_event_id = COALESCE(t.resolved_event_id, excluded.resolved_event_id)
WHERE t.status = 'open' AND (excluded.status = 'resolved' OR excluded.peak_value > t.peak_value)
"""
ALERT_FIELDS = (
    "alert_id", "status", "rule", "alert_type", "device_id", "site_id", "zone_id", "sensor_type", "threshold",
    "value", "peak_value", "opened_at", "resolved_at", "event_id", "resolved_event_id", "rule_id", "severity",
)  # fmt: skip

# GREATEST: a sink that rewrites older records (a restart from a lower position, a second sink during a
# rebalance) never moves a position back. updated_at is the commit's wall-clock time (the last statement).
UPSERT_POSITIONS = """
INSERT INTO sink_offsets AS t (consumer_group, topic, partition, next_offset, updated_at)
SELECT $1, p.topic, p.partition, p.next_offset, clock_timestamp()
FROM unnest($2::text[], $3::int4[], $4::int8[]) AS p(topic, partition, next_offset)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
    next_offset = GREATEST(t.next_offset, excluded.next_offset), updated_at = excluded.updated_at
"""

SELECT_POSITIONS = """
SELECT partition, next_offset FROM sink_offsets
WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int4[])
"""


def rows_payload(rows: np.ndarray, layout: list[tuple[str, str, str]]) -> bytes:
    return encode_columns([(pg_type, rows[source]) for _, pg_type, source in layout])


class PostgresWriter:
    """One dedicated connection (the staging tables belong to its session); `write()` is one transaction.

    After any error the connection is dropped (its state is unknown) and the next call opens a new one.
    """

    def __init__(self, dsn: str, consumer_group: str) -> None:
        self.dsn = dsn
        self.consumer_group = consumer_group
        self._conn: asyncpg.Connection | None = None
        self._partitions = DailyPartitions()

    async def setup(self) -> None:
        try:
            # JIT would compile the big INSERT … SELECTs anew in every transaction (~100 ms each) for nothing.
            conn = await asyncpg.connect(
                self.dsn,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                server_settings={
                    "jit": "off",
                    "application_name": f"telemetrypulse-sink:{self.consumer_group}",
                },
            )
        except DRIVER_ERRORS as e:
            raise SinkError(f"cannot connect to PostgreSQL: {e}") from e
        try:
            await conn.execute(SETUP_SQL)
        except DRIVER_ERRORS as e:
            conn.terminate()
            raise SinkError(f"cannot create the staging tables: {e}") from e
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        # Partitions may have been dropped meanwhile (retention): re-read them on the next write.
        self._partitions = DailyPartitions()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            await self.setup()
        assert self._conn is not None
        return self._conn

    async def read_positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """The stored next offset of each partition that has one."""
        conn = await self._connection()
        try:
            rows = await conn.fetch(SELECT_POSITIONS, self.consumer_group, topic, partitions)
        except DRIVER_ERRORS as e:
            self._discard()
            raise SinkError(f"reading sink_offsets failed: {e}") from e
        return {row["partition"]: row["next_offset"] for row in rows}

    async def write(self, batch: SinkBatch) -> None:
        """The whole batch and its positions in one transaction, or nothing (SinkError)."""
        conn = await self._connection()
        try:
            if len(batch.raw):
                # Outside the transaction: creating a partition locks the parent table, which must not be held
                # for a whole batch (the API reads it).
                days = batch.raw_days()
                if not self._partitions.knows(days):
                    # No partition for a day retention dropped: its rows are refused anyway (INSERT_RAW). A
                    # boundary moving right after this read costs at most one empty partition, dropped next run.
                    first_kept = await conn.fetchval(RAW_BOUNDARY_DAY)
                    if first_kept is not None:
                        days = {day for day in days if day >= first_kept}
                    await self._partitions.ensure(conn, days)
            async with conn.transaction():
                await conn.execute(LOCK_HISTORY, HISTORY_LOCK_ID)
                await self._write_rows(conn, batch)
        except DRIVER_ERRORS as e:
            self._discard()
            raise SinkError(f"writing {batch.records} change records ({len(batch)} rows) failed: {e}") from e

    async def _write_rows(self, conn: asyncpg.Connection, batch: SinkBatch) -> None:
        if batch.dims and (len(batch.raw) or len(batch.windows) or len(batch.latest)):
            await _copy(conn, "sink_dims", encode_dims(batch.dims))
        if len(batch.raw):
            await _copy(conn, "sink_raw", rows_payload(batch.raw, RAW_COPY))
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute(INSERT_RAW_NEW)
            except asyncpg.UniqueViolationError:
                log.debug("raw rows of this batch are stored already (a replay): inserting with ON CONFLICT")
                await conn.execute(INSERT_RAW)
        if len(batch.windows):
            await _copy(conn, "sink_windows", rows_payload(batch.windows, WINDOW_COPY))
            for size_s in np.unique(batch.windows["size_s"]).tolist():
                await conn.execute(UPSERT_WINDOWS_BY_SIZE[size_s])
        if len(batch.latest):
            await _copy(conn, "sink_latest", rows_payload(batch.latest, LATEST_COPY))
            await conn.execute(UPSERT_LATEST)
        if batch.alerts:
            columns = [[getattr(alert, name) for alert in batch.alerts] for name in ALERT_FIELDS]
            await conn.execute(UPSERT_ALERTS, *columns)
        if batch.positions:
            topics, partitions = zip(*batch.positions, strict=True)
            await conn.execute(
                UPSERT_POSITIONS,
                self.consumer_group,
                list(topics),
                list(partitions),
                list(batch.positions.values()),
            )


async def _copy(conn: asyncpg.Connection, table: str, payload: bytes) -> None:
    # A memoryview, not bytes: asyncpg would take bytes for a file path (os.fspath accepts bytes).
    await conn.copy_to_table(table, source=memoryview(payload), format="binary")
