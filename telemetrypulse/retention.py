"""Retention of history (SPEC §11): what is old enough to go, and the job that removes it — run by the stream worker
at start and then hourly (agents/retention.py), against PostgreSQL only.

Per setting (0, the default, keeps forever):
- RAW_RETENTION_DAYS=N: raw readings go a whole UTC day at a time: the daily partition of a day that ended before
  midnight of (now − N days) is detached (`DETACH PARTITION … CONCURRENTLY`: neither the sink nor a reader waits
  for it) and dropped. Never a DELETE on the raw table. Between N and N+1 days of raw readings are kept.
- WINDOW_5M_RETENTION_DAYS=N: 5-minute windows that ended at or before now − N days are deleted.
- WINDOW_15M_RETENTION_DAYS=N: 15-minute windows go a whole UTC day at a time, like raw days, so that an hour or a
  day is never left with part of its 15-minute windows still changing.
- Hourly and daily windows are kept forever: they hold what the deleted 15-minute windows added up to.
Window rows are deleted in small batches (one short statement each), by the (sensor_type, window_start) index.

Data older than the retention that arrives later (a replay of old events, a late device, a sink catching up) is
dropped, not stored: the job first moves the boundaries in `telemetry_retention` forward — never back — under an
exclusive advisory lock that every sink transaction holds shared, so it waits for the transactions in flight and
every later one refuses rows behind the new boundaries (sink/writer.py); only then does it drop and delete. So no
partition is dropped while a sink (a replay) may still write into it, no deleted window is written back, and the
hourly and daily windows of removed days are final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import asyncpg

from telemetrypulse import db, metrics
from telemetrypulse.changes import SENSORS

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0  # SPEC §11: hourly
RETRY_S = 60.0  # after a failed run (PostgreSQL down, a lock not granted in time)
DELETE_BATCH = 10_000  # window rows per DELETE statement
# How long the job waits for the sink transactions in flight before it moves the boundaries; later sink
# transactions queue behind the waiting job, so this bounds how long a sink can be held up (once an hour).
LOCK_TIMEOUT_S = 5.0
# DETACH … CONCURRENTLY waits for every transaction that may still see the partition (a long CSV export); cut
# short, it leaves the detach pending, and the next run finalizes it.
DETACH_TIMEOUT_S = 300.0
STATEMENT_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep (0 = forever)."""

    raw_days: int = 0
    window_5m_days: int = 0
    window_15m_days: int = 0

    @classmethod
    def from_settings(cls, settings) -> RetentionPolicy:
        return cls(
            raw_days=settings.raw_retention_days,
            window_5m_days=settings.window_5m_retention_days,
            window_15m_days=settings.window_15m_retention_days,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.raw_days or self.window_5m_days or self.window_15m_days)

    def describe(self) -> str:
        def kept(days: int) -> str:
            return f"{days} d" if days else "forever"

        return (
            f"raw readings {kept(self.raw_days)}, 5-minute windows {kept(self.window_5m_days)}, 15-minute windows "
            f"{kept(self.window_15m_days)}, hourly and daily windows forever"
        )


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


@dataclass(frozen=True, slots=True)
class Boundaries:
    """What is gone: raw readings before `raw_before`, windows that ended at or before `window_5m_before` /
    `window_15m_before`. None: nothing (`-infinity` in PostgreSQL)."""

    raw_before: datetime | None = None
    window_5m_before: datetime | None = None
    window_15m_before: datetime | None = None

    def advanced_to(self, wanted: Boundaries) -> Boundaries:
        """Each boundary moved forward to `wanted`, never back: what was removed stays refused (a longer retention
        set later keeps more from then on, it cannot bring back what is gone)."""
        return Boundaries(
            raw_before=_latest(self.raw_before, wanted.raw_before),
            window_5m_before=_latest(self.window_5m_before, wanted.window_5m_before),
            window_15m_before=_latest(self.window_15m_before, wanted.window_15m_before),
        )


def utc_midnight(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def boundaries_for(policy: RetentionPolicy, now: datetime) -> Boundaries:
    """The boundaries the policy asks for at `now` (the database's clock)."""

    def ago(days: int) -> datetime:
        return now.astimezone(UTC) - timedelta(days=days)

    return Boundaries(
        raw_before=utc_midnight(ago(policy.raw_days)) if policy.raw_days else None,
        window_5m_before=ago(policy.window_5m_days) if policy.window_5m_days else None,
        window_15m_before=utc_midnight(ago(policy.window_15m_days)) if policy.window_15m_days else None,
    )


def partitions_to_drop(partitions: dict[date, str], raw_before: datetime | None) -> list[str]:
    """Names of the daily partitions whose whole day lies before `raw_before`, oldest first."""
    if raw_before is None:
        return []
    return [
        name
        for day, name in sorted(partitions.items())
        if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) <= raw_before
    ]


@dataclass(slots=True)
class RetentionReport:
    boundaries: Boundaries
    moved: bool = False
    partitions_dropped: list[str] = field(default_factory=list)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    skipped: bool = False  # another worker's job was running


# (table, boundary column) of the windows retention deletes; hourly and daily windows are never deleted.
WINDOW_TABLES = (
    ("telemetry_device_agg_5m", "window_5m_before"),
    ("telemetry_device_agg_15m", "window_15m_before"),
)

READ_BOUNDARIES = """
SELECT now() AS now, NULLIF(raw_before, '-infinity') AS raw_before,
       NULLIF(window_5m_before, '-infinity') AS window_5m_before,
       NULLIF(window_15m_before, '-infinity') AS window_15m_before
FROM telemetry_retention
"""
# GREATEST: boundaries only move forward, whoever writes them.
WRITE_BOUNDARIES = """
INSERT INTO telemetry_retention AS t (singleton, raw_before, window_5m_before, window_15m_before)
VALUES (true, COALESCE($1::timestamptz, '-infinity'), COALESCE($2::timestamptz, '-infinity'),
        COALESCE($3::timestamptz, '-infinity'))
ON CONFLICT (singleton) DO UPDATE SET
    raw_before = GREATEST(t.raw_before, excluded.raw_before),
    window_5m_before = GREATEST(t.window_5m_before, excluded.window_5m_before),
    window_15m_before = GREATEST(t.window_15m_before, excluded.window_15m_before),
    updated_at = now()
"""
# The index on (sensor_type, window_start) finds the rows; `window_end <= $2` is the rule itself.
DELETE_WINDOWS = """
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE sensor_type = $1 AND window_start < $2 AND window_end <= $2 LIMIT $3))
"""
PENDING_DETACHES = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'telemetry_events'::regclass AND i.inhdetachpending
"""


class RetentionJob:
    """Removes what the policy says is old. `run_if_due()` is what the worker calls (at start, then from a timer):
    a run every `interval_s`, one `retry_s` after a failure; it never raises, so a database outage costs a
    warning, not the worker."""

    def __init__(
        self,
        dsn: str,
        policy: RetentionPolicy,
        *,
        interval_s: float = INTERVAL_S,
        retry_s: float = RETRY_S,
        delete_batch: int = DELETE_BATCH,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
    ) -> None:
        self.dsn = dsn
        self.policy = policy
        self.interval_s = interval_s
        self.retry_s = retry_s
        self.delete_batch = delete_batch
        self.lock_timeout_s = lock_timeout_s
        self._due = time.monotonic()  # at once
        self._running = asyncio.Lock()

    async def run_if_due(self) -> RetentionReport | None:
        if not self.policy.enabled or self._running.locked() or time.monotonic() < self._due:
            return None
        async with self._running:
            try:
                report = await self.run()
            except Exception as e:  # anything: retention must never stop the worker
                metrics.RETENTION_RUNS.labels("failed").inc()
                self._due = time.monotonic() + self.retry_s
                log.warning("retention: %s: %s; next try in %.0fs", type(e).__name__, e, self.retry_s)
                return None
            self._due = time.monotonic() + self.interval_s
            return report

    async def run(self) -> RetentionReport:
        """One pass; raises on a database error (the caller retries)."""
        conn = await asyncpg.connect(
            self.dsn,
            timeout=10,
            command_timeout=STATEMENT_TIMEOUT_S,
            server_settings={"application_name": "telemetrypulse-retention", "jit": "off"},
        )
        try:
            # A session lock: released when the connection closes, however the run ends.
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", db.RETENTION_JOB_LOCK_ID):
                metrics.RETENTION_RUNS.labels("skipped").inc()
                log.info("retention: another worker's job is running; skipped")
                return RetentionReport(Boundaries(), skipped=True)
            report = await self._advance(conn)
            report.partitions_dropped = await self._drop_partitions(conn, report.boundaries.raw_before)
            for table, column in WINDOW_TABLES:
                before = getattr(report.boundaries, column)
                if before is not None:
                    report.rows_deleted[table] = await self._delete_windows(conn, table, before)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
            if not conn.is_closed():
                conn.terminate()
        metrics.RETENTION_RUNS.labels("done").inc()
        metrics.RETENTION_PARTITIONS_DROPPED.inc(len(report.partitions_dropped))
        for table, rows in report.rows_deleted.items():
            metrics.RETENTION_ROWS_DELETED.labels(table).inc(rows)
        if report.moved or report.partitions_dropped or any(report.rows_deleted.values()):
            b = report.boundaries
            log.info(
                "retention: raw readings before %s, 5-minute windows to %s, 15-minute windows to %s removed;"
                " dropped %d daily partitions %s; deleted %s",
                b.raw_before,
                b.window_5m_before,
                b.window_15m_before,
                len(report.partitions_dropped),
                report.partitions_dropped,
                ", ".join(f"{n} rows of {t}" for t, n in report.rows_deleted.items()) or "no window rows",
            )
        return report

    async def _advance(self, conn: asyncpg.Connection) -> RetentionReport:
        row = await conn.fetchrow(READ_BOUNDARIES)
        current = (
            Boundaries()
            if row is None
            else Boundaries(row["raw_before"], row["window_5m_before"], row["window_15m_before"])
        )
        now = row["now"] if row is not None else await conn.fetchval("SELECT now()")
        wanted = current.advanced_to(boundaries_for(self.policy, now))
        if wanted == current and row is not None:
            return RetentionReport(current)
        async with conn.transaction():
            # Waits for the sink transactions in flight (they hold the lock shared); the ones after see the new
            # boundaries. Bounded: sinks queue behind a waiting exclusive lock.
            await conn.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", db.HISTORY_LOCK_ID)
            await conn.execute(
                WRITE_BOUNDARIES, wanted.raw_before, wanted.window_5m_before, wanted.window_15m_before
            )
        return RetentionReport(wanted, moved=True)

    async def _drop_partitions(self, conn: asyncpg.Connection, raw_before: datetime | None) -> list[str]:
        doomed = partitions_to_drop(await db.partition_days(conn), raw_before)
        if not doomed:
            return []
        pending = {row["relname"] for row in await conn.fetch(PENDING_DETACHES)}
        dropped = []
        # A detach cut short by an earlier run first: PostgreSQL allows one pending detach per table at a time.
        # Names match telemetry_events_YYYYMMDD (db.partition_days): safe in SQL.
        for name in sorted(doomed, key=lambda n: n not in pending):
            if name in pending:
                await conn.execute(f"ALTER TABLE telemetry_events DETACH PARTITION {name} FINALIZE")
            else:
                await conn.execute(
                    f"ALTER TABLE telemetry_events DETACH PARTITION {name} CONCURRENTLY",
                    timeout=DETACH_TIMEOUT_S,
                )
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
        return dropped

    async def _delete_windows(self, conn: asyncpg.Connection, table: str, before: datetime) -> int:
        sql = DELETE_WINDOWS.format(table=table)
        deleted = 0
        for sensor in SENSORS:
            while True:
                status = await conn.execute(sql, sensor, before, self.delete_batch)
                count = int(status.rsplit(" ", 1)[-1])
                deleted += count
                if count < self.delete_batch:
                    break
        return deleted
