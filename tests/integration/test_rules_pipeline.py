"""Alert rules at run time and stale sensors (SPEC §9) end to end, against the real Kafka and PostgreSQL: rules written
through the API, the worker, the sink, the alerts topic and PostgreSQL, compared with the independent model of
tests/rules_model.py — straight, replayed into fresh topics under SIGKILLs, a rule changed while the worker runs, a
silent partition, and a worker restarted while PostgreSQL refuses connections."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from devkit import kafka_io
from devkit.deployment import Deployment
from devkit.paths import TEST_OUTPUT
from devkit.waiting import wait_for
from telemetrypulse.models import iso_utc, to_us
from telemetrypulse.settings import Settings
from tests.api.conftest import app_client
from tests.pipeline_model import parse_us
from tests.rules_model import build_rules_dataset, expected_alerts

pytestmark = pytest.mark.integration

ADMIN = "rules-admin-5d1c9e2a"
AS_ADMIN = {"X-API-Key": ADMIN}
ALERT_FIELDS = (
    "status", "rule", "alert_type", "rule_id", "severity", "device_id", "site_id", "zone_id", "sensor_type",
    "threshold", "value", "peak_value", "opened_at", "resolved_at", "event_id",
)  # fmt: skip


@contextlib.asynccontextmanager
async def api_for(pipe: Deployment):
    """The API of the pipeline's deployment, in-process (same database, APP_ID and so rules topic)."""
    settings = Settings(
        database_url=pipe.dsn,
        kafka_bootstrap_servers=pipe.bootstrap,
        app_id=pipe.app_id,
        topic_events=pipe.topic_events,
        topic_alerts=pipe.topic_alerts,
        api_keys=f"root:{ADMIN}:admin",
        api_key=None,
    )
    async with app_client(settings) as client:
        yield client


async def put_rules(client, versions: list[dict]) -> None:
    for version in versions:
        body = {k: v for k, v in version.items() if k != "rule_id"}
        response = await client.put(f"/rules/{version['rule_id']}", json=body, headers=AS_ADMIN)
        assert response.status_code in (200, 201), response.text


async def produce_to_partitions(bootstrap: str, topic: str, messages: list[tuple[int, bytes, bytes]]) -> None:
    """Keyed by device_id, into the partition the test chose for the device (the model knows it)."""
    await kafka_io.produce(bootstrap, topic, [(key, value, p) for p, key, value in messages])


def dataset_messages(dataset) -> list[tuple[int, bytes, bytes]]:
    return [(dataset.partition_of(event["device_id"]), key, value) for key, value, event in dataset.messages]


def row_of(record) -> dict:
    row = {name: record[name] for name in ALERT_FIELDS}
    row["opened_at"] = to_us(row["opened_at"])
    row["resolved_at"] = None if row["resolved_at"] is None else to_us(row["resolved_at"])
    row["event_id"] = str(row["event_id"])
    return row


async def alert_rows(pipe: Deployment) -> dict[str, dict]:
    conn = await asyncpg.connect(pipe.dsn)
    try:
        return {str(r["alert_id"]): row_of(r) for r in await conn.fetch("SELECT * FROM telemetry_alerts")}
    finally:
        await conn.close()


async def assert_alerts_are_the_models(pipe: Deployment, expected) -> dict[str, dict]:
    want = {alert_id: {k: alert[k] for k in ALERT_FIELDS} for alert_id, alert in expected.alerts.items()}

    async def landed():
        try:
            return await alert_rows(pipe) == want
        except (OSError, asyncpg.PostgresError):
            return False

    try:
        await wait_for(landed, 90, interval_s=1.0, what="the model's alert rows in PostgreSQL")
    except TimeoutError:
        rows = await alert_rows(pipe)
        missing, extra = want.keys() - rows.keys(), rows.keys() - want.keys()
        wrong = {a: (rows[a], want[a]) for a in want.keys() & rows.keys() if rows[a] != want[a]}
        raise AssertionError(f"missing {missing}, extra {extra}, differing {wrong}") from None
    published = kafka_io.json_values(await kafka_io.read_topic(pipe.bootstrap, pipe.topic_alerts))
    assert {(m["alert_id"], m["status"]) for m in published} == expected.statuses()
    for message in published:
        want_alert = expected.alerts[message["alert_id"]]
        assert (message["rule_id"], message["severity"], message["rule"]) == (
            want_alert["rule_id"], want_alert["severity"], want_alert["rule"],
        )  # fmt: skip
    return want


async def test_rules_written_through_the_api_give_the_models_alerts(pipeline):
    dataset = build_rules_dataset()
    expected = expected_alerts(dataset)
    kinds = {(a["rule"], a["status"]) for a in expected.alerts.values()}
    assert kinds == {
        ("threshold", "open"),
        ("threshold", "resolved"),
        ("stale", "open"),
        ("stale", "resolved"),
    }
    async with api_for(pipeline) as api:
        await put_rules(api, dataset.versions)
        worker = pipeline.add_worker(STALE_AFTER_S=str(dataset.stale_after_s))
        worker.start()
        await worker.wait_ready()
        await produce_to_partitions(pipeline.bootstrap, pipeline.topic_events, dataset_messages(dataset))
        await pipeline.caught_up(timeout_s=120)
        await assert_alerts_are_the_models(pipeline, expected)
        # GET /alerts filters by severity and rule.
        critical = (await api.get("/alerts", params={"severity": "critical", "limit": 1000})).json()["items"]
        assert {a["alert_id"] for a in critical} == {
            a for a, alert in expected.alerts.items() if alert["severity"] == "critical"
        }
        stale = (await api.get("/alerts", params={"rule": "stale", "status": "open"})).json()["items"]
        assert {a["alert_id"] for a in stale} == {
            a
            for a, alert in expected.alerts.items()
            if alert["rule"] == "stale" and alert["status"] == "open"
        }


async def test_replayed_into_fresh_topics_under_sigkills_the_alerts_are_identical(stack, tmp_path):
    """Two deployments, the same rules and events: one straight, one with the events already in its topic and its
    worker SIGKILLed four times while it works through them. Both hold exactly the model's alerts."""
    dataset = build_rules_dataset(seed=5)
    expected = expected_alerts(dataset)
    results = []
    for run in range(2):
        pipe = await Deployment(stack, logs=TEST_OUTPUT / "logs", tmp=tmp_path / f"run{run}").setup()
        try:
            async with api_for(pipe) as api:
                await put_rules(api, dataset.versions)
            worker = pipe.add_worker(STALE_AFTER_S=str(dataset.stale_after_s), SNAPSHOT_INTERVAL_S="1")
            if run == 0:
                worker.start()
                await worker.wait_ready()
                await produce_to_partitions(pipe.bootstrap, pipe.topic_events, dataset_messages(dataset))
            else:
                await produce_to_partitions(pipe.bootstrap, pipe.topic_events, dataset_messages(dataset))
                rng = random.Random(9)
                worker.start()
                for _ in range(4):
                    await worker.wait_ready()
                    await asyncio.sleep(rng.uniform(0.3, 2.0))
                    worker.kill()
                    worker.start()
                await worker.wait_ready()
                assert worker.starts == 5
            await pipe.caught_up(timeout_s=120)
            results.append(await assert_alerts_are_the_models(pipe, expected))
        finally:
            await pipe.close()
    assert results[0] == results[1]


def live_event(
    device: str, sensor: str, value: float, moment: datetime, site: str = "site-1"
) -> tuple[bytes, bytes]:
    event = {
        "event_id": str(uuid.uuid4()), "device_id": device, "site_id": site, "zone_id": "zone-1",
        "sensor_type": sensor, "value": value, "ts_event": iso_utc(to_us(moment)),
    }  # fmt: skip
    return device.encode(), orjson.dumps(event)


async def alert_messages(pipe: Deployment) -> list[dict]:
    return kafka_io.json_values(await kafka_io.read_topic(pipe.bootstrap, pipe.topic_alerts, timeout_s=2))


async def test_a_rule_changed_through_the_api_applies_without_a_restart(pipeline):
    """co2 at 700 is quiet under the default (1000). A rule written through the API while the worker runs — no
    restart — opens an episode for the same reading produced 10 s later."""
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    await pipeline.produce([live_event("live-1", "co2", 700, datetime.now(UTC))])
    await pipeline.caught_up()
    assert await alert_messages(pipeline) == []
    async with api_for(pipeline) as api:
        put_at = time.monotonic()
        response = await api.put(
            "/rules/live-co2",
            json={
                "sensor_type": "co2",
                "direction": "above",
                "open_at": 600,
                "resolve_at": 550,
                "severity": "critical",
            },
            headers=AS_ADMIN,
        )
        assert response.status_code == 201
        effective = parse_us(response.json()["effective_from"].replace("Z", "+00:00"))
    # Before the 10 s are up: one reading a second, to see how soon the change is applied (reported, not asserted).
    first_alert_s = None
    while time.monotonic() - put_at < 10:
        await pipeline.produce([live_event(f"probe-{uuid.uuid4().hex[:6]}", "co2", 700, datetime.now(UTC))])
        await asyncio.sleep(1)
        if first_alert_s is None and await alert_messages(pipeline):
            first_alert_s = time.monotonic() - put_at
    print(f"rule change applied to live events after {first_alert_s} s (first probe alerted)")
    reading = live_event("live-1", "co2", 700, datetime.now(UTC))
    await pipeline.produce([reading])

    async def opened():
        return [
            m for m in await alert_messages(pipeline) if m["event_id"] == orjson.loads(reading[1])["event_id"]
        ]

    (message,) = await wait_for(opened, 30, interval_s=0.5, what="the alert of the new rule")
    assert (message["rule_id"], message["severity"], message["threshold"], message["status"]) == (
        "live-co2", "critical", 600.0, "open",
    )  # fmt: skip
    assert parse_us(message["opened_at"].replace("Z", "+00:00")) >= effective
    assert worker.starts == 1 and worker.alive()


async def test_a_silent_partition_raises_its_stale_alerts_by_the_clock(stack, database, tmp_path):
    """STALE_AFTER_S=20: the devices of partition 1 stop while those of partition 0 go on. Their stale alerts arrive
    within STALE_AFTER_S + 60 s of their last reading; partition 0's sensors, still reporting, raise none."""
    stale_after_s = 20
    pipe = await Deployment(
        stack, logs=TEST_OUTPUT / "logs", dsn=database, tmp=tmp_path, partitions=2
    ).setup()
    try:
        worker = pipe.add_worker(STALE_AFTER_S=str(stale_after_s))
        worker.start()
        await worker.wait_ready()
        devices = {0: ["busy-1", "busy-2"], 1: ["quiet-1", "quiet-2"]}
        last: dict[tuple[str, str], dict] = {}
        for _ in range(5):  # both partitions live for ~5 s
            batch = []
            for partition, names in devices.items():
                for device in names:
                    key, value = live_event(device, "temperature", 21.5, datetime.now(UTC))
                    batch.append((partition, key, value))
                    last[(device, "temperature")] = orjson.loads(value)
            await produce_to_partitions(pipe.bootstrap, pipe.topic_events, batch)
            await asyncio.sleep(1)
        stopped = time.monotonic()
        deadline = stopped + stale_after_s + 60
        quiet_alerts: dict[str, dict] = {}
        while time.monotonic() < deadline and len(quiet_alerts) < 2:
            batch = []
            for device in devices[0]:  # partition 0 keeps reporting
                key, value = live_event(device, "temperature", 21.5, datetime.now(UTC))
                batch.append((0, key, value))
            await produce_to_partitions(pipe.bootstrap, pipe.topic_events, batch)
            await asyncio.sleep(1)
            for message in await alert_messages(pipe):
                if message["rule"] == "stale" and message["device_id"].startswith("quiet"):
                    quiet_alerts.setdefault(
                        message["device_id"], message | {"seen_after_s": time.monotonic() - stopped}
                    )
        assert set(quiet_alerts) == {"quiet-1", "quiet-2"}, "stale alerts of the silent partition"
        for device, message in quiet_alerts.items():
            reading = last[(device, "temperature")]
            assert message["seen_after_s"] <= stale_after_s + 60
            assert (message["event_id"], message["status"], message["threshold"]) == (
                reading["event_id"], "open", float(stale_after_s),
            )  # fmt: skip
            opened_at = parse_us(message["opened_at"].replace("Z", "+00:00"))
            assert (
                opened_at == parse_us(reading["ts_event"].replace("Z", "+00:00")) + stale_after_s * 1_000_000
            )
        print(
            "silent partition: stale alerts seen after",
            {d: round(m["seen_after_s"], 1) for d, m in quiet_alerts.items()},
        )
        assert not [m for m in await alert_messages(pipe) if m["device_id"].startswith("busy")]
        # They reach PostgreSQL through the sink like any alert.
        await wait_for(lambda: _stale_rows(pipe), 30, what="the stale alerts in PostgreSQL")
    finally:
        await pipe.close()


async def _stale_rows(pipe) -> bool:
    rows = await alert_rows(pipe)
    return sum(r["rule"] == "stale" and r["device_id"].startswith("quiet") for r in rows.values()) == 2


async def test_a_worker_restarted_while_postgres_refuses_connections_knows_every_rule(pipeline, stack):
    """The rules come from Kafka, never from PostgreSQL: with the database refusing connections, a restarted worker
    starts, judges by the rule written before, and its alert reaches the alerts topic; PostgreSQL gets the row
    once it is back."""
    async with api_for(pipeline) as api:
        response = await api.put(
            "/rules/outage-humidity",
            json={
                "sensor_type": "humidity",
                "direction": "below",
                "open_at": 20,
                "resolve_at": 25,
                "effective_from": "2024-01-01T00:00:00Z",
            },
            headers=AS_ADMIN,
        )
        assert response.status_code == 201
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    name = pipeline.dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(stack["DATABASE_URL"])
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        worker.kill()
        worker.start()
        await worker.wait_ready(timeout_s=60)
        dry = live_event("greenhouse-1", "humidity", 12.0, datetime.now(UTC) - timedelta(seconds=5))
        await pipeline.produce([dry])

        async def alerted():
            return [m for m in await alert_messages(pipeline) if m["rule_id"] == "outage-humidity"]

        (message,) = await wait_for(alerted, 60, interval_s=1.0, what="the alert, with PostgreSQL away")
        assert (message["alert_type"], message["value"]) == ("HUMIDITY_LOW", 12.0)
        assert worker.alive() and worker.starts == 2
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    async def stored():
        try:
            rows = await alert_rows(pipeline)
        except (OSError, asyncpg.PostgresError):
            return False
        return any(r["rule_id"] == "outage-humidity" for r in rows.values())

    await wait_for(stored, 90, interval_s=1.0, what="the alert row once PostgreSQL is back")
