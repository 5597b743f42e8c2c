"""The whole lifecycle on the real pipeline: readings → the worker opens an alert → an operator acknowledges
and annotates it over the API → the worker resolves it → both survive, and the notifier delivered the
open and the resolve, signed, once each — also when the readings and the alert messages come again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devkit import kafka_io
from devkit.waiting import wait_for
from tests.api.conftest import api_settings, app_client
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

OPERATOR = "op-e2e-4c7d9a10"
SECRET = "whsec-e2e-5b8e"


def reading(device: str, value: float, ts: datetime) -> tuple[bytes, bytes]:
    event = {
        "event_id": str(uuid.uuid4()),
        "device_id": device,
        "site_id": "hq",
        "zone_id": "lab",
        "sensor_type": "co2",
        "value": value,
        "ts_event": ts.isoformat(),
    }
    return device.encode(), orjson.dumps(event)


async def test_acknowledgement_and_notes_survive_the_workers_resolve_and_webhooks_follow(pipeline):
    receiver = await WebhookReceiver(SECRET.encode(), "e2e").start()
    worker = pipeline.add_worker()
    notifier = pipeline.add_notifier(WEBHOOK_URLS=receiver.url, WEBHOOK_SECRET=SECRET, WEBHOOK_POLL_S="1")
    worker.start()
    notifier.start()
    device = f"dev-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    opening = [reading(device, 800, now), reading(device, 1240, now + timedelta(seconds=10))]
    closing = [
        reading(device, 1300, now + timedelta(seconds=20)),
        reading(device, 900, now + timedelta(seconds=30)),
    ]
    settings = api_settings(
        {"KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap},
        pipeline.dsn,
        api_keys=f"ops:{OPERATOR}:operate+read",
        topic_events=pipeline.topic_events,
        topic_alerts=pipeline.topic_alerts,
        app_id=pipeline.app_id,
    )
    try:
        await worker.wait_ready()
        await notifier.wait_ready(60)
        async with app_client(settings) as api:
            api.headers["X-API-Key"] = OPERATOR

            async def alerts(**params) -> list[dict]:
                response = await api.get("/alerts", params={"device_id": device, **params})
                assert response.status_code == 200, response.text
                return response.json()["items"]

            await pipeline.produce(opening)
            (alert,) = await wait_for(lambda: alerts(status="open"), 90, what="the worker to open the alert")
            path = f"/alerts/{alert['alert_id']}"
            ack = await api.post(f"{path}/ack", json={"by": "alice", "note": "ventilation on"})
            note = await api.post(f"{path}/notes", json={"by": "bob", "text": "window opened too"})
            assert ack.status_code == 200 and note.status_code == 201
            acknowledgement = ack.json()["acknowledgement"]
            assert await alerts(acknowledged="true") == [
                dict(
                    alert,
                    **{k: ack.json()[k] for k in ("acknowledged", "acknowledged_by", "acknowledged_at")},
                )
            ]

            await pipeline.produce(closing)
            await wait_for(lambda: alerts(status="resolved"), 90, what="the worker to resolve the alert")
            ids = {f"{alert['alert_id']}:open", f"{alert['alert_id']}:resolved"}
            await wait_for(lambda: receiver.delivered() == ids, 60, what="both deliveries")

            # Everything again: the same readings (duplicates) and the same alert messages (a replay).
            messages = await kafka_io.read_topic(pipeline.bootstrap, pipeline.topic_alerts)
            await pipeline.produce(opening + closing)
            await kafka_io.produce(
                pipeline.bootstrap, pipeline.topic_alerts, [(m.key, m.value) for m in messages]
            )
            await pipeline.caught_up()
            repeat = await api.post(f"{path}/ack", json={"by": "carol"})
            assert repeat.json()["acknowledgement"] == acknowledgement
            await asyncio.sleep(3)  # time for a wrong re-delivery to show

            detail = (await api.get(path)).json()
            assert detail["status"] == "resolved" and detail["peak_value"] == 1300
            assert detail["acknowledgement"] == acknowledgement
            assert [(n["by"], n["text"]) for n in detail["notes"]] == [("bob", "window opened too")]
            kinds = [e["kind"] for e in detail["timeline"]]
            assert kinds[0] == "opened" and kinds.count("delivered") == 2
            assert {"acknowledged", "note", "resolved"} <= set(kinds)
            assert len(messages) == 2 and {orjson.loads(m.value)["status"] for m in messages} == {
                "open",
                "resolved",
            }
        assert receiver.repeats() == {} and receiver.order_violations() == []
        assert all(r.signature_ok for r in receiver.requests)
        assert [r.body["status"] for r in receiver.requests] == ["open", "resolved"]
    finally:
        await asyncio.to_thread(pipeline.stop_all)
        await receiver.stop()
