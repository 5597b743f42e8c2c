"""End to end against the real Kafka and PostgreSQL: a deterministic dataset whose expected outcome
the test computes from the SPEC rules (tests/pipeline_model.py), compared exactly with PostgreSQL and
the topics — run straight, with SIGKILLs, with PostgreSQL refusing connections, and replayed."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from devkit import kafka_io
from devkit.deployment import Deployment
from devkit.epoch import to_us
from devkit.paths import TEST_OUTPUT
from tests.pipeline_model import build_dataset, expected_outcome, parse_us

pytestmark = pytest.mark.integration


async def assert_matches_model(pipe: Deployment, dataset, expected, productions: int = 1) -> None:
    """PostgreSQL and the topics hold exactly what the SPEC rules give for this dataset."""
    snap = await pipe.db_snapshot()

    raw = {(r["device_id"], str(r["event_id"])): r for r in snap["events"]}
    assert len(snap["events"]) == len(expected.raw), "raw rows: one per stored reading, none doubled"
    assert set(raw) == set(expected.raw)
    for key, event in expected.raw.items():
        row = raw[key]
        assert row["value"] == pytest.approx(float(event["value"]))
        assert to_us(row["ts_event"]) == parse_us(event["ts_event"])
        assert (row["site_id"], row["zone_id"], row["sensor_type"]) == (
            event["site_id"],
            event["zone_id"],
            event["sensor_type"],
        )

    for size, table in ((300, "agg_5m"), (900, "agg_15m")):
        rows = {(r["device_id"], r["sensor_type"], to_us(r["window_start"])): r for r in snap[table]}
        want = {(d, s, start): agg for (sz, d, s, start), agg in expected.windows.items() if sz == size}
        assert set(rows) == set(want), f"{table}: window keys"
        for key, agg in want.items():
            row = rows[key]
            assert row["count_events"] == agg["count"], f"{table} {key}"
            assert row["avg_value"] == pytest.approx(agg["sum"] / agg["count"], rel=1e-9)
            assert (row["min_value"], row["max_value"]) == (agg["min"], agg["max"])
            assert to_us(row["window_end"]) - to_us(row["window_start"]) == size * 1_000_000

    zones = expected.zone_windows(dataset.devices)
    for size, view in ((300, "zone_5m"), (900, "zone_15m")):
        rows = {
            (r["site_id"], r["zone_id"], r["sensor_type"], to_us(r["window_start"])): r for r in snap[view]
        }
        want = {(si, zo, se, st): agg for (sz, si, zo, se, st), agg in zones.items() if sz == size}
        assert set(rows) == set(want)
        for key, agg in want.items():
            assert rows[key]["count_events"] == agg["count"]
            assert rows[key]["avg_value"] == pytest.approx(agg["sum"] / agg["count"], rel=1e-9)
            assert (rows[key]["min_value"], rows[key]["max_value"]) == (agg["min"], agg["max"])

    latest = {(r["device_id"], r["sensor_type"]): r["value"] for r in snap["latest"]}
    assert latest == pytest.approx(expected.latest)

    alerts = {str(r["alert_id"]): r for r in snap["alerts"]}
    assert set(alerts) == set(expected.alerts), "alert episodes"
    for alert_id, want in expected.alerts.items():
        row = alerts[alert_id]
        assert row["status"] == want["status"]
        assert (
            row["peak_value"] == pytest.approx(want["peak_value"]) if want["status"] == "resolved" else True
        )
        assert row["value"] == pytest.approx(want["value"])
        assert to_us(row["opened_at"]) == want["opened_at"]
        assert (to_us(row["resolved_at"]) if row["resolved_at"] else None) == want["resolved_at"]
        assert str(row["event_id"]) == want["event_id"]

    published = kafka_io.json_values(await kafka_io.read_topic(pipe.bootstrap, pipe.topic_alerts))
    assert {(m["alert_id"], m["status"]) for m in published} == {(a, "open") for a in expected.alerts} | {
        (a, "resolved") for a, w in expected.alerts.items() if w["status"] == "resolved"
    }

    dead = kafka_io.json_values(await kafka_io.read_topic(pipe.bootstrap, pipe.topic_dlq))
    # One dead letter per invalid message produced (each production is new offsets).
    assert len({(d["source_partition"], d["source_offset"]) for d in dead}) == expected.invalid * productions
    assert all(d["error"] and d["detail"] and d["payload"] and d["received_at"] for d in dead)


def _window_total(expected) -> int:
    return sum(agg["count"] for (size, *_), agg in expected.windows.items() if size == 300)


async def run_dataset(pipe, dataset, expected, timeout_s=180) -> None:
    await pipe.settled(len(expected.raw), _window_total(expected), timeout_s)
    await pipe.caught_up()
    await assert_matches_model(pipe, dataset, expected)


def _messages(dataset):
    return [(m.key, m.value) for m in dataset.messages]


async def test_dataset_lands_exactly(pipeline):
    dataset = build_dataset()
    expected = expected_outcome(dataset)
    assert (
        expected.duplicates and expected.late and expected.invalid and expected.alerts
    )  # the dataset covers them
    assert {a["status"] for a in expected.alerts.values()} == {"open", "resolved"}
    assert len({parse_us(m.event["ts_event"]) // 86_400_000_000 for m in dataset.messages if m.event}) == 2

    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce(_messages(dataset))
    await run_dataset(pipeline, dataset, expected)

    # Replaying the same data again (a producer retrying everything) changes nothing.
    await pipeline.produce(_messages(dataset))
    await pipeline.caught_up()
    await asyncio.sleep(2)
    await assert_matches_model(pipeline, dataset, expected, productions=2)


async def test_sigkill_at_random_moments_gives_the_same_result(pipeline):
    dataset = build_dataset(seed=11, readings_per_sensor=90)
    expected = expected_outcome(dataset)
    messages = _messages(dataset)
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()

    rng = random.Random(5)
    chunks = 6
    size = math.ceil(len(messages) / chunks)
    for i in range(chunks):
        await pipeline.produce(messages[i * size : (i + 1) * size])
        await asyncio.sleep(rng.uniform(0.2, 2.5))
        worker.kill()  # SIGKILL: no flush, no commit
        worker.start()
        await worker.wait_ready()
    assert worker.starts == chunks + 1
    await run_dataset(pipeline, dataset, expected)


async def test_postgres_refusing_connections_for_20s(pipeline, stack):
    dataset = build_dataset(seed=23)
    expected = expected_outcome(dataset)
    messages = _messages(dataset)
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    half = len(messages) // 2
    await pipeline.produce(messages[:half])

    # Refuse the sink's connections for 20 s: no new logins to this database, and every session killed.
    name = pipeline.dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(stack["DATABASE_URL"])
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await pipeline.produce(messages[half:])
        await asyncio.sleep(20)
        assert worker.alive(), "the worker must ride out a database outage"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await run_dataset(pipeline, dataset, expected)
    assert worker.starts == 1


async def test_replay_days_later_into_fresh_topics_gives_the_same_result(stack, tmp_path):
    """The dataset's event times are years old; run it twice into separate deployments and compare."""
    dataset = build_dataset(seed=31, readings_per_sensor=40)
    expected = expected_outcome(dataset)
    results = []
    for run in range(2):
        pipe = await Deployment(stack, logs=TEST_OUTPUT / "logs", tmp=tmp_path / f"run{run}").setup()
        try:
            if run == 1:  # the second time, the data is already in the topic when the worker starts
                await pipe.produce(_messages(dataset))
            worker = pipe.add_worker()
            worker.start()
            await worker.wait_ready()
            if run == 0:
                await pipe.produce(_messages(dataset))
            await run_dataset(pipe, dataset, expected)
            snap = await pipe.db_snapshot()
            results.append(
                {
                    t: sorted(
                        tuple(
                            v
                            for k, v in dict(r).items()
                            if k not in ("updated_at", "ts_ingest", "change_seq", "version")
                        )
                        for r in snap[t]
                    )
                    for t in snap
                }
            )
        finally:
            await pipe.close()
    assert results[0] == results[1]


async def test_poison_message_at_the_head_of_a_partition_does_not_stall_it(pipeline):
    good_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    good = {
        "event_id": good_id, "device_id": "poison-dev", "site_id": "s", "zone_id": "z", "sensor_type": "co2",
        "value": 500, "ts_event": now.isoformat(),
    }  # fmt: skip
    # Same key: same partition, poison first.
    await pipeline.produce([(b"poison-dev", b"\x00\xff not even utf-8"), (b"poison-dev", orjson.dumps(good))])
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.settled(1, 1, timeout_s=60)
    dead = kafka_io.json_values(await kafka_io.read_topic(pipeline.bootstrap, pipeline.topic_dlq))
    assert [d["error"] for d in dead] == ["invalid_json"]
