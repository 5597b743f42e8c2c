"""Event validation (SPEC §3), dead-letter records (SPEC §6) and time helpers.

Pure functions: no Kafka, no database. The worker and `POST /ingest` share `validate_event`, so an
event the API accepts is one the worker accepts.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

SENSOR_UNITS = {"co2": "ppm", "temperature": "celsius", "humidity": "percent", "occupancy": "count"}
SENSOR_RANGES = {"co2": (0.0, 40000.0), "temperature": (-50.0, 100.0), "humidity": (0.0, 100.0)}
REQUIRED_FIELDS = ("event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "ts_event")
ID_FIELDS = ("device_id", "site_id", "zone_id")
MAX_FUTURE_US = 5 * 60 * 1_000_000

# fullmatch with \Z semantics: `$` would accept a trailing newline.
ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_ID_RE = re.compile(ID_PATTERN)
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


@dataclass(slots=True, frozen=True)
class Event:
    """A valid reading. `event_id` is the canonical lower-case UUID; times are µs since the epoch (UTC)."""

    event_id: str
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: str
    value: float
    ts_event_us: int
    unit: str | None

    def to_dict(self) -> dict:
        return {
            "event_id": self.event_id,
            "device_id": self.device_id,
            "site_id": self.site_id,
            "zone_id": self.zone_id,
            "sensor_type": self.sensor_type,
            "value": self.value,
            "ts_event": iso_utc(self.ts_event_us),
            "unit": self.unit,
        }


@dataclass(slots=True, frozen=True)
class Invalid:
    """Why an input is not an event: `error` is the machine-readable reason of SPEC §6."""

    error: str
    detail: str


def is_identifier(text: str) -> bool:
    """A device, site or zone id of SPEC §3: 1-64 chars of [A-Za-z0-9._-]."""
    return _ID_RE.fullmatch(text) is not None


def now_us() -> int:
    return (datetime.now(UTC) - _EPOCH) // _ONE_US


def to_us(moment: datetime) -> int:
    """Exact integer µs since the epoch (no float rounding at window boundaries)."""
    return (moment - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def iso_utc(us: int) -> str:
    """ISO-8601 UTC with `Z`, as precise as the value needs (s, ms or µs)."""
    moment = from_us(us)
    if us % 1_000_000 == 0:
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    elif us % 1000 == 0:
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    else:
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + "Z"


def _rfc3339_upper(text: str) -> str:
    """RFC 3339, the ISO-8601 profile of the internet, allows a lower-case "t" separator and "z"."""
    if text.endswith("z"):
        text = text[:-1] + "Z"
    date_part, sep, rest = text.partition("t")
    return f"{date_part}T{rest}" if sep and date_part[:4].isdigit() and len(date_part) in (8, 10) else text


def parse_timestamp_us(text: object) -> int | str:
    """µs since the epoch for an ISO-8601 time with an offset, else the reason it is not one."""
    if not isinstance(text, str):
        return f"must be an ISO-8601 string, got {type(text).__name__}"
    try:
        moment = datetime.fromisoformat(_rfc3339_upper(text))
    except ValueError:
        return f"not an ISO-8601 date-time: {text[:64]!r}"
    if moment.tzinfo is None or moment.utcoffset() is None:
        return f"has no UTC offset (add Z or ±hh:mm): {text[:64]!r}"
    try:
        return to_us(moment)
    except OverflowError:
        return f"out of range: {text[:64]!r}"


def _loads(raw: bytes) -> object | Invalid:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson rejects what the JSON grammar rejects, including NaN and numbers that overflow to
    # infinity. Python's parser reads those, so such an object is judged field by field
    # ("value must be finite") rather than dismissed as invalid JSON.
    # Decoded as strict UTF-8 first: given bytes, json.loads would also read UTF-16/32 and a byte-order mark,
    # and SPEC §3 says a value is UTF-8.
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        return Invalid("invalid_json", f"not valid UTF-8 JSON: {e}")


def _check_value(sensor: str, value: object) -> float | str:
    # bool is a subclass of int in Python, but `true` is not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {type(value).__name__}"
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond any float
        return "must be a finite number"
    if not math.isfinite(number):
        return "must be a finite number"
    if sensor == "occupancy":
        if not number.is_integer() or number < 0:
            return f"occupancy must be an integer >= 0, got {value!r}"
        return number
    low, high = SENSOR_RANGES[sensor]
    if not low <= number <= high:
        return f"{sensor} must be within {low:g}..{high:g}, got {value!r}"
    return number


def validate_payload(payload: object, now: int) -> Event | Invalid:
    """Validate a decoded JSON value against SPEC §3; `now` is the validator's clock in µs."""
    if not isinstance(payload, dict):
        return Invalid("not_an_object", f"event must be a JSON object, got {type(payload).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in payload:
            return Invalid("missing_field", f"field {name!r} is required")

    event_id = payload["event_id"]
    if not isinstance(event_id, str) or not _UUID_RE.fullmatch(event_id):
        return Invalid("invalid_field", f"field 'event_id' must be a UUID string, got {event_id!r:.80}")
    for name in ID_FIELDS:
        ident = payload[name]
        if not isinstance(ident, str) or not is_identifier(ident):
            return Invalid(
                "invalid_field", f"field {name!r} must be 1-64 chars of [A-Za-z0-9._-], got {ident!r:.80}"
            )
    sensor = payload["sensor_type"]
    if not isinstance(sensor, str) or sensor not in SENSOR_UNITS:
        return Invalid(
            "invalid_field", f"field 'sensor_type' must be one of {sorted(SENSOR_UNITS)}, got {sensor!r:.40}"
        )
    value = _check_value(sensor, payload["value"])
    if isinstance(value, str):
        return Invalid("invalid_field", f"field 'value' {value}")
    ts_us = parse_timestamp_us(payload["ts_event"])
    if isinstance(ts_us, str):
        return Invalid("invalid_field", f"field 'ts_event' {ts_us}")
    if ts_us - now > MAX_FUTURE_US:
        return Invalid(
            "future_timestamp",
            f"ts_event {payload['ts_event']!r} is {(ts_us - now) / 1e6:.0f}s ahead of the worker clock (max 300s)",
        )
    unit = payload.get("unit")
    if unit is not None and unit != SENSOR_UNITS[sensor]:
        return Invalid(
            "invalid_field", f"field 'unit' must be {SENSOR_UNITS[sensor]!r} for {sensor}, got {unit!r:.40}"
        )
    return Event(
        event_id.lower(),
        payload["device_id"],
        payload["site_id"],
        payload["zone_id"],
        sensor,
        value,
        ts_us,
        unit,
    )


def validate_event(raw: bytes, now: int) -> Event | Invalid:
    """Validate one message value (bytes as they came from Kafka or HTTP)."""
    payload = _loads(raw)
    if isinstance(payload, Invalid):
        return payload
    return validate_payload(payload, now)


# A dead letter must fit the DLQ topic, and base64 makes a payload a third larger than the message it came
# from: a message close to Kafka's default 1 MiB limit (what managed clusters keep) gave a dead letter the
# broker rejects, and the worker retried that batch forever — one bad message stopped every partition
# (found by tests/faults F7). Bytes beyond these limits are cut, and the record says so.
DLQ_MAX_PAYLOAD_BYTES = 256 * 1024
DLQ_MAX_KEY_BYTES = 1024


def dlq_record(
    invalid: Invalid,
    *,
    source_topic: str,
    source_partition: int | None,
    source_offset: int | None,
    key: bytes | None,
    payload: bytes | None,
    received_at_us: int,
) -> bytes:
    """The dead-letter message of SPEC §6: the original bytes kept (base64), up to DLQ_MAX_PAYLOAD_BYTES;
    `truncated` says whether key or payload were cut, `payload_size` is the original length."""
    truncated = (payload is not None and len(payload) > DLQ_MAX_PAYLOAD_BYTES) or (
        key is not None and len(key) > DLQ_MAX_KEY_BYTES
    )
    return orjson.dumps(
        {
            "error": invalid.error,
            "detail": invalid.detail[:2000],
            "source_topic": source_topic,
            "source_partition": source_partition,
            "source_offset": source_offset,
            "key": None if key is None else key[:DLQ_MAX_KEY_BYTES].decode("utf-8", "replace"),
            "payload": None
            if payload is None
            else base64.b64encode(payload[:DLQ_MAX_PAYLOAD_BYTES]).decode("ascii"),
            "payload_size": None if payload is None else len(payload),
            "truncated": truncated,
            "received_at": iso_utc(received_at_us),
        }
    )
