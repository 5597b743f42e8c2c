"""A deterministic test dataset and the outcome SPEC §3–§5 says it must have.

The expected outcome is computed here, from the SPEC rules, written plainly and separately from
`telemetrypulse.state` — never by the code under test. Integration and fault tests both use it.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from devkit.epoch import parse_us

GRACE_S = 300
RULES = {
    "co2": (1000.0, 950.0, "CO2_HIGH"),
    "temperature": (30.0, 29.0, "TEMPERATURE_HIGH"),
    "humidity": (80.0, 77.0, "HUMIDITY_HIGH"),
}
UNITS = {"co2": "ppm", "temperature": "celsius", "humidity": "percent", "occupancy": "count"}


@dataclass
class Message:
    key: bytes | None
    value: bytes
    kind: str  # "valid", "invalid"; what the worker makes of a valid one is the model's business
    event: dict | None = None  # the parsed event, for valid messages


@dataclass
class Dataset:
    messages: list[Message]
    devices: dict[str, tuple[str, str]]  # device -> (site, zone)


def _iso(moment: datetime, style: int) -> str:
    """The same instant written in several ISO-8601 styles, offsets other than Z included."""
    if style == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if style == 1:
        return moment.astimezone(timezone_hm(5, 30)).isoformat()
    if style == 2:
        return moment.astimezone(timezone_hm(-8, 0)).isoformat(timespec="milliseconds")
    return moment.isoformat()  # +00:00


def timezone_hm(hours: int, minutes: int):
    from datetime import timezone

    sign = 1 if hours >= 0 else -1
    return timezone(sign * timedelta(hours=abs(hours), minutes=minutes))


def build_dataset(
    *,
    seed: int = 7,
    start: datetime = datetime(2024, 3, 9, 23, 47, tzinfo=UTC),
    devices_per_zone: int = 2,
    zones: int = 2,
    sites: int = 2,
    readings_per_sensor: int = 60,
    interval_s: int = 20,
) -> Dataset:
    """Historic event times spanning midnight UTC, duplicates, events late within and beyond the grace
    period, invalid events of every kind, and alert episodes (values crossing thresholds and back)."""
    rng = random.Random(seed)
    devices: dict[str, tuple[str, str]] = {}
    for s in range(1, sites + 1):
        for z in range(1, zones + 1):
            for d in range(1, devices_per_zone + 1):
                devices[f"s{s}.z{z}.d{d}"] = (f"site-{s}", f"zone-{z}")

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    messages: list[Message] = []
    sent_valid: list[dict] = []

    def valid(event: dict, key: str | None = None) -> None:
        raw = orjson.dumps(event)
        messages.append(Message((key or event["device_id"]).encode(), raw, "valid", event))
        sent_valid.append(event)

    for step in range(readings_per_sensor):
        moment = start + timedelta(seconds=step * interval_s)
        for device, (site, zone) in devices.items():
            for sensor in ("co2", "temperature", "humidity", "occupancy"):
                phase = step / readings_per_sensor * 2 * math.pi
                if sensor == "co2":  # two excursions above 1000 with hysteresis wiggles
                    value = 800 + 350 * math.sin(phase * 2 + sum(device.encode()) % 3) + rng.uniform(-60, 60)
                elif sensor == "temperature":
                    value = 27 + 3.5 * math.sin(phase + 1) + rng.uniform(-0.8, 0.8)
                elif sensor == "humidity":
                    value = 72 + 9 * math.sin(phase * 3) + rng.uniform(-2, 2)
                else:
                    value = rng.randint(0, 40)
                value = round(value, 2) if sensor != "occupancy" else value
                value = max(0, value)
                event = {
                    "event_id": new_id(),
                    "device_id": device,
                    "site_id": site,
                    "zone_id": zone,
                    "sensor_type": sensor,
                    "value": value,
                    "ts_event": _iso(moment + timedelta(milliseconds=rng.randint(0, 999)), rng.randint(0, 3)),
                }
                if rng.random() < 0.7:
                    event["unit"] = UNITS[sensor]
                valid(event)
            roll = rng.random()
            if roll < 0.08 and sent_valid:  # an exact re-send
                again = rng.choice(sent_valid[-40:])
                valid(dict(again))
            elif roll < 0.12:  # late, but within the grace period (30..290 s behind)
                behind = rng.randint(30, 290)
                valid(_reading(new_id(), device, site, zone, moment - timedelta(seconds=behind), rng))
            elif roll < 0.16 and step * interval_s > GRACE_S + 60:  # too late
                behind = GRACE_S + interval_s * 2 + rng.randint(1, 200)
                valid(_reading(new_id(), device, site, zone, moment - timedelta(seconds=behind), rng))
            elif roll < 0.22:
                messages.append(
                    Message(device.encode(), _invalid(rng, new_id(), device, site, zone, moment), "invalid")
                )
    # The exact grace boundary: one reading exactly GRACE_S behind the newest of a device (accepted),
    # one a millisecond further (too late).
    last = start + timedelta(seconds=(readings_per_sensor - 1) * interval_s + 2)
    device, (site, zone) = next(iter(devices.items()))
    valid(_reading(new_id(), device, site, zone, last + timedelta(seconds=5), rng, value=500))
    valid(_reading(new_id(), device, site, zone, last + timedelta(seconds=5 - GRACE_S), rng, value=501))
    valid(
        _reading(
            new_id(),
            device,
            site,
            zone,
            last + timedelta(seconds=5 - GRACE_S, milliseconds=-1),
            rng,
            value=502,
        )
    )
    return Dataset(messages, devices)


def _reading(event_id, device, site, zone, moment, rng, value=None) -> dict:
    return {
        "event_id": event_id,
        "device_id": device,
        "site_id": site,
        "zone_id": zone,
        "sensor_type": "co2",
        "value": value if value is not None else round(rng.uniform(400, 1400), 1),
        "ts_event": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }


def _invalid(rng, event_id, device, site, zone, moment) -> bytes:
    base = _reading(event_id, device, site, zone, moment, rng)
    kinds = [
        lambda: b"{not json",
        lambda: b"[1,2,3]",
        lambda: orjson.dumps({k: v for k, v in base.items() if k != "value"}),
        lambda: orjson.dumps(dict(base, value=True)),
        lambda: orjson.dumps(dict(base, value="812")),
        lambda: orjson.dumps(base).replace(b'"value":' + orjson.dumps(base["value"]), b'"value":NaN'),
        lambda: orjson.dumps(dict(base, value=-5)),
        lambda: orjson.dumps(dict(base, unit="celsius")),
        lambda: orjson.dumps(dict(base, ts_event=moment.strftime("%Y-%m-%dT%H:%M:%S"))),
        lambda: orjson.dumps(dict(base, ts_event="2999-01-01T00:00:00Z")),
        lambda: orjson.dumps(dict(base, sensor_type="pressure")),
        lambda: orjson.dumps(dict(base, event_id="nope")),
    ]
    return rng.choice(kinds)()


@dataclass
class Expected:
    raw: dict[tuple[str, str], dict] = field(default_factory=dict)  # (device, event_id) -> event (incl. late)
    late_keys: set[tuple[str, str]] = field(default_factory=set)  # the keys of `raw` whose event was too late
    windows: dict[tuple, dict] = field(default_factory=dict)  # (size, device, sensor, start_us) -> agg
    latest: dict[tuple[str, str], float] = field(default_factory=dict)  # (device, sensor) -> value
    alerts: dict[str, dict] = field(default_factory=dict)  # alert_id -> final state
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    invalid: int = 0

    def zone_windows(self, devices: dict[str, tuple[str, str]]) -> dict[tuple, dict]:
        zones: dict[tuple, dict] = {}
        for (size, device, sensor, start), agg in self.windows.items():
            site, zone = devices[device]
            z = zones.setdefault(
                (size, site, zone, sensor, start), {"count": 0, "sum": 0.0, "min": math.inf, "max": -math.inf}
            )
            z["count"] += agg["count"]
            z["sum"] += agg["sum"]
            z["min"] = min(z["min"], agg["min"])
            z["max"] = max(z["max"], agg["max"])
        return zones


class Acceptance:
    """SPEC §3–§4 per device, in each device's order: is a valid event a duplicate, too late or accepted?"""

    def __init__(self, grace_s: int = GRACE_S) -> None:
        self.grace_us = grace_s * 1_000_000
        self.watermark: dict[str, int] = {}
        self.accepted_ids: dict[str, dict[str, int]] = {}

    def judge(self, e: dict) -> str:
        device, ts = e["device_id"], parse_us(e["ts_event"])
        seen = self.accepted_ids.setdefault(device, {})
        if e["event_id"] in seen:
            return "duplicate"
        wm = self.watermark.get(device)
        if wm is not None and wm - ts > self.grace_us:
            return "late"
        self.watermark[device] = ts if wm is None else max(wm, ts)
        seen[e["event_id"]] = ts
        # SPEC §3 lets ids be forgotten beyond the horizon; forget them, so that an exact re-send of
        # such an old reading counts as too late (as the worker counts it) rather than as a duplicate.
        horizon = self.watermark[device] - self.grace_us
        for old in [i for i, t in seen.items() if t < horizon]:
            del seen[old]
        return "accepted"


def expected_outcome(dataset: Dataset, grace_s: int = GRACE_S) -> Expected:
    """Walk each device's messages in order and apply SPEC §3–§5 literally."""
    out = Expected()
    acceptance = Acceptance(grace_s)
    latest_ts: dict[tuple[str, str], int] = {}
    open_alert: dict[tuple[str, str], str] = {}
    for message in dataset.messages:
        if message.kind == "invalid":
            out.invalid += 1
            continue
        e = message.event
        device, sensor, ts = e["device_id"], e["sensor_type"], parse_us(e["ts_event"])
        verdict = acceptance.judge(e)
        if verdict == "duplicate":
            out.duplicates += 1
            continue
        if verdict == "late":
            out.late += 1
            if (device, e["event_id"]) not in out.raw:
                out.late_keys.add((device, e["event_id"]))
            out.raw.setdefault((device, e["event_id"]), e)
            continue
        out.accepted += 1
        out.raw[(device, e["event_id"])] = e
        out.late_keys.discard((device, e["event_id"]))
        value = float(e["value"])
        for size in (300, 900):
            start = ts // (size * 1_000_000) * size * 1_000_000
            agg = out.windows.setdefault(
                (size, device, sensor, start), {"count": 0, "sum": 0.0, "min": math.inf, "max": -math.inf}
            )
            agg["count"] += 1
            agg["sum"] += value
            agg["min"] = min(agg["min"], value)
            agg["max"] = max(agg["max"], value)
        if (device, sensor) not in latest_ts or ts >= latest_ts[(device, sensor)]:
            latest_ts[(device, sensor)] = ts
            out.latest[(device, sensor)] = value
        if sensor in RULES:
            above, resolve_at, alert_type = RULES[sensor]
            current = open_alert.get((device, sensor))
            if current is None and value > above:
                alert_id = str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"telemetrypulse:{device}:{sensor}:{e['event_id']}")
                )
                out.alerts[alert_id] = {
                    "status": "open", "alert_type": alert_type, "device_id": device, "sensor_type": sensor,
                    "value": value, "peak_value": value, "opened_at": ts, "resolved_at": None, "event_id": e["event_id"],
                }  # fmt: skip
                open_alert[(device, sensor)] = alert_id
            elif current is not None:
                alert = out.alerts[current]
                if value <= resolve_at:
                    alert["status"] = "resolved"
                    alert["resolved_at"] = ts
                    del open_alert[(device, sensor)]
                else:
                    alert["peak_value"] = max(alert["peak_value"], value)
    return out
