"""History through the real pipeline (worker, sink, PostgreSQL): standard deviations and the hourly and daily
windows against an independent computation from SPEC §3–§4 (tests/pipeline_model.py), after late events, SIGKILLs
of the worker and of the sink, a second sink joining and leaving, and a replay of the whole dataset; and
retention enforced by the worker at start, with old data arriving afterwards refused."""

from __future__ import annotations

import asyncio
import math
import statistics
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from devkit.waiting import wait_for
from telemetrypulse import db
from telemetrypulse.retention import utc_midnight
from tests.pipeline_model import build_dataset, expected_outcome, parse_us

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SIZES = {"5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
APPROX = {"rel": 1e-9, "abs": 1e-9}


def accepted_values(dataset, expected) -> list[tuple[str, str, int, float]]:
    """(device, sensor, ts_us, value) of every accepted event: stored, and not too late (SPEC §4)."""
    return [
        (device, e["sensor_type"], parse_us(e["ts_event"]), float(e["value"]))
        for (device, event_id), e in expected.raw.items()
        if (device, event_id) not in expected.late_keys
    ]


def windows_of(accepted, seconds: int, key_of) -> dict[tuple, dict]:
    grouped = defaultdict(list)
    for device, sensor, ts, value in accepted:
        start = EPOCH + timedelta(microseconds=ts // (seconds * 1_000_000) * seconds * 1_000_000)
        grouped[(*key_of(device), sensor, start)].append(value)
    return {
        key: {
            "count_events": len(values),
            "avg_value": statistics.fmean(values),
            "min_value": min(values),
            "max_value": max(values),
            "stddev_value": statistics.pstdev(values),
        }
        for key, values in grouped.items()
    }


def assert_windows(rows: list[asyncpg.Record], want: dict[tuple, dict], key_of, what: str) -> None:
    held = {key_of(r): r for r in rows}
    assert set(held) == set(want), what
    for key, w in want.items():
        row = held[key]
        assert row["count_events"] == w["count_events"], (what, key)
        assert (row["min_value"], row["max_value"]) == (w["min_value"], w["max_value"]), (what, key)
        assert row["avg_value"] == pytest.approx(w["avg_value"], **APPROX), (what, key)
        assert row["stddev_value"] == pytest.approx(w["stddev_value"], **APPROX), (what, key)
        assert not math.isnan(row["stddev_value"])


async def fetch_all(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def test_stddev_hours_and_days_exact_after_late_events_kills_and_a_replay(pipeline):
    dataset = build_dataset(seed=43, readings_per_sensor=90)
    expected = expected_outcome(dataset)
    assert expected.late and expected.duplicates  # late within the grace (windows revised) and too late
    messages = [(m.key, m.value) for m in dataset.messages]
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()

    # In six slices: the worker SIGKILLed after the second (it re-sends what it had not committed), the sink
    # SIGKILLed after the third, a second sink in the group for the fourth and fifth (partitions move between
    # the two, both may write the same records).
    size = math.ceil(len(messages) / 6)
    second_sink = None
    for i in range(6):
        await pipeline.produce(messages[i * size : (i + 1) * size])
        await asyncio.sleep(1.5)
        if i == 1:
            worker.kill()
            worker.start()
            await worker.wait_ready()
        elif i == 2:
            pipeline.sinks[0].kill()
            pipeline.sinks[0].start()
        elif i == 3:
            second_sink = pipeline.add_sink()
            second_sink.start()
        elif i == 5 and second_sink is not None:
            second_sink.stop()
    window_total = sum(a["count"] for (s, *_), a in expected.windows.items() if s == 300)
    await pipeline.settled(len(expected.raw), window_total, timeout_s=180)
    await pipeline.caught_up()

    # The whole dataset again: every event a duplicate, every window re-sent at the version it has.
    await pipeline.produce(messages)
    await pipeline.caught_up()
    await asyncio.sleep(3)

    accepted = accepted_values(dataset, expected)
    for name, seconds in SIZES.items():
        device_rows = await fetch_all(pipeline.dsn, f"SELECT * FROM telemetry_device_agg_{name}")
        assert_windows(
            device_rows,
            windows_of(accepted, seconds, lambda d: (d,)),
            lambda r: (r["device_id"], r["sensor_type"], r["window_start"]),
            f"device {name}",
        )
        for row in device_rows:
            assert row["window_end"] - row["window_start"] == timedelta(seconds=seconds)
        zone_rows = await fetch_all(pipeline.dsn, f"SELECT * FROM telemetry_agg_{name}")
        assert_windows(
            zone_rows,
            windows_of(accepted, seconds, lambda d: dataset.devices[d]),
            lambda r: (r["site_id"], r["zone_id"], r["sensor_type"], r["window_start"]),
            f"zone {name}",
        )
    # And the roll-up rule itself: each hour and day is the sum of the 15-minute rows stored.
    fifteen = await fetch_all(pipeline.dsn, "SELECT * FROM telemetry_device_agg_15m")
    for name, seconds in (("1h", 3600), ("1d", 86400)):
        rolled = defaultdict(lambda: [0, 0.0, 0.0])
        for r in fifteen:
            start = EPOCH + (r["window_start"] - EPOCH) // timedelta(seconds=seconds) * timedelta(
                seconds=seconds
            )
            parts = rolled[(r["device_id"], r["sensor_type"], start)]
            parts[0] += r["count_events"]
            parts[1] += r["sum_value"]
            parts[2] += r["sum_sq_value"]
        for r in await fetch_all(pipeline.dsn, f"SELECT * FROM telemetry_device_agg_{name}"):
            count, total, squares = rolled[(r["device_id"], r["sensor_type"], r["window_start"])]
            assert r["count_events"] == count
            assert r["sum_value"] == pytest.approx(total, **APPROX)
            assert r["sum_sq_value"] == pytest.approx(squares, **APPROX)
    # The dataset spans midnight: two days, and hours on both sides of it.
    assert (
        len({r["window_start"] for r in await fetch_all(pipeline.dsn, "SELECT * FROM telemetry_agg_1d")}) == 2
    )


def event(device: str, ts: datetime, value: float, sensor: str = "co2") -> tuple[bytes, bytes]:
    body = {
        "event_id": str(uuid.uuid4()), "device_id": device, "site_id": "site-r", "zone_id": "zone-r",
        "sensor_type": sensor, "value": value, "ts_event": ts.isoformat(),
    }  # fmt: skip
    return device.encode(), orjson.dumps(body)


async def test_the_worker_enforces_retention_at_start_and_old_data_arriving_later_is_refused(pipeline):
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    devices = ("ret.a", "ret.b", "ret.c")
    # Every 30 minutes over the last five days, oldest first per device (all accepted, none too late).
    history = [
        event(device, now - timedelta(minutes=30 * i, seconds=d), 500.0 + (7 * i + d) % 300)
        for i in range(5 * 48 - 1, -1, -1)
        for d, device in enumerate(devices)
    ]
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce(history)
    await pipeline.settled(len(history), len(history), timeout_s=120)
    days_before = {
        r["day"]
        for r in await fetch_all(
            pipeline.dsn, "SELECT DISTINCT (ts_event AT TIME ZONE 'UTC')::date AS day FROM telemetry_events"
        )
    }
    rollups_before = {
        name: await fetch_all(pipeline.dsn, f"SELECT * FROM telemetry_device_agg_{name} ORDER BY 1, 3, 6")
        for name in ("1h", "1d")
    }

    # Restarted with retention: it runs at start.
    worker.stop()
    worker.env.update(RAW_RETENTION_DAYS="2", WINDOW_5M_RETENTION_DAYS="1", WINDOW_15M_RETENTION_DAYS="3")
    restarted_at = datetime.now(UTC)
    worker.start()
    await worker.wait_ready()

    async def boundaries():
        rows = await fetch_all(
            pipeline.dsn,
            "SELECT NULLIF(raw_before, '-infinity') AS raw, NULLIF(window_5m_before, '-infinity') AS w5,"
            " NULLIF(window_15m_before, '-infinity') AS w15 FROM telemetry_retention",
        )
        return rows[0] if rows[0]["raw"] is not None else None

    b = await wait_for(boundaries, 60, what="the retention run at the worker's start")
    # The boundaries follow the wall clock of the run, which may fall on either side of a midnight.
    run_days = {utc_midnight(restarted_at), utc_midnight(datetime.now(UTC))}

    async def done() -> bool:
        return "retention: raw readings before" in worker.log_text(worker.starts - 1)

    await wait_for(done, 60, what="the retention run's report in the worker log")
    assert b["raw"] in {day - timedelta(days=2) for day in run_days}
    assert b["w15"] in {day - timedelta(days=3) for day in run_days}
    assert restarted_at - timedelta(days=1) <= b["w5"] <= datetime.now(UTC) - timedelta(days=1)

    conn = await asyncpg.connect(pipeline.dsn)
    try:
        partitions = await db.partition_days(conn)
        assert set(partitions) == {
            d for d in days_before if datetime(d.year, d.month, d.day, tzinfo=UTC) >= b["raw"]
        }
        assert await conn.fetchval("SELECT min(ts_event) FROM telemetry_events") >= b["raw"]
        assert await conn.fetchval("SELECT count(*) FROM telemetry_events") == sum(
            1 for _, v in history if datetime.fromisoformat(orjson.loads(v)["ts_event"]) >= b["raw"]
        )
        assert await conn.fetchval("SELECT min(window_end) FROM telemetry_device_agg_5m") > b["w5"]
        assert await conn.fetchval("SELECT min(window_start) FROM telemetry_device_agg_15m") >= b["w15"]
        for name in ("1h", "1d"):
            rows = await conn.fetch(f"SELECT * FROM telemetry_device_agg_{name} ORDER BY 1, 3, 6")
            assert rows == rollups_before[name], f"{name} windows are kept"
    finally:
        await conn.close()

    # Old data after that: a new device's four-day-old reading (accepted by its fresh watermark), an existing
    # device's too-late one; then a current reading as the marker that the sink got past them.
    old = now - timedelta(days=4)
    await pipeline.produce(
        [event("ret.new", old, 901.0), event("ret.a", old, 902.0), event("ret.new", now, 903.0)]
    )
    await wait_for(
        lambda: fetch_all(pipeline.dsn, "SELECT 1 FROM telemetry_events WHERE value = 903"),
        60,
        what="the marker",
    )
    await pipeline.caught_up()
    conn = await asyncpg.connect(pipeline.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM telemetry_events WHERE value IN (901, 902)") == 0
        assert set(await db.partition_days(conn)) == set(partitions), "no partition re-created for an old day"
        for name in ("5m", "15m", "1h", "1d"):
            stored = await conn.fetch(
                f"SELECT window_start FROM telemetry_device_agg_{name} WHERE device_id = 'ret.new' AND window_start < $1",
                now - timedelta(days=3, hours=1),
            )
            assert not stored, f"{name}: an old window of the late device"
        for name in ("1h", "1d"):
            rows = await conn.fetch(
                f"SELECT * FROM telemetry_device_agg_{name} WHERE device_id <> 'ret.new' ORDER BY 1, 3, 6"
            )
            assert rows == rollups_before[name]
    finally:
        await conn.close()
    assert worker.alive()
