"""Webhook rules without services: the signature a receiver verifies, which message becomes which
delivery for which receiver, the retry schedule, and an alert's timeline."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest

from telemetrypulse.api.lifecycle import timeline
from telemetrypulse.notify.service import select_alerts
from telemetrypulse.webhooks import (
    AlertMessage,
    Receiver,
    backoff_s,
    delivery_headers,
    env_receiver_name,
    env_receivers,
    parse_alert_message,
    parse_webhook_urls,
    plan_deliveries,
    redact_url,
    signature,
    verify_signature,
)

ALERT_ID = "4b1e6f53-3c1d-5c8e-9a57-0d6f0f3b7f21"


def message(**fields) -> bytes:
    base = {"alert_id": ALERT_ID, "status": "open", "site_id": "site-01", "device_id": "d1"}
    return orjson.dumps(base | fields)


def test_signature_is_hmac_sha256_of_the_exact_body():
    body = b'{"alert_id":"x","status":"open"}'
    expected = hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert signature(b"secret", body) == f"sha256={expected}"
    assert verify_signature(b"secret", body, f"sha256={expected}")
    assert not verify_signature(b"secret", body + b" ", f"sha256={expected}")  # a re-serialized body fails
    assert not verify_signature(b"other", body, f"sha256={expected}")
    assert not verify_signature(b"secret", body, None)


def test_headers_of_a_delivery():
    body = message(status="resolved")
    headers = delivery_headers(b"k", f"{ALERT_ID}:resolved", "resolved", body)
    assert headers == {
        "Content-Type": "application/json",
        "X-TelemetryPulse-Event": "alert.resolved",
        "X-TelemetryPulse-Delivery": f"{ALERT_ID}:resolved",
        "X-TelemetryPulse-Signature": signature(b"k", body),
    }


def test_alert_messages_are_read_and_their_bytes_kept():
    raw = message(severity="critical", alert_id=ALERT_ID.upper())
    parsed = parse_alert_message(raw)
    assert parsed == AlertMessage(ALERT_ID, "open", "site-01", "critical", raw)
    assert parsed.delivery_id == f"{ALERT_ID}:open"
    # Threshold alerts carry no severity yet: they are warnings (SPEC §9 defaults).
    assert parse_alert_message(message()).severity == "warning"
    assert parse_alert_message(message(severity="extreme")).severity == "warning"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (None, "no value"),
        (b"{", "not JSON"),
        (b"[1]", "not a JSON object"),
        (message(status="closed"), "status"),
        (message(alert_id="nope"), "alert_id"),
        (message(site_id=""), "site_id"),
    ],
)
def test_what_is_not_an_alert_message(raw, why):
    result = parse_alert_message(raw)
    assert isinstance(result, str) and why in result


def test_receivers_filter_by_site_and_minimum_severity():
    alerts = [
        parse_alert_message(message(alert_id=str(uuid.uuid4()), site_id=site, severity=severity))
        for site, severity in [("a", "info"), ("a", "warning"), ("b", "critical"), ("a", "critical")]
    ]
    everything = Receiver("all", "https://x.example/1")
    site_a_warning = Receiver("a-warn", "https://x.example/2", site_id="a", min_severity="warning")
    critical = Receiver("crit", "https://x.example/3", min_severity="critical")
    planned = plan_deliveries(alerts, [everything, site_a_warning, critical])
    got = [(p.receiver, alerts.index(p.alert)) for p in planned]
    # In message order, each message's receivers together: the outbox sends in this order.
    assert got == [
        ("all", 0),
        ("all", 1),
        ("a-warn", 1),
        ("all", 2),
        ("crit", 2),
        ("all", 3),
        ("a-warn", 3),
        ("crit", 3),
    ]


def test_webhook_urls():
    assert parse_webhook_urls(" https://a.example/x , http://b.example:8080/y?t=1,https://a.example/x,") == [
        "https://a.example/x",
        "http://b.example:8080/y?t=1",
    ]
    for bad in ("a.example/x", "https:///nohost", "https://a.example:99999/x", "mailto:x@y"):
        with pytest.raises(ValueError):
            parse_webhook_urls(bad)
    names = [r.name for r in env_receivers(["https://a.example/x", "http://b.example/y"])]
    assert names == [env_receiver_name("https://a.example/x"), env_receiver_name("http://b.example/y")]
    assert names[0].startswith("env-") and names[0] != names[1]
    assert (
        redact_url("https://hooks.example.com:8443/services/T0/B1/secret?x=1")
        == "https://hooks.example.com:8443/…"
    )
    assert "secret" not in repr(Receiver("n", "https://h.example/secret-token"))


def test_backoff_doubles_to_five_minutes_with_jitter():
    rng = random.Random(1)
    waits = [backoff_s(n, rng) for n in range(1, 13)]
    for n, wait in enumerate(waits, start=1):
        base = min(300.0, 2 ** (n - 1))
        assert 0.9 * base <= wait <= 1.1 * base


def test_select_alerts_skips_poison_and_messages_beyond_the_max_age():
    now_ms = 1_700_000_000_000
    records = [
        SimpleNamespace(value=message(), timestamp=now_ms - 1000, topic="t", partition=0, offset=0),
        SimpleNamespace(value=b"not json", timestamp=now_ms, topic="t", partition=0, offset=1),
        SimpleNamespace(
            value=message(status="resolved"), timestamp=now_ms - 90_000_000, topic="t", partition=0, offset=2
        ),
        SimpleNamespace(value=message(status="resolved"), timestamp=now_ms, topic="t", partition=0, offset=3),
    ]
    selected = select_alerts(records, now_ms, max_age_s=86400)
    assert [(a.status, a.body) for a in selected] == [
        ("open", records[0].value),
        ("resolved", records[3].value),
    ]


def test_timeline_orders_what_happened():
    t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    alert = {
        "alert_type": "CO2_HIGH",
        "value": 1042.0,
        "peak_value": 1180.5,
        "opened_at": t0,
        "resolved_at": t0 + timedelta(minutes=9),
    }
    ack = {"by": "alice", "at": t0 + timedelta(minutes=2), "note": "on it", "key_name": "ops"}
    notes = [{"by": "bob", "text": "window opened", "created_at": t0 + timedelta(minutes=5)}]
    deliveries = [
        {"receiver": "pager", "status": "open", "state": "delivered", "attempts": 3, "last_status_code": 204,
         "delivered_at": t0 + timedelta(seconds=4), "expired_at": None},
        {"receiver": "chat", "status": "resolved", "state": "expired", "attempts": 40, "last_status_code": 500,
         "delivered_at": None, "expired_at": t0 + timedelta(days=1)},
    ]  # fmt: skip
    entries = timeline(alert, ack, notes, deliveries)
    assert [(e["kind"], e["by"]) for e in entries] == [
        ("opened", None),
        ("delivered", "pager"),
        ("acknowledged", "alice"),
        ("note", "bob"),
        ("resolved", None),
        ("delivery_expired", "chat"),
    ]
    assert entries[1]["text"] == "alert.open delivered (HTTP 204, attempt 3)"
    assert entries[0]["text"] == "CO2_HIGH opened at 1042" and entries[4]["text"] == "resolved; peak 1180.5"
    # An event at the same instant as the opening still comes after it.
    same = timeline(dict(alert, resolved_at=None), dict(ack, at=t0), [], [])
    assert [e["kind"] for e in same] == ["opened", "acknowledged"]
