"""Scoped keys on every route (SPEC §10), against the app on a real database: 401 without a key or with an
unknown one, 403 with a key that lacks the scope, through with the right scope or admin; reads open
until a key has the read scope. Clear JSON bodies, never a 500, and no secret in any log line, error
body or /metrics."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.api.conftest import api_settings, app_client

pytestmark = pytest.mark.integration

SECRETS = {
    "reader": "rd-6f1c2a9e-secret",
    "ingester": "in-0b7d44c1-secret",
    "operator": "op-93aa0e5b-secret",
    "admin": "ad-5e20c8d7-secret",
    "legacy": "lg-c1f0aa39-secret",
}
API_KEYS = ",".join(
    f"{name}:{SECRETS[name]}:{scope}"
    for name, scope in [
        ("reader", "read"),
        ("ingester", "ingest"),
        ("operator", "operate"),
        ("admin", "admin"),
    ]
)
UNKNOWN = "zz-not-a-configured-key"
EVENT = {
    "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "device_id": "dev-1",
    "site_id": "s",
    "zone_id": "z",
    "sensor_type": "co2",
    "value": 500,
    "ts_event": "2024-05-01T12:00:00Z",
}


def routes(alert_id: str) -> list[tuple[str, str, str, dict]]:
    """(scope, method, path, request kwargs) for every guarded route."""
    return [
        ("read", "GET", "/sites", {}),
        ("read", "GET", "/devices", {}),
        ("read", "GET", "/devices/site-a.z1.d0", {}),
        ("read", "GET", "/status/live", {}),
        ("read", "GET", "/trends", {}),
        ("read", "GET", "/trends", {"params": {"format": "csv"}}),
        ("read", "GET", "/devices/site-a.z1.d0/readings", {"params": {"start": "2024-05-01T12:00:00Z"}}),
        (
            "read",
            "GET",
            "/devices/site-a.z1.d0/readings",
            {"params": {"start": "2024-05-01T12:00:00Z", "format": "csv"}},
        ),
        ("read", "GET", "/alerts", {"params": {"format": "csv"}}),
        ("read", "GET", "/heatmap", {"params": {"sensor_type": "co2"}}),
        ("read", "GET", "/alerts", {}),
        ("read", "GET", f"/alerts/{alert_id}", {}),
        ("ingest", "POST", "/ingest", {"json": EVENT}),
        ("ingest", "POST", "/ingest/batch", {"json": [EVENT]}),
        ("operate", "POST", f"/alerts/{alert_id}/ack", {"json": {"by": "alice"}}),
        ("operate", "POST", f"/alerts/{alert_id}/notes", {"json": {"by": "alice", "text": "looking"}}),
        ("admin", "GET", "/webhooks", {}),
        ("admin", "PUT", "/webhooks/pager", {"json": {"url": "https://hooks.example.com/p"}}),
        ("admin", "GET", "/webhooks/pager", {}),
        ("admin", "GET", "/webhooks/deliveries", {}),
        ("admin", "DELETE", "/webhooks/gone", {}),
        ("admin", "GET", "/rules", {}),
        ("admin", "GET", "/rules/default-co2-high", {}),
        ("admin", "DELETE", "/rules/gone", {}),  # 404 once through: nothing is written to Kafka here
    ]


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured_logs():
    handler = Captured()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def call(client, method: str, path: str, key: str | None, kwargs: dict):
    headers = {"X-API-Key": key} if key is not None else {}
    return await client.request(method, path, headers=headers, **kwargs)


async def test_every_guarded_route_by_scope(stack, api_dsn, dataset, topic_events, captured_logs):
    alert_id = str(dataset.alerts[0]["alert_id"])
    settings = api_settings(
        stack, api_dsn, api_keys=API_KEYS, api_key=SECRETS["legacy"], topic_events=topic_events
    )
    seen_bodies: list[str] = []
    async with app_client(settings) as client:
        for scope, method, path, kwargs in routes(alert_id):
            what = f"{method} {path}"
            missing = await call(client, method, path, None, kwargs)
            unknown = await call(client, method, path, UNKNOWN, kwargs)
            assert (missing.status_code, missing.json()["error"]) == (401, "unauthorized"), what
            assert "X-API-Key header required" in missing.json()["detail"], what
            assert missing.headers["www-authenticate"] == "ApiKey"
            assert (unknown.status_code, unknown.json()["detail"]) == (401, "invalid X-API-Key"), what
            holder = {"read": "reader", "ingest": "ingester", "operate": "operator", "admin": "admin"}[scope]
            for name, secret in SECRETS.items():
                response = await call(client, method, path, secret, kwargs)
                seen_bodies.append(response.text)
                allowed = name in (holder, "admin") or (name == "legacy" and scope == "ingest")
                if allowed:
                    assert response.status_code not in (401, 403, 500), (what, name, response.text)
                else:
                    assert response.status_code == 403, (what, name, response.text)
                    body = response.json()
                    assert body["error"] == "forbidden" and f"lacks scope {scope}" in body["detail"]
                    assert repr(name if name != "legacy" else "API_KEY") in body["detail"]
            seen_bodies += [missing.text, unknown.text]
        # The stream is guarded before it starts: a refusal is a plain JSON 401/403.
        assert (await client.get("/alerts/stream")).status_code == 401
        assert (
            await client.get("/alerts/stream", headers={"X-API-Key": SECRETS["ingester"]})
        ).status_code == 403
        # Open routes stay open: health, metrics, the dashboard page, the API document.
        for path in ("/health/live", "/metrics", "/", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        metrics_text = (await client.get("/metrics")).text
        openapi = (await client.get("/openapi.json")).text

    everything = "\n".join([*captured_logs, *seen_bodies, metrics_text, openapi])
    for secret in [*SECRETS.values(), UNKNOWN]:
        assert secret not in everything
    assert any("API keys:" in line for line in captured_logs)  # the start line names keys, not secrets


async def test_reads_and_ingest_open_until_a_key_has_that_scope(stack, api_dsn, dataset, topic_events):
    alert_id = str(dataset.alerts[0]["alert_id"])
    admin_only = api_settings(
        stack, api_dsn, api_keys=f"admin:{SECRETS['admin']}:admin", topic_events=topic_events
    )
    async with app_client(admin_only) as client:
        assert (await client.get("/alerts")).status_code == 200
        assert (await client.get(f"/alerts/{alert_id}")).status_code == 200
        assert (await client.post("/ingest", json=dict(EVENT, event_id=str(uuid.uuid4())))).status_code == 202
        # Operating and administering are never open.
        ack = await client.post(f"/alerts/{alert_id}/ack", json={"by": "x"})
        assert ack.status_code == 401 and "needs scope operate" in ack.json()["detail"]
        assert (await client.get("/webhooks")).status_code == 401

    nothing = api_settings(stack, api_dsn, topic_events=topic_events)
    async with app_client(nothing) as client:
        assert (await client.get("/sites")).status_code == 200
        refused = await client.post(f"/alerts/{alert_id}/notes", json={"by": "x", "text": "y"})
        assert refused.status_code == 401
        assert "has none configured (API_KEYS)" in refused.json()["detail"]


@pytest.fixture(scope="module")
async def topic_events(stack):
    from devkit import kafka_io

    name = f"test-api-{uuid.uuid4().hex[:8]}.events"
    await kafka_io.create_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [name], 1)
    yield name
    await kafka_io.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [name])
