"""Retention against a real PostgreSQL (telemetrypulse/retention.py with the sink's own writer): whole daily
partitions dropped, never a DELETE on the raw table; old 5- and 15-minute windows deleted while the hourly and
daily windows stay as they were; data older than the retention that arrives later is not written back, and no
partition is created for it; the job waits for sink transactions in flight and never runs twice at once.

The batches are written by `PostgresWriter`, the sink's writer, as the sink process would write them."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from devkit.waiting import wait_for
from telemetrypulse import db
from telemetrypulse.changes import LATEST_ROW, RAW_ROW, WINDOW_ROW
from telemetrypulse.retention import RetentionJob, RetentionPolicy, utc_midnight
from telemetrypulse.sink.batch import SinkBatch
from telemetrypulse.sink.writer import PostgresWriter

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
POLICY = RetentionPolicy(raw_days=2, window_5m_days=1, window_15m_days=3)
DEVICES = ("ret.d0", "ret.d1")


def us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


class Writes:
    """Worker-shaped batches of co2 readings (raw rows and the whole 5m/15m windows they fold into), and the
    offsets that version them."""

    def __init__(self) -> None:
        self.offset = 0
        self.windows: dict[tuple, dict] = {}

    def batch(self, readings: list[tuple[str, datetime, float]]) -> SinkBatch:
        dims = [(device, "ret-site", "ret-zone") for device in (*DEVICES, "ret.late")]
        dim_of = {d[0]: i for i, d in enumerate(dims)}
        raw = np.zeros(len(readings), RAW_ROW)
        touched = {}
        for n, (device, ts, value) in enumerate(readings):
            raw[n] = (dim_of[device], uuid.uuid4().bytes, 0, False, True, value, us(ts), us(ts) + 500)
            for size_s in (300, 900):
                start = us(ts) - us(ts) % (size_s * 1_000_000)
                key = (device, size_s, start)
                w = self.windows.setdefault(
                    key, {"count": 0, "sum": 0.0, "sum_sq": 0.0, "min": value, "max": value, "first": us(ts)}
                )
                w.update(
                    count=w["count"] + 1, sum=w["sum"] + value, sum_sq=w["sum_sq"] + value * value,
                    min=min(w["min"], value), max=max(w["max"], value), last=us(ts), version=self.offset,
                )  # fmt: skip
                touched[key] = (dim_of[device], 0, size_s, start, w["count"], w["sum"], w["min"], w["max"],
                                w["sum_sq"], w["first"], w["last"], w["version"])  # fmt: skip
            self.offset += 1
        return SinkBatch(
            dims=dims,
            raw=raw,
            windows=np.array(list(touched.values()), WINDOW_ROW),
            latest=np.empty(0, LATEST_ROW),
            positions={("retention-test", 0): self.offset},
            records=1,
        )


async def rows(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def untouched(dsn: str) -> bool:
    """No boundary has moved yet."""
    [row] = await rows(
        dsn,
        "SELECT raw_before = '-infinity' AND window_5m_before = '-infinity' AND window_15m_before = '-infinity'"
        " AS untouched FROM telemetry_retention",
    )
    return row["untouched"]


async def partition_days(dsn: str) -> set:
    conn = await asyncpg.connect(dsn)
    try:
        return set(await db.partition_days(conn))
    finally:
        await conn.close()


async def rollups(dsn: str) -> dict[str, list[tuple]]:
    return {
        size: [
            tuple(r)
            for r in await rows(
                dsn,
                f"SELECT device_id, window_start, count_events, sum_value, min_value, max_value, sum_sq_value"
                f" FROM telemetry_device_agg_{size} ORDER BY 1, 2",
            )
        ]
        for size in ("1h", "1d")
    }


async def five_days_of_readings(dsn: str, now: datetime) -> tuple[Writes, list[tuple[str, datetime, float]]]:
    """Every 20 minutes over the last five days, per device, written by the sink's writer in a few batches."""
    readings = [
        (device, now - timedelta(minutes=20 * i, seconds=7 * d), 400.0 + (i * 37 + d * 11) % 500)
        for i in range(5 * 72)
        for d, device in enumerate(DEVICES)
    ]
    readings.sort(key=lambda r: r[1])
    writes, writer = Writes(), PostgresWriter(dsn, "retention-test")
    try:
        for first in range(0, len(readings), 200):
            await writer.write(writes.batch(readings[first : first + 200]))
    finally:
        await writer.close()
    return writes, readings


async def test_whole_days_and_old_windows_go_hours_and_days_stay(migrated_database):
    dsn = migrated_database
    now = datetime.now(UTC)
    writes, readings = await five_days_of_readings(dsn, now)
    days_before = await partition_days(dsn)
    assert days_before == {ts.date() for _, ts, _ in readings}
    before = await rollups(dsn)

    report = await RetentionJob(dsn, POLICY).run()

    b = report.boundaries
    assert report.moved
    # Boundaries by the database's clock, which is this machine's.
    assert b.raw_before == utc_midnight(now - timedelta(days=2))
    assert abs(b.window_5m_before - (now - timedelta(days=1))) < timedelta(seconds=30)
    assert b.window_15m_before == utc_midnight(now - timedelta(days=3))
    kept_days = {
        day for day in days_before if datetime(day.year, day.month, day.day, tzinfo=UTC) >= b.raw_before
    }
    assert await partition_days(dsn) == kept_days
    assert sorted(report.partitions_dropped) == sorted(db.partition_name(d) for d in days_before - kept_days)

    raw = await rows(dsn, "SELECT ts_event FROM telemetry_events")
    assert len(raw) == sum(1 for _, ts, _ in readings if ts >= b.raw_before)
    for size_s, table, boundary in ((300, "5m", b.window_5m_before), (900, "15m", b.window_15m_before)):
        held = {
            (r["device_id"], r["window_start"])
            for r in await rows(dsn, f"SELECT device_id, window_start FROM telemetry_device_agg_{table}")
        }
        want = {
            (device, EPOCH + timedelta(microseconds=start))
            for device, size, start in writes.windows
            if size == size_s and EPOCH + timedelta(microseconds=start + size_s * 1_000_000) > boundary
        }
        assert held == want, table
        assert report.rows_deleted[f"telemetry_device_agg_{table}"] == sum(
            1 for _, size, _ in writes.windows if size == size_s
        ) - len(want)
    assert await rollups(dsn) == before, "hourly and daily windows are kept as they were"
    # Partitions were dropped whole: nothing was ever deleted row by row from the raw table.
    deleted = await rows(
        dsn,
        "SELECT coalesce(sum(n_tup_del), 0) AS n FROM pg_stat_user_tables WHERE relname LIKE 'telemetry_events%'",
    )
    assert deleted[0]["n"] == 0

    again = await RetentionJob(dsn, POLICY).run()
    assert again.partitions_dropped == [] and not any(again.rows_deleted.values())


async def test_data_older_than_the_retention_arriving_later_is_not_stored(migrated_database):
    dsn = migrated_database
    now = datetime.now(UTC)
    writes, _ = await five_days_of_readings(dsn, now)
    # A sink that has been writing all along: its partition cache still lists the days retention drops.
    writer = PostgresWriter(dsn, "retention-test")
    await writer.write(writes.batch([(DEVICES[0], now - timedelta(days=4, hours=1), 555.0)]))
    report = await RetentionJob(dsn, POLICY).run()
    assert report.partitions_dropped
    days_after = await partition_days(dsn)
    windows_after = {t: await rows(dsn, f"SELECT * FROM telemetry_device_agg_{t}") for t in ("5m", "15m")}
    rollups_after = await rollups(dsn)
    old = now - timedelta(days=4, minutes=3)
    try:
        # Old readings again (a replay, a late device) beside a recent one, through that writer and a fresh one.
        for sink in (writer, PostgresWriter(dsn, "retention-test")):
            await sink.write(
                writes.batch([(DEVICES[1], old, 999.0), ("ret.late", old, 998.0), (DEVICES[0], now, 997.0)])
            )
            await sink.close()
    finally:
        await writer.close()

    values = [r["value"] for r in await rows(dsn, "SELECT value FROM telemetry_events WHERE value > 990")]
    assert sorted(values) == [997.0, 997.0], "only the recent reading is stored (once per writer)"
    assert await partition_days(dsn) == days_after, "no partition was created for a day retention dropped"
    for table in ("5m", "15m"):
        held = await rows(
            dsn,
            f"SELECT * FROM telemetry_device_agg_{table} WHERE window_start < $1",
            now - timedelta(days=3, hours=23),
        )
        assert not any(r["device_id"] == "ret.late" for r in held)
        before = {(r["device_id"], r["window_start"]): r["count_events"] for r in windows_after[table]}
        for r in held:
            assert before.get((r["device_id"], r["window_start"])) == r["count_events"]
    after = await rollups(dsn)
    old_hour = old.replace(minute=0, second=0, microsecond=0)
    for size in ("1h", "1d"):
        unchanged = [r for r in after[size] if r[1] <= old_hour]
        assert unchanged == [r for r in rollups_after[size] if r[1] <= old_hour], size
        assert not any(r[0] == "ret.late" for r in after[size])


async def test_the_job_waits_for_sink_transactions_in_flight_and_later_ones_see_its_boundaries(
    migrated_database,
):
    dsn = migrated_database
    now = datetime.now(UTC)
    writes, _ = await five_days_of_readings(dsn, now)
    in_flight = await asyncpg.connect(dsn)
    job = asyncio.create_task(RetentionJob(dsn, POLICY, lock_timeout_s=30).run())
    late_write: asyncio.Task | None = None
    writer = PostgresWriter(dsn, "retention-test")
    try:
        async with in_flight.transaction():
            await in_flight.execute("SELECT pg_advisory_xact_lock_shared($1)", db.HISTORY_LOCK_ID)

            async def job_waiting() -> bool:
                waiting = await rows(
                    dsn,
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND mode = 'ExclusiveLock'"
                    " AND NOT granted",
                    db.HISTORY_LOCK_ID,
                )
                return bool(waiting)

            await wait_for(job_waiting, 30, interval_s=0.1, what="the job waiting on the history lock")
            assert not job.done()
            assert await untouched(dsn)
            # A sink transaction starting now queues behind the job, and writes with its boundaries.
            late_write = asyncio.create_task(
                writer.write(writes.batch([("ret.late", now - timedelta(days=4), 1234.0)]))
            )
            await asyncio.sleep(0.5)
            assert not late_write.done()
        report = await asyncio.wait_for(job, 30)
        await asyncio.wait_for(late_write, 30)
    finally:
        await in_flight.close()
        await writer.close()
        for task in (job, late_write):
            if task is not None and not task.done():
                task.cancel()
    assert report.moved and report.partitions_dropped
    assert not await rows(dsn, "SELECT 1 FROM telemetry_events WHERE device_id = 'ret.late'")
    assert not await rows(dsn, "SELECT 1 FROM telemetry_device_agg_15m WHERE device_id = 'ret.late'")


async def test_a_lock_not_granted_in_time_fails_the_run_which_is_retried(migrated_database):
    dsn = migrated_database
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock_shared($1)", db.HISTORY_LOCK_ID)
            job = RetentionJob(dsn, POLICY, lock_timeout_s=0.3, retry_s=60)
            assert await job.run_if_due() is None  # logged, not raised
            assert job._due > time.monotonic() + 55  # tried again a minute later
    finally:
        await holder.close()
    assert await untouched(dsn), "nothing moved"


async def test_one_job_at_a_time(migrated_database):
    dsn = migrated_database
    other = await asyncpg.connect(dsn)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", db.RETENTION_JOB_LOCK_ID)
        report = await RetentionJob(dsn, POLICY).run()
        assert report.skipped and not report.moved
    finally:
        await other.close()


async def test_a_detach_cut_short_is_finished_by_the_next_run(migrated_database):
    dsn = migrated_database
    now = datetime.now(UTC)
    await five_days_of_readings(dsn, now)
    oldest = min(await partition_days(dsn))
    name = db.partition_name(oldest)
    reader = await asyncpg.connect(dsn)
    detacher = await asyncpg.connect(dsn)
    try:
        # A reader's snapshot that still sees the partition makes DETACH … CONCURRENTLY wait after its first step;
        # cancelled there, it leaves the partition "detach pending".
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await reader.fetchval("SELECT count(*) FROM telemetry_events")
        detach = asyncio.create_task(
            detacher.execute(f"ALTER TABLE telemetry_events DETACH PARTITION {name} CONCURRENTLY")
        )

        async def pending() -> bool:
            return bool(
                await rows(
                    dsn,
                    "SELECT 1 FROM pg_inherits WHERE inhparent = 'telemetry_events'::regclass AND inhdetachpending",
                )
            )

        await wait_for(pending, 30, interval_s=0.1, what="the detach marked pending and waiting")
        await rows(dsn, "SELECT pg_cancel_backend($1)", detacher.get_server_pid())
        with pytest.raises(asyncpg.QueryCanceledError):
            await detach
        await reader.execute("COMMIT")
        assert await pending(), "the detach was left pending"
    finally:
        await reader.close()
        await detacher.close()
    report = await RetentionJob(dsn, POLICY).run()
    assert name in report.partitions_dropped
    assert oldest not in await partition_days(dsn)
    assert not await rows(dsn, "SELECT 1 FROM pg_class WHERE relname = $1", name)


async def test_migration_0006_rolls_up_the_windows_already_stored(database, tmp_path):
    """A deployment upgrading with windows in place gets their hours and days, equal to what the triggers keep."""
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for version, path in db.migration_files():
        if version < "0006":
            shutil.copy(path, earlier / path.name)
    await db.migrate(database, earlier)
    writes = Writes()
    start = datetime(2024, 3, 9, 22, 50, tzinfo=UTC)
    readings = [(DEVICES[i % 2], start + timedelta(minutes=7 * i), 100.0 + i) for i in range(40)]
    batch = writes.batch(readings)
    conn = await asyncpg.connect(database)
    try:
        fifteen = [w for w in batch.windows.tolist() if w[2] == 900]
        await conn.executemany(
            "INSERT INTO telemetry_device_agg_15m (window_start, window_end, device_id, site_id, zone_id, sensor_type,"
            " count_events, sum_value, avg_value, min_value, max_value, sum_sq_value, first_ts, last_ts, version)"
            " VALUES ($1, $1::timestamptz + interval '15 minutes', $2, 's', 'z', 'co2', $3, $4, $4::float8 / $3::int8,"
            " $5, $6, $7, $8, $9, $10)",
            [
                (EPOCH + timedelta(microseconds=start_us), batch.dims[dim][0], count, total, low, high, sq,
                 EPOCH + timedelta(microseconds=first), EPOCH + timedelta(microseconds=last), version)
                for dim, _, _, start_us, count, total, low, high, sq, first, last, version in fifteen
            ],
        )  # fmt: skip
    finally:
        await conn.close()
    assert await db.migrate(database) == [v for v, _ in db.migration_files() if v >= "0006"]
    migrated = await rollups(database)
    # The same windows written again, through the triggers this time, give the same hours and days.
    columns = (
        "window_start, window_end, device_id, site_id, zone_id, sensor_type, count_events, sum_value, avg_value,"
        " min_value, max_value, sum_sq_value, first_ts, last_ts, version"
    )
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f"CREATE TEMP TABLE kept AS SELECT {columns} FROM telemetry_device_agg_15m")
        await conn.execute(
            "TRUNCATE telemetry_device_agg_15m, telemetry_device_agg_1h, telemetry_device_agg_1d"
        )
        await conn.execute(f"INSERT INTO telemetry_device_agg_15m ({columns}) SELECT {columns} FROM kept")
    finally:
        await conn.close()
    assert await rollups(database) == migrated
    by_hour = defaultdict(int)
    for device, ts, _ in readings:
        by_hour[(device, ts.replace(minute=0, second=0, microsecond=0))] += 1
    assert {(d, h): n for d, h, n, *_ in migrated["1h"]} == by_hour
