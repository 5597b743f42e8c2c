"""`POST /ingest` and `/ingest/batch` against the real broker: the worker's validation rules, per-item
errors by index, the exact bytes on the topic keyed by device_id, the API key, and Kafka being away."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from devkit import kafka_io
from telemetrypulse.models import Invalid, now_us, validate_event
from tests.api.conftest import api_settings, app_client, free_port

pytestmark = pytest.mark.integration


def event(**overrides) -> dict:
    body = {
        "event_id": str(uuid.uuid4()),
        "device_id": "dev-1",
        "site_id": "site-1",
        "zone_id": "zone-1",
        "sensor_type": "co2",
        "value": 640.5,
        "ts_event": datetime.now(UTC).isoformat(),
        "unit": "ppm",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.fixture(scope="module")
async def topic_settings(stack, api_dsn):
    settings = api_settings(stack, api_dsn)
    await kafka_io.create_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [settings.topic_events], 2)
    yield settings
    await kafka_io.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [settings.topic_events])


@pytest.fixture(scope="module")
async def ingest_client(topic_settings):
    async with app_client(topic_settings) as c:
        yield c


async def topic_messages(settings) -> list[tuple[bytes, bytes]]:
    records = await kafka_io.read_topic(settings.kafka_bootstrap_servers, settings.topic_events)
    return [(r.key, r.value) for r in records]


async def test_one_event_is_produced_as_sent(ingest_client, topic_settings):
    body = orjson.dumps(event(device_id="dev-single"))

    response = await ingest_client.post("/ingest", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "event_ids": [orjson.loads(body)["event_id"]]}
    assert (b"dev-single", body) in await topic_messages(topic_settings)


async def test_batch_reports_bad_items_by_index_and_produces_the_rest(ingest_client, topic_settings):
    items = [event(device_id=f"dev-b{i}", value=400 + i) for i in range(5)]
    items.insert(1, event(value=50000))  # co2 out of range
    items.insert(4, "not an object")
    items.append(event(event_id=...))  # missing field

    response = await ingest_client.post("/ingest/batch", json=items)

    assert response.status_code == 202, response.text
    body = response.json()
    valid = [item for i, item in enumerate(items) if i not in (1, 4, 7)]
    assert body["accepted"] == 5 and body["rejected"] == 3
    assert body["event_ids"] == [item["event_id"] for item in valid]
    assert [(e["index"], e["error"]) for e in body["errors"]] == [
        (1, "invalid_field"),
        (4, "not_an_object"),
        (7, "missing_field"),
    ]
    on_topic = await topic_messages(topic_settings)
    for item in valid:
        assert (item["device_id"].encode(), orjson.dumps(item)) in on_topic


SINGLE_REFUSALS = [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (orjson.dumps(event(ts_event=...)), "missing_field"),
    (orjson.dumps(event(event_id="nope")), "invalid_field"),
    (orjson.dumps(event(device_id="has space")), "invalid_field"),
    (orjson.dumps(event(sensor_type="co2", unit="celsius")), "invalid_field"),
    (orjson.dumps(event(sensor_type="occupancy", value=1.5, unit=None)), "invalid_field"),
    (orjson.dumps(event(value=True)), "invalid_field"),
    (b'{"event_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "device_id": "d", "site_id": "s", "zone_id": "z",'
     b' "sensor_type": "co2", "value": NaN, "ts_event": "2024-05-01T12:00:00Z"}', "invalid_field"),
    (orjson.dumps(event(ts_event="2024-05-01T12:00:00")), "invalid_field"),
    (orjson.dumps(event(ts_event=(datetime.now(UTC) + timedelta(minutes=10)).isoformat())), "future_timestamp"),
]  # fmt: skip


@pytest.mark.parametrize("raw,code", SINGLE_REFUSALS, ids=[c for _, c in SINGLE_REFUSALS])
async def test_invalid_event_gets_the_workers_reason(ingest_client, raw, code):
    worker_says = validate_event(raw, now_us())
    assert isinstance(worker_says, Invalid) and worker_says.error == code

    response = await ingest_client.post("/ingest", content=raw)

    assert response.status_code == 422
    assert response.json()["error"] == code
    assert response.json()["detail"] == worker_says.detail


@pytest.mark.parametrize(
    "raw,words",
    [
        (b"", ["not valid JSON"]),
        (b"{}", ["JSON array"]),
        (b"[]", ["0 items"]),
        (orjson.dumps([event()] * 1001), ["1001 items"]),
        (orjson.dumps([event(value=-1), 7]), ["no valid event", "2 rejected"]),
    ],
)
async def test_bad_batches_are_422(ingest_client, raw, words):
    response = await ingest_client.post("/ingest/batch", content=raw)

    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.json()["detail"]


async def test_all_invalid_batch_lists_every_item(ingest_client):
    response = await ingest_client.post("/ingest/batch", json=[event(value=-1), 7])
    assert [e["location"] for e in response.json()["errors"]] == ["body.0", "body.1"]


async def test_oversized_bodies_are_413(ingest_client):
    big = orjson.dumps(event(padding="x" * 70_000))
    assert (await ingest_client.post("/ingest", content=big)).status_code == 413
    huge = b"[" + b",".join([big] * 70) + b"]"
    assert (await ingest_client.post("/ingest/batch", content=huge)).status_code == 413
    one_big_item = await ingest_client.post("/ingest/batch", json=[event(), event(padding="x" * 70_000)])
    assert one_big_item.status_code == 202
    assert [(e["index"], e["error"]) for e in one_big_item.json()["errors"]] == [(1, "too_large")]


async def test_api_key_guards_writes_only(stack, api_dsn, topic_settings):
    settings = api_settings(stack, api_dsn, api_key="s3cret-key", topic_events=topic_settings.topic_events)
    async with app_client(settings) as c:
        body = orjson.dumps(event())
        missing = await c.post("/ingest", content=body)
        wrong = await c.post("/ingest/batch", content=b"[" + body + b"]", headers={"X-API-Key": "s3cret-kez"})
        right = await c.post("/ingest", content=body, headers={"X-API-Key": "s3cret-key"})
        read = await c.get("/alerts")

    assert missing.status_code == 401 and missing.json()["detail"] == "X-API-Key header required"
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid X-API-Key"
    assert right.status_code == 202
    assert read.status_code == 200


async def test_kafka_away_means_503_not_500(stack, api_dsn):
    settings = api_settings(stack, api_dsn, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    async with app_client(settings) as c:
        started = time.monotonic()
        ready = await c.get("/health/ready")
        ready_s = time.monotonic() - started
        ingest = await c.post("/ingest", content=orjson.dumps(event()))
        reads = await c.get("/sites")

    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"]["ok"] is True
    assert ready.json()["checks"]["kafka"]["ok"] is False
    assert ready_s < 5, "readiness must answer quickly while Kafka is away"
    assert ingest.status_code == 503 and ingest.json()["error"] == "kafka_unavailable"
    assert ingest.headers["retry-after"] == "5"
    assert reads.status_code == 200
