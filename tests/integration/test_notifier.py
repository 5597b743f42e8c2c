"""`telemetrypulse notify` as a real child process, on real Kafka and PostgreSQL, delivering to real HTTP
receivers in this process (tests/webhook_receiver.py), which verify every signature.

What users rely on (SPEC §10): every (alert_id, status) reaches every receiver, signed; once a receiver
answered 2xx a delivery is not sent to it again — across SIGTERM restarts, repeated topic messages and a
receiver that fails for a while; after a SIGKILL only a delivery that was in flight may repeat (counted
and reported); an alert's resolve never reaches a receiver before its open; one hanging receiver does
not delay another. Figures go to test-output/notifier-*.json.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
import uuid

import asyncpg
import orjson
import pytest

from devkit import kafka_io
from devkit.paths import TEST_OUTPUT
from devkit.ports import free_port
from devkit.processes import ChildProcess
from devkit.waiting import wait_for
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789"


def alert_messages(count: int, *, tag: str) -> list[tuple[bytes, bytes, bytes]]:
    """`count` episodes as (key, open message, resolved message), as the worker writes them (SPEC §5)."""
    episodes = []
    for i in range(count):
        device = f"{tag}-dev-{i % 12:02d}"
        alert_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"telemetrypulse:{device}:co2:{tag}-{i}"))
        opened = {
            "alert_id": alert_id,
            "status": "open",
            "rule": "threshold",
            "alert_type": "CO2_HIGH",
            "device_id": device,
            "site_id": f"site-{i % 3}",
            "zone_id": "z1",
            "sensor_type": "co2",
            "threshold": 1000.0,
            "value": 1100.0 + i,
            "peak_value": 1100.0 + i,
            "opened_at": "2024-05-01T12:00:00Z",
            "resolved_at": None,
            "event_id": str(uuid.uuid4()),
        }
        resolved = dict(opened, status="resolved", peak_value=1300.0 + i, resolved_at="2024-05-01T12:10:00Z")
        episodes.append((device.encode(), orjson.dumps(opened), orjson.dumps(resolved)))
    return episodes


def expected_ids(episodes) -> set[str]:
    ids = set()
    for _, opened, resolved in episodes:
        for body in (opened, resolved):
            message = orjson.loads(body)
            ids.add(f"{message['alert_id']}:{message['status']}")
    return ids


def assert_well_formed(receiver: WebhookReceiver) -> None:
    """Every request: valid signature over the exact body, and headers that agree with the body."""
    assert receiver.requests
    for r in receiver.requests:
        assert r.signature_ok, f"bad signature on {r.delivery_id}"
        assert r.content_type == "application/json"
        assert r.delivery_id == f"{r.body['alert_id']}:{r.body['status']}"
        assert r.event == f"alert.{r.body['status']}"


async def unfinished_attempts(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT delivery_id FROM webhook_attempts WHERE finished_at IS NULL")
        return {r["delivery_id"] for r in rows}
    finally:
        await conn.close()


async def delivery_states(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM webhook_deliveries GROUP BY state")
        return {r["state"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def attempts_of(dsn: str, delivery_ids) -> list[dict]:
    """The attempt log of some deliveries, for failure messages."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY attempt_id",
            list(delivery_ids),
        )
        return [dict(r) for r in rows]
    finally:
        await conn.close()


# The receivers run on this test's event loop: waiting for a process must never block it, or a receiver
# would answer late and the notifier would (rightly) time the request out and send it again.
async def stop(process: ChildProcess) -> None:
    await asyncio.to_thread(process.stop)


async def kill(process: ChildProcess) -> None:
    await asyncio.to_thread(process.kill)


def write_figures(name: str, figures: dict) -> None:
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    (TEST_OUTPUT / f"notifier-{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{name}: {json.dumps(figures)}")


async def test_every_delivery_arrives_signed_once_through_500s_sigterm_and_sigkill(pipeline):
    episodes = alert_messages(60, tag=uuid.uuid4().hex[:6])
    waves = [episodes[:20], episodes[20:40], episodes[40:]]
    expected = expected_ids(episodes)
    # 500 for its first 6 s; every answer held 0.15 s, so a SIGKILL lands with a delivery in flight.
    receiver = await WebhookReceiver(SECRET.encode(), "flaky", fail_for_s=6, answer_delay_s=0.15).start()
    notifier = pipeline.add_notifier(WEBHOOK_URLS=receiver.url, WEBHOOK_SECRET=SECRET, WEBHOOK_POLL_S="1")
    figures: dict = {"deliveries": len(expected)}
    try:
        notifier.start()
        await notifier.wait_ready(60)

        # Wave 1: opens, then resolves (one resolve of each alert follows its open on the same key).
        await kafka_io.produce(
            pipeline.bootstrap,
            pipeline.topic_alerts,
            [(k, o) for k, o, _ in waves[0]] + [(k, r) for k, _, r in waves[0]],
        )
        await wait_for(lambda: len(receiver.delivered()) >= 12, 60, what="a dozen deliveries after the 500s")
        assert any(r.answered == 500 for r in receiver.requests), "the receiver's 500 phase was not exercised"

        # SIGTERM mid-stream: in-flight attempts finish and are recorded; nothing repeats afterwards.
        started = time.monotonic()
        notifier.signal(signal.SIGTERM)
        assert await asyncio.to_thread(notifier.process.wait, 60) == 0, notifier.log_text()[-3000:]
        figures["sigterm_exit_s"] = round(time.monotonic() - started, 2)
        assert await unfinished_attempts(pipeline.dsn) == set()
        delivered_before_restart = len(receiver.delivered())

        # Wave 2, with every message of wave 1 repeated on the topic.
        notifier.start()
        await notifier.wait_ready(60)
        repeats_1 = [(k, o) for k, o, _ in waves[0]] + [(k, r) for k, _, r in waves[0]]
        wave_2 = [(k, o) for k, o, _ in waves[1]] + [(k, r) for k, _, r in waves[1]]
        await kafka_io.produce(pipeline.bootstrap, pipeline.topic_alerts, repeats_1 + wave_2)
        await wait_for(
            lambda: len(receiver.delivered()) >= delivered_before_restart + 25, 60, what="wave 2 under way"
        )
        repeated = receiver.repeats()
        assert repeated == {}, (
            repeated,
            await attempts_of(pipeline.dsn, repeated),
            notifier.log_text()[-5000:],
        )

        # SIGKILL mid-stream: whatever was in flight may be sent again, nothing else.
        await kill(notifier)
        in_flight = await unfinished_attempts(pipeline.dsn)
        figures["in_flight_at_sigkill"] = sorted(in_flight)

        # Wave 3, with everything produced so far repeated.
        notifier.start()
        await notifier.wait_ready(60)
        everything = [(k, o) for k, o, _ in episodes[:40]] + [(k, r) for k, _, r in episodes[:40]]
        wave_3 = [(k, o) for k, o, _ in waves[2]] + [(k, r) for k, _, r in waves[2]]
        await kafka_io.produce(pipeline.bootstrap, pipeline.topic_alerts, everything + wave_3)
        await wait_for(lambda: receiver.delivered() == expected, 120, what="every delivery")
        await wait_for(
            lambda: "in flight when the last sender stopped" in notifier.current_log() or not in_flight,
            10,
            what="the interrupted attempts reported",
        )
        await asyncio.sleep(3)  # a late repeat would show up here
        await stop(notifier)

        assert_well_formed(receiver)
        assert receiver.order_violations() == []
        repeats = receiver.repeats()
        figures["repeats_after_sigkill"] = repeats
        figures["requests"] = len(receiver.requests)
        figures["answered_500"] = sum(r.answered == 500 for r in receiver.requests)
        assert set(repeats) <= in_flight, f"repeated without being in flight: {set(repeats) - in_flight}"
        assert all(n == 2 for n in repeats.values())
        assert await delivery_states(pipeline.dsn) == {"delivered": len(expected)}
        assert await unfinished_attempts(pipeline.dsn) == set()
        conn = await asyncpg.connect(pipeline.dsn)
        try:
            interrupted = await conn.fetchval(
                "SELECT count(*) FROM webhook_attempts WHERE error LIKE 'interrupted%'"
            )
            retried = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE attempts > 1")
        finally:
            await conn.close()
        assert interrupted == len(in_flight)
        assert retried >= 1  # the 500 phase
    finally:
        await stop(notifier)
        await receiver.stop()
        write_figures("restarts", figures)


async def test_a_hanging_receiver_does_not_delay_another_and_order_holds(pipeline):
    episodes = alert_messages(30, tag=uuid.uuid4().hex[:6])
    expected = expected_ids(episodes)
    fast = await WebhookReceiver(SECRET.encode(), "fast").start()
    # Every request in its first 30 s hangs for 30 s; the notifier gives up on each after 10 s (default).
    hanging = await WebhookReceiver(SECRET.encode(), "hanging", hang_for_s=30, hang_s=30).start()
    notifier = pipeline.add_notifier(WEBHOOK_URLS=f"{hanging.url},{fast.url}", WEBHOOK_SECRET=SECRET)
    figures: dict = {"deliveries_per_receiver": len(expected)}
    try:
        notifier.start()
        await notifier.wait_ready(60)
        produced_at: dict[str, float] = {}
        for status_index in (1, 2):  # all opens, then all resolves
            batch = [(e[0], e[status_index]) for e in episodes]
            await kafka_io.produce(pipeline.bootstrap, pipeline.topic_alerts, batch)
            now = time.monotonic()
            for _, body in batch:
                message = orjson.loads(body)
                produced_at[f"{message['alert_id']}:{message['status']}"] = now
            await asyncio.sleep(1)

        await wait_for(lambda: fast.delivered() == expected, 30, what="the fast receiver served")
        latencies = [fast.first_success()[d] - produced_at[d] for d in expected]
        figures["fast_latency_s"] = {
            "median": round(statistics.median(latencies), 3),
            "max": round(max(latencies), 3),
        }
        assert hanging.delivered() == set(), "the hanging receiver cannot have answered yet"
        assert len(hanging.requests) >= 1  # it was being tried meanwhile
        assert max(latencies) < 5, figures  # the hanging receiver's 10 s timeouts did not hold it up

        await wait_for(lambda: hanging.delivered() == expected, 120, what="the hung receiver served")
        figures["hanging_catch_up_s"] = round(max(hanging.first_success().values()) - hanging.started_at, 1)
        for receiver in (fast, hanging):
            assert_well_formed(receiver)
            assert receiver.order_violations() == []
            assert receiver.repeats() == {}
    finally:
        await stop(notifier)
        await fast.stop()
        await hanging.stop()
        write_figures("hanging", figures)


async def test_filters_expiry_and_webhooks_changed_over_the_api_without_restart(pipeline):
    from tests.api.conftest import api_settings, app_client

    admin = {"X-API-Key": "adm-filters-61b0e2"}
    site_rx = await WebhookReceiver(SECRET.encode(), "site").start()
    critical_rx = await WebhookReceiver(SECRET.encode(), "critical").start()
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    notifier = pipeline.add_notifier(
        WEBHOOK_URLS=dead, WEBHOOK_SECRET=SECRET, WEBHOOK_POLL_S="1", WEBHOOK_MAX_AGE_S="4"
    )
    settings = api_settings(
        {"KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap},
        pipeline.dsn,
        api_keys=f"root:{admin['X-API-Key']}:admin",
    )
    try:
        notifier.start()
        await notifier.wait_ready(60)
        async with app_client(settings) as api:
            api.headers.update(admin)
            assert (
                await api.put("/webhooks/site-1", json={"url": site_rx.url, "site_id": "site-1"})
            ).status_code == 201
            put = await api.put("/webhooks/crit", json={"url": critical_rx.url, "min_severity": "critical"})
            assert put.status_code == 201
            await wait_for(
                lambda: (
                    "receiver crit added" in notifier.current_log()
                    and "receiver site-1 added" in notifier.current_log()
                ),
                15,
                what="the notifier to pick both webhooks up",
            )
            messages, expected_site, expected_critical = [], set(), set()
            for i, (site, severity) in enumerate(
                [
                    ("site-1", "warning"),
                    ("site-2", "critical"),
                    ("site-1", "critical"),
                    ("site-2", "info"),
                    ("site-1", None),
                ]
            ):
                body = {
                    "alert_id": str(uuid.uuid4()),
                    "status": "open",
                    "site_id": site,
                    "device_id": f"d{i}",
                }
                if severity:
                    body["severity"] = severity
                messages.append((f"d{i}".encode(), orjson.dumps(body)))
                delivery = f"{body['alert_id']}:open"
                if site == "site-1":
                    expected_site.add(delivery)
                if severity == "critical":
                    expected_critical.add(delivery)
            await kafka_io.produce(pipeline.bootstrap, pipeline.topic_alerts, messages)
            await wait_for(
                lambda: site_rx.delivered() == expected_site and critical_rx.delivered() == expected_critical,
                20,
                what="each receiver's alerts",
            )

            # The dead receiver's deliveries are given up after WEBHOOK_MAX_AGE_S, and then left alone.
            async def expired() -> list[dict]:
                page = await api.get("/webhooks/deliveries", params={"state": "expired"})
                return page.json()["items"]

            gone = await wait_for(lambda: _all(expired, len(messages)), 30, what="expiry")
            assert all(d["receiver"].startswith("env-") for d in gone)
            # An unreachable receiver is probed with its oldest delivery, not hammered with each of them.
            assert sum(d["attempts"] for d in gone) >= 2
            pending = (await api.get("/webhooks/deliveries", params={"state": "pending"})).json()["items"]
            assert pending == []
            attempts_then = {d["delivery_id"]: d["attempts"] for d in gone}

            # Removed over the API: the notifier stops creating deliveries for it.
            assert (await api.delete("/webhooks/site-1")).status_code == 204
            await wait_for(
                lambda: "receiver site-1 removed" in notifier.current_log(), 15, what="the removal to arrive"
            )
            late = {"alert_id": str(uuid.uuid4()), "status": "open", "site_id": "site-1", "device_id": "d9"}
            await kafka_io.produce(pipeline.bootstrap, pipeline.topic_alerts, [(b"d9", orjson.dumps(late))])
            await wait_for(
                lambda: _expired_count(api, len(messages) + 1),
                30,
                what="the new alert's env delivery to expire",
            )
            await asyncio.sleep(2)
            assert site_rx.delivered() == expected_site  # nothing for the removed receiver
            now_expired = {d["delivery_id"]: d["attempts"] for d in await expired()}
            # Given up means given up: no attempt on an expired delivery since.
            assert {d: now_expired[d] for d in attempts_then} == attempts_then
            assert {d["receiver"] for d in await expired()} == {gone[0]["receiver"]}
        for receiver in (site_rx, critical_rx):
            assert_well_formed(receiver)
            assert receiver.repeats() == {}
    finally:
        await stop(notifier)
        await site_rx.stop()
        await critical_rx.stop()


async def _all(fetch, count: int):
    items = await fetch()
    return items if len(items) == count else None


async def _expired_count(api, count: int) -> bool:
    page = await api.get("/webhooks/deliveries", params={"state": "expired"})
    return len(page.json()["items"]) == count
