"""Malformed messages of every kind a confused device or a broken gateway sends (`Simulator(invalid_fraction=…)`):
each is made from a valid event, and the worker must dead-letter it with the matching reason (SPEC §6)."""

from __future__ import annotations

import random
from typing import Any

import orjson

from telemetrypulse.models import REQUIRED_FIELDS, SENSOR_UNITS
from telemetrypulse.simulator.clock import DAY_MS, format_ts

INVALID_KINDS = (
    "not_json",
    "json_array",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "bool_value",
    "nan_like",
    "out_of_range",
    "bad_unit",
    "bad_sensor_type",
    "bad_id",
    "future_ts",
    "ts_without_offset",
    "bad_ts",
)


def malformed(
    kind: str, event: dict[str, Any], rng: random.Random, *, last_ms: int, start_ms: int | None
) -> tuple[bytes, bytes]:
    """A malformed message of `kind` made from a valid `event` (left unchanged), and its key. `last_ms` is the event
    time of the latest reading, `start_ms` the simulated start (None: live event time)."""
    event = dict(event)
    key = event["device_id"].encode()
    sensor = event["sensor_type"]
    pick = rng.choice
    if kind == "not_json":
        good = orjson.dumps(event)
        value = pick(
            [
                good[: len(good) // 2],
                b"",
                b"hello from a confused device",
                b"\xff\xfe\x00garbage",
                good.replace(b'"', b"'"),
                good[:-1] + b",}",
            ]
        )
        return key, value
    if kind == "json_array":
        return key, orjson.dumps(pick([[event], [], [1, 2, 3]]))
    if kind == "not_an_object":
        return key, pick([b"42", b'"co2=812"', b"null", b"true"])
    if kind == "missing_field":
        del event[pick(REQUIRED_FIELDS)]
    elif kind == "wrong_type":
        name, bad = pick(
            [
                ("value", str(event["value"])),
                ("value", None),
                ("value", {"reading": event["value"]}),
                ("event_id", rng.getrandbits(64)),
                ("device_id", 1234),
                ("sensor_type", ["co2"]),
                ("ts_event", last_ms / 1000.0),
                ("unit", 7),
            ]
        )
        event[name] = bad
    elif kind == "bool_value":
        event["value"] = pick([True, False])
    elif kind == "nan_like":
        token = pick([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
        event["value"] = "__value__"
        return key, orjson.dumps(event).replace(b'"__value__"', token)
    elif kind == "out_of_range":
        event["value"] = pick(
            {
                "co2": [-1.0, 40000.5, 1e6],
                "temperature": [-50.5, 100.5, 250.0],
                "humidity": [-0.5, 100.5, 150.0],
                "occupancy": [-1, 2.5, 0.5],
            }[sensor]
        )
    elif kind == "bad_unit":
        wrong = [u for s, u in SENSOR_UNITS.items() if s != sensor]
        event["unit"] = pick([*wrong, "fahrenheit", "PPM", ""])
    elif kind == "bad_sensor_type":
        event["sensor_type"] = pick(["pressure", "CO2", "", "temp"])
    elif kind == "bad_id":
        name = pick(["device_id", "site_id", "zone_id"])
        event[name] = pick(["", "x" * 65, "site 01", "dev/01", "zone#2", "dév-01", "a\nb", "dev;drop"])
        if name == "device_id":
            key = event[name].encode()
    elif kind == "future_ts":
        if start_ms is None:
            # Live: a device clock minutes to days ahead of the worker's (SPEC §3 allows 5 min).
            ahead_ms = rng.randint(10 * 60_000, 2 * DAY_MS)
        else:
            # Simulated time may be anything relative to the worker's clock; a century ahead is always future.
            ahead_ms = 36_525 * DAY_MS + rng.randint(0, DAY_MS)
        event["ts_event"] = format_ts(last_ms + ahead_ms)
    elif kind == "ts_without_offset":
        stamp = format_ts(last_ms)[:-1]
        event["ts_event"] = pick([stamp, stamp.replace("T", " "), stamp[:19]])
    elif kind == "bad_ts":
        event["ts_event"] = pick(
            ["yesterday", "", "2024-13-45T25:61:00Z", "12/05/2024 10:00", "2024-05-01T10:00Z+"]
        )
    else:  # pragma: no cover - INVALID_KINDS and this chain are kept in step by the tests
        raise ValueError(kind)
    return key, orjson.dumps(event)
