"""Every validation rule of SPEC §3, checked on bytes as they arrive from Kafka."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from telemetrypulse.models import Event, Invalid, dlq_record, to_us, validate_event

NOW = to_us(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))


def make(**overrides) -> dict:
    event = {
        "event_id": "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b",
        "device_id": "site-01.zone-01.dev-01",
        "site_id": "site-01",
        "zone_id": "zone-01",
        "sensor_type": "co2",
        "value": 612.5,
        "ts_event": "2026-11-26T11:59:00Z",
        "unit": "ppm",
    }
    event.update(overrides)
    return event


def check(payload) -> Event | Invalid:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return validate_event(raw, NOW)


def error_of(payload) -> str:
    result = check(payload)
    assert isinstance(result, Invalid), f"expected invalid, got {result}"
    return result.error


def test_a_valid_event_is_parsed_exactly():
    event = check(make())
    assert isinstance(event, Event)
    assert event.value == 612.5
    assert event.ts_event_us == to_us(datetime(2026, 11, 26, 11, 59, tzinfo=UTC))
    assert event.unit == "ppm"


def test_unknown_extra_fields_are_ignored_and_unit_is_optional():
    payload = make(firmware="1.2.3", extra={"a": 1})
    del payload["unit"]
    assert isinstance(check(payload), Event)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", "invalid_json"),
        (b'{"event_id": ', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
    ],
)
def test_not_an_event_at_all(raw, error):
    assert error_of(raw) == error


@pytest.mark.parametrize(
    "name", ["event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "ts_event"]
)
def test_every_required_field_missing(name):
    payload = make()
    del payload[name]
    assert error_of(payload) == "missing_field"


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_id": "not-a-uuid"},
        {"event_id": 12345},
        {"event_id": None},
        {"device_id": ""},
        {"device_id": "x" * 65},
        {"device_id": "dev 01"},
        {"device_id": "dev/01"},
        {"device_id": "dev-01\n"},
        {"site_id": "sité"},
        {"zone_id": 7},
        {"sensor_type": "pressure"},
        {"sensor_type": "CO2"},
        {"value": True},
        {"value": False},
        {"value": "612"},
        {"value": None},
        {"value": [1]},
        {"value": -0.1},
        {"value": 40000.01},
        {"sensor_type": "temperature", "value": -50.5, "unit": "celsius"},
        {"sensor_type": "temperature", "value": 100.1, "unit": "celsius"},
        {"sensor_type": "humidity", "value": 100.5, "unit": "percent"},
        {"sensor_type": "humidity", "value": -1, "unit": "percent"},
        {"sensor_type": "occupancy", "value": 2.5, "unit": "count"},
        {"sensor_type": "occupancy", "value": -1, "unit": "count"},
        {"ts_event": "2026-11-26T11:59:00"},  # no offset
        {"ts_event": "2026-11-26"},
        {"ts_event": "yesterday"},
        {"ts_event": 1764158340},
        {"ts_event": "2026-11-26T25:00:00Z"},
        {"unit": "celsius"},
        {"unit": "PPM"},
        {"unit": 5},
    ],
)
def test_wrong_fields_are_invalid_field(overrides):
    assert error_of(make(**overrides)) == "invalid_field"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" + b"0" * 400])
def test_non_finite_numbers_are_invalid_values(token):
    raw = orjson.dumps(make(value=0)).replace(b'"value":0', b'"value":' + token)
    assert error_of(raw) == "invalid_field"


def test_boundaries_of_ranges_are_inclusive():
    assert isinstance(check(make(value=0)), Event)
    assert isinstance(check(make(value=40000)), Event)
    assert isinstance(check(make(sensor_type="temperature", value=-50, unit="celsius")), Event)
    assert isinstance(check(make(sensor_type="temperature", value=100, unit="celsius")), Event)
    assert isinstance(check(make(sensor_type="humidity", value=100, unit="percent")), Event)
    assert isinstance(check(make(sensor_type="occupancy", value=0, unit="count")), Event)
    assert isinstance(check(make(sensor_type="occupancy", value=3.0, unit="count")), Event)


def test_offsets_other_than_z_give_the_same_instant():
    zulu = check(make(ts_event="2026-11-26T06:30:00Z"))
    india = check(make(ts_event="2026-11-26T12:00:00+05:30"))
    pacific = check(make(ts_event="2026-11-25T22:30:00.000-08:00"))
    assert zulu.ts_event_us == india.ts_event_us == pacific.ts_event_us


def test_rfc3339_forms_and_sub_microsecond_digits():
    zulu = check(make(ts_event="2026-11-26T06:30:00Z")).ts_event_us
    assert check(make(ts_event="2026-11-26t06:30:00z")).ts_event_us == zulu  # RFC 3339 lower case
    assert check(make(ts_event="2026-11-26T06:30:00.000000999Z")).ts_event_us == zulu  # ns cut to µs
    assert check(make(ts_event="2026-11-26T07:30:00+0100")).ts_event_us == zulu


def test_future_limit_is_five_minutes_ahead_of_the_clock():
    at_limit = datetime(2026, 11, 26, 12, 5, tzinfo=UTC).isoformat()
    past_limit = (datetime(2026, 11, 26, 12, 5, tzinfo=UTC) + timedelta(microseconds=1)).isoformat()
    assert isinstance(check(make(ts_event=at_limit)), Event)
    assert error_of(make(ts_event=past_limit)) == "future_timestamp"
    assert error_of(make(ts_event="2030-01-01T00:00:00+09:00")) == "future_timestamp"


def test_event_id_is_canonicalised_to_lower_case():
    event = check(make(event_id="5B8F2A8E-3C6D-4F5E-9A7B-1C2D3E4F5A6B"))
    assert event.event_id == "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b"


def test_dead_letter_record_keeps_the_original_bytes():
    raw = b"\x00garbage"
    invalid = check(raw)
    record = orjson.loads(
        dlq_record(
            invalid,
            source_topic="telemetry.events",
            source_partition=3,
            source_offset=17,
            key=b"dev-1",
            payload=raw,
            received_at_us=NOW,
        )
    )
    assert record["error"] == "invalid_json"
    assert record["detail"]
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "telemetry.events",
        3,
        17,
    )
    assert record["key"] == "dev-1"
    assert base64.b64decode(record["payload"]) == raw
    assert record["received_at"] == "2026-11-26T12:00:00Z"
