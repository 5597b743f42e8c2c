"""The simulator's generation side, no services: determinism, SPEC §3 validity, realism, anomalies, bad input."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise

import pytest

from telemetrypulse import simulator as sim_module
from telemetrypulse.simulator import (
    DUPLICATE,
    INVALID_KINDS,
    VALID,
    Simulator,
    Topology,
    format_ts,
    generate_events,
    parse_start,
    uuid4_from_bits,
)

START = datetime(2024, 5, 6, 0, 0, tzinfo=UTC)  # a Monday
START_MS = int(START.timestamp() * 1000)
NOW_MS = int(datetime.now(UTC).timestamp() * 1000)

# SPEC §3 and §5, written out again here on purpose: the test must not trust the project's own validator.
ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TS_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
UNIT = {"co2": "ppm", "temperature": "celsius", "humidity": "percent", "occupancy": "count"}
RANGE = {"co2": (0, 40000), "temperature": (-50, 100), "humidity": (0, 100), "occupancy": (0, math.inf)}
OPEN_RESOLVE = {"co2": (1000, 950), "temperature": (30, 29), "humidity": (80, 77)}


def spec_violation(raw: bytes, now_ms: int = NOW_MS) -> str | None:
    """Why `raw` breaks SPEC §3, or None when it is a valid event."""
    try:
        event = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "not json"
    if not isinstance(event, dict):
        return "not an object"
    for name in ("event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "ts_event"):
        if name not in event:
            return f"missing {name}"
    if not isinstance(event["event_id"], str):
        return "event_id type"
    try:
        uuid.UUID(event["event_id"])
    except ValueError:
        return "event_id not a uuid"
    for name in ("device_id", "site_id", "zone_id"):
        if not isinstance(event[name], str) or not ID.fullmatch(event[name]):
            return f"bad {name}"
    sensor = event["sensor_type"]
    if not isinstance(sensor, str) or sensor not in UNIT:
        return "bad sensor_type"
    value = event["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "value type"
    if not math.isfinite(value):
        return "value not finite"
    lo, hi = RANGE[sensor]
    if not lo <= value <= hi:
        return "value out of range"
    if sensor == "occupancy" and not isinstance(value, int):
        return "occupancy not an integer"
    ts = event["ts_event"]
    if not isinstance(ts, str):
        return "ts type"
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return "ts not iso"
    if moment.tzinfo is None:
        return "ts without offset"
    if moment.timestamp() * 1000 > now_ms + 5 * 60_000:
        return "ts in the future"
    if "unit" in event and event["unit"] != UNIT[sensor]:
        return "bad unit"
    return None


def take(sim: Simulator, n: int) -> list[tuple[bytes, bytes, str]]:
    return list(islice(sim.messages(), n))


def decoded(messages) -> list[dict]:
    return [json.loads(value) for _key, value, kind in messages if kind == VALID]


def ts_ms(event: dict) -> int:
    return int(datetime.fromisoformat(event["ts_event"]).timestamp() * 1000)


def test_same_seed_gives_the_same_messages_byte_for_byte():
    options = dict(start=START, duplicate_fraction=0.05, invalid_fraction=0.05)
    first = take(Simulator(seed=42, **options), 5000)
    assert first == take(Simulator(seed=42, **options), 5000)
    assert first != take(Simulator(seed=43, **options), 5000)
    assert [v for _, v in generate_events(2000, seed=42, start=START)] == [
        v for _, v in generate_events(2000, seed=42, start=START.isoformat())
    ]


def test_the_same_seed_over_another_period_does_not_reuse_event_ids():
    ids_a = {json.loads(v)["event_id"] for _, v in generate_events(2000, seed=1, start=START)}
    ids_b = {
        json.loads(v)["event_id"] for _, v in generate_events(2000, seed=1, start=START + timedelta(days=1))
    }
    assert not ids_a & ids_b


def test_uuid_helper_matches_the_uuid_module():
    import random

    rng = random.Random(5)
    for _ in range(1000):
        bits = rng.getrandbits(128)
        assert uuid4_from_bits(bits) == str(uuid.UUID(int=bits, version=4))
    for _key, value, _kind in take(Simulator(seed=3, start=START), 200):
        parsed = uuid.UUID(json.loads(value)["event_id"])
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_every_valid_event_obeys_spec_section_3():
    sim = Simulator(seed=9, start=START, interval=60, topology=Topology(3, 2, 2), anomalies_per_device_hour=2)
    messages = take(sim, 12 * 4 * 60 * 24)  # one simulated day
    ids = set()
    for key, value, kind in messages:
        assert kind == VALID
        assert spec_violation(value) is None, value
        event = json.loads(value)
        assert key == event["device_id"].encode()
        assert TS_FORMAT.fullmatch(event["ts_event"])
        assert event["unit"] == UNIT[event["sensor_type"]]
        if event["sensor_type"] == "occupancy":
            assert type(event["value"]) is int and event["value"] >= 0
        else:
            assert type(event["value"]) is float
        ids.add(event["event_id"])
    assert len(ids) == len(messages)


def test_default_topology_ids_and_all_four_sensors_per_device():
    sim = Simulator(seed=1, start=START)
    assert len(sim.devices) == 45
    assert sim.devices[0] == ("site-01", "zone-01", "site-01.zone-01.dev-01")
    assert sim.devices[-1] == ("site-03", "zone-05", "site-03.zone-05.dev-03")
    events = decoded(take(sim, 45 * 4))
    by_device = defaultdict(set)
    for event in events:
        assert event["device_id"] == f"{event['site_id']}.{event['zone_id']}.{event['device_id'][-6:]}"
        by_device[event["device_id"]].add(event["sensor_type"])
    assert len(by_device) == 45
    assert all(sensors == set(UNIT) for sensors in by_device.values())
    wide = Topology(sites=12, zones=150, devices_per_zone=1).ids()
    assert wide[-1] == ("site-12", "zone-150", "site-12.zone-150.dev-01")
    assert all(ID.fullmatch(part) for ids in wide for part in ids)


def test_event_time_starts_at_start_and_advances_by_the_interval():
    sim = Simulator(seed=2, start=START, interval=15, topology=Topology(2, 2, 2))
    events = decoded(take(sim, 8 * 4 * 50))
    assert events[0]["ts_event"] == "2024-05-06T00:00:00.000Z"
    stamps = [ts_ms(e) for e in events]
    assert stamps == sorted(stamps)
    per_device = defaultdict(list)
    for event in events:
        if event["sensor_type"] == "co2":
            per_device[event["device_id"]].append(ts_ms(event))
    assert len(per_device) == 8
    for series in per_device.values():
        assert len(series) == 50
        assert START_MS <= series[0] < START_MS + 15_000
        assert {b - a for a, b in pairwise(series)} == {15_000}


def test_live_mode_stamps_the_clock():
    now = [1_700_000_000.1234]
    sim = Simulator(seed=2, clock=lambda: now[0], topology=Topology(1, 1, 2))
    events = []
    for _key, value, _kind in islice(sim.messages(), 16):
        events.append(json.loads(value))
        now[0] += 0.5
    # A device's four readings share one stamp, taken when its reading is generated.
    assert events[0]["ts_event"] == format_ts(1_700_000_000_123)
    assert events[3]["ts_event"] == events[0]["ts_event"]
    assert ts_ms(events[4]) == 1_700_000_000_123 + 2000


def test_readings_follow_the_day_office_hours_and_the_week():
    # One simulated week from Monday 00:00 UTC, one reading per device every 15 min.
    sim = Simulator(seed=4, start=START, interval=900, anomalies_per_device_hour=0)
    offsets = {}
    for d in sim._devices:
        offsets[d.device_id] = d.utc_offset_ms
    buckets = defaultdict(list)
    series = defaultdict(list)
    for event in decoded(take(sim, 45 * 4 * 4 * 24 * 7)):
        local = datetime.fromtimestamp((ts_ms(event) + offsets[event["device_id"]]) / 1000, UTC)
        weekend = local.weekday() >= 5
        hour = local.hour
        period = "weekend" if weekend else "office" if 10 <= hour < 16 else "night" if hour < 6 else "other"
        buckets[event["sensor_type"], period].append(event["value"])
        series[event["device_id"], event["sensor_type"]].append(event["value"])

    def mean(sensor, period):
        values = buckets[sensor, period]
        return sum(values) / len(values)

    assert mean("occupancy", "office") > 3 > 0.2 > mean("occupancy", "night")
    assert mean("occupancy", "weekend") < 0.2
    assert mean("co2", "office") > mean("co2", "night") + 150
    assert mean("co2", "night") < 500
    assert mean("temperature", "office") > mean("temperature", "night") + 1.5
    assert all(18 <= mean("temperature", p) <= 26 for p in ("office", "night", "weekend"))
    assert all(25 <= mean("humidity", p) <= 65 for p in ("office", "night", "weekend"))
    # Humidity drifts: a device's readings are not one constant plus noise.
    assert max(buckets["humidity", "night"]) - min(buckets["humidity", "night"]) > 5
    # Noise: a device's consecutive readings differ, even at night when nothing else changes.
    temperatures = [
        v for (_device, sensor), values in series.items() if sensor == "temperature" for v in values
    ]
    steps = [b != a for a, b in pairwise(temperatures)]
    assert sum(steps) > 0.9 * len(steps)


def test_anomaly_episodes_cross_the_thresholds_and_resolve():
    sim = Simulator(
        seed=11, start=START, interval=30, topology=Topology(2, 3, 2), anomalies_per_device_hour=1
    )
    events = decoded(take(sim, 12 * 4 * 120 * 24 * 2))  # two simulated days
    open_since: dict[tuple[str, str], int] = {}
    episodes = Counter()
    resolved = Counter()
    for i, event in enumerate(events):
        sensor = event["sensor_type"]
        if sensor not in OPEN_RESOLVE:
            continue
        opens, resolves = OPEN_RESOLVE[sensor]
        series = event["device_id"], sensor
        if series not in open_since and event["value"] > opens:
            open_since[series] = i
            episodes[sensor] += 1
        elif series in open_since and event["value"] <= resolves:
            del open_since[series]
            resolved[sensor] += 1
    # ~1 per device-hour over 12 devices x 48 h, spread over three sensors.
    assert sum(episodes.values()) > 300
    assert all(episodes[s] > 60 for s in OPEN_RESOLVE)
    # Every episode comes back below its resolve level within its 30 readings, except those still running at the end.
    last_index = len(events) - 1
    assert all(last_index - start < 12 * 4 * 31 for start in open_since.values())
    assert sum(resolved.values()) >= sum(episodes.values()) - len(open_since)
    assert len(open_since) <= 12


def test_no_anomalies_means_no_alert_ever_opens():
    sim = Simulator(
        seed=12, start=START, interval=60, topology=Topology(3, 2, 2), anomalies_per_device_hour=0
    )
    for event in decoded(take(sim, 12 * 4 * 60 * 24)):
        if event["sensor_type"] in OPEN_RESOLVE:
            assert event["value"] <= OPEN_RESOLVE[event["sensor_type"]][1]


def test_duplicate_and_invalid_fractions_are_honoured():
    n = 40_000
    messages = take(Simulator(seed=5, start=START, duplicate_fraction=0.05, invalid_fraction=0.10), n)
    kinds = Counter(kind if kind in (VALID, DUPLICATE) else "invalid" for _, _, kind in messages)
    assert abs(kinds[DUPLICATE] / n - 0.05) < 0.01
    assert abs(kinds["invalid"] / n - 0.10) < 0.01
    seen_values = set()
    seen_ids = set()
    for key, value, kind in messages:
        if kind == VALID:
            event = json.loads(value)
            assert event["event_id"] not in seen_ids
            seen_values.add((key, value))
            seen_ids.add(event["event_id"])
        elif kind == DUPLICATE:
            # A re-send: the very bytes (same event_id) of an earlier valid message, on the same key.
            assert (key, value) in seen_values
        else:
            assert spec_violation(value) is not None, (kind, value)


def test_invalid_messages_of_every_kind_break_the_spec():
    messages = take(Simulator(seed=6, start=START, invalid_fraction=1.0), 8000)
    kinds = Counter(kind for _, _, kind in messages)
    assert set(kinds) == set(INVALID_KINDS)
    reasons = defaultdict(set)
    for _key, value, kind in messages:
        reason = spec_violation(value)
        assert reason is not None, (kind, value)
        reasons[kind].add(reason)
    assert reasons["not_json"] == {"not json"}
    assert reasons["json_array"] == reasons["not_an_object"] == {"not an object"}
    assert all(r.startswith("missing") for r in reasons["missing_field"])
    assert reasons["bool_value"] == {"value type"}
    assert reasons["nan_like"] <= {"not json", "value not finite", "value type"}
    assert "value not finite" in reasons["nan_like"]
    assert "occupancy not an integer" in reasons["out_of_range"]
    assert reasons["bad_unit"] == {"bad unit"}
    assert reasons["future_ts"] == {"ts in the future"}
    assert reasons["ts_without_offset"] == {"ts without offset"}
    assert {"bad device_id", "bad site_id", "bad zone_id"} == reasons["bad_id"]


def test_invalid_future_timestamps_in_live_mode_are_minutes_to_days_ahead():
    now = datetime.now(UTC).timestamp()
    sim = Simulator(seed=8, invalid_fraction=1.0, clock=lambda: now)
    for _key, value, kind in take(sim, 3000):
        if kind == "future_ts":
            ahead = ts_ms(json.loads(value)) - now * 1000
            assert 10 * 60_000 <= ahead <= 2 * 86_400_000 + 1000


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        Simulator(duplicate_fraction=0.6, invalid_fraction=0.6)
    with pytest.raises(ValueError):
        Simulator(interval=0)
    with pytest.raises(ValueError):
        Topology(sites=0)


def test_parse_start():
    assert parse_start("2024-05-06T01:02:03Z") == datetime(2024, 5, 6, 1, 2, 3, tzinfo=UTC)
    assert parse_start("2024-05-06T03:02:03+02:00") == datetime(2024, 5, 6, 1, 2, 3, tzinfo=UTC)
    assert parse_start("2024-05-06T01:02:03") == datetime(2024, 5, 6, 1, 2, 3, tzinfo=UTC)
    assert parse_start("now-2h", now=lambda: 7200.0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_start("now-1.5d", now=lambda: 86400 * 2.0) == datetime(1970, 1, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_start("last tuesday")


def test_format_ts_truncates_to_milliseconds_with_z():
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(START_MS + 86_399_999) == "2024-05-06T23:59:59.999Z"


def test_cli_writes_the_same_events_to_stdout(capsysbinary):
    argv = ["--stdout", "--count", "20", "--seed", "7", "--start", "2024-05-06T00:00:00Z", "--sites", "1"]
    assert sim_module.main(argv) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    expected = [v for _, v in generate_events(20, seed=7, start=START, topology=Topology(sites=1))]
    assert lines == expected


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exited:
        sim_module.main(["--invalid-fraction", "1.5"])
    assert exited.value.code == 2
    assert "--invalid-fraction" in capsys.readouterr().err


def test_normal_readings_stay_below_each_rule_and_anomaly_peaks_above_it():
    """The simulator's realism ranges follow the alert rules (alerts.RULES owns the thresholds): normal readings
    never open an episode, so every episode comes from an anomaly and is resolved once the anomaly is over."""
    from telemetrypulse.alerts import RULES
    from telemetrypulse.simulator.generation import NORMAL_RANGE, PEAK_NOISE, PEAK_RANGE

    assert set(NORMAL_RANGE) == set(PEAK_RANGE) == set(RULES)
    for sensor, rule in RULES.items():
        assert NORMAL_RANGE[sensor][1] < rule.resolve_at_or_below, sensor
        assert PEAK_RANGE[sensor][0] - 2 * PEAK_NOISE[sensor] > rule.open_above, sensor
