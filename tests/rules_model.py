"""Alert rules at run time and stale sensors (SPEC §9): a deterministic dataset, its rule history, and the alerts the
SPEC says they give — computed here from the SPEC text, written plainly and separately from `telemetrypulse.rules`,
`alerts` and `state` (never by the code under test). Unit and integration tests both use it.

The dataset's event times are historic (2024) and every reading of one step shares its time, so a partition's
watermark moves in whole steps: the SPEC's boundaries (a gap of exactly STALE_AFTER_S) land exactly.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from tests.pipeline_model import UNITS, Acceptance, parse_us

START = datetime(2024, 6, 1, tzinfo=UTC)
INTERVAL_S = 30
STEPS = 90
STALE_AFTER_S = 600
GRACE_S = 300
SENSORS = ("co2", "temperature", "humidity", "occupancy")
DEFAULTS = (
    ("default-co2-high", "co2", 1000.0, 950.0),
    ("default-temperature-high", "temperature", 30.0, 29.0),
    ("default-humidity-high", "humidity", 80.0, 77.0),
)
# device -> (site, zone, partition of the 4-partition integration run). lab.z1.d2 is first: see the exact gap.
DEVICES = {
    "lab.z1.d2": ("lab", "z1", 0),
    "lab.z1.d1": ("lab", "z1", 0),
    "lab.cold.d1": ("lab", "cold", 1),
    "lab.cold.d2": ("lab", "cold", 1),
    "office.z1.d1": ("office", "z1", 2),
    "office.z1.d2": ("office", "z1", 2),
    "hall.z9.d1": ("hall", "z9", 3),
}


def step_time(step: int) -> datetime:
    return START + timedelta(seconds=step * INTERVAL_S)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rule_versions() -> list[dict]:
    """The rule history, in the order it is written (revision 1, 2, …): PUT bodies plus `rule_id`."""
    everywhere = "1970-01-01T00:00:00Z"
    return [
        # A zone override of the co2 default, and a site rule it is more specific than.
        dict(rule_id="lab-co2", sensor_type="co2", direction="above", open_at=800, resolve_at=750,
             site_id="lab", zone_id="z1", severity="critical", effective_from=everywhere),
        dict(rule_id="lab-site-co2", sensor_type="co2", direction="above", open_at=700, resolve_at=680,
             site_id="lab", effective_from=everywhere),
        # A below rule with a pending period.
        dict(rule_id="cold-temp-low", sensor_type="temperature", direction="below", open_at=2, resolve_at=3,
             site_id="lab", zone_id="cold", for_s=90, severity="critical", effective_from=everywhere),
        dict(rule_id="office-humidity", sensor_type="humidity", direction="above", open_at=60, resolve_at=55,
             site_id="office", for_s=120, severity="info", effective_from=everywhere),
        dict(rule_id="dev-temp", sensor_type="temperature", direction="above", open_at=25, resolve_at=24,
             device_id="office.z1.d2", effective_from=everywhere),
        # A new version effective in the middle of the data.
        dict(rule_id="lab-co2", sensor_type="co2", direction="above", open_at=900, resolve_at=850,
             site_id="lab", zone_id="z1", severity="critical", effective_from=iso(step_time(40))),
        # Deleted while an episode is open: the default humidity rule applies from then on.
        dict(rule_id="office-humidity", sensor_type="humidity", direction="above", open_at=60, resolve_at=55,
             site_id="office", for_s=120, severity="info", enabled=False, effective_from=iso(step_time(27))),
        # Deleted while an episode is open, and no rule applies any more: resolves at the next reading.
        dict(rule_id="cold-temp-low", sensor_type="temperature", direction="below", open_at=2, resolve_at=3,
             site_id="lab", zone_id="cold", for_s=90, severity="critical", enabled=False,
             effective_from=iso(step_time(75) - timedelta(seconds=1))),
        # Effective after the data: never applies.
        dict(rule_id="future-co2", sensor_type="co2", direction="above", open_at=100, resolve_at=90,
             effective_from="2030-01-01T00:00:00Z"),
    ]  # fmt: skip


def _value(device: str, sensor: str, step: int, rng: random.Random) -> float:
    """Readings shaped to cross the rules above at known steps."""
    noise = rng.uniform(-3, 3)
    if sensor == "co2":
        if device == "lab.z1.d1":  # over 800 at steps 10-18 (v1 applies), 880 at 45-50 (v2: under 900)
            return 870 + noise if 10 <= step <= 18 else 880 + noise if 45 <= step <= 50 else 600 + noise
        if device == "lab.z1.d2":  # 950 at 55-60: opens under v2
            return 950 + noise if 55 <= step <= 60 else 610 + noise
        if device.startswith("lab.cold"):  # the site rule (700) applies here
            return 720 + noise if device.endswith("d1") and 20 <= step <= 24 else 650 + noise
        if device == "hall.z9.d1":  # the default (1000)
            return 1100 + noise if 30 <= step <= 35 else 700 + noise
        return 600 + noise
    if sensor == "temperature":
        if device == "lab.cold.d1":  # below 2 for 60 s (no open), then for 180 s (opens)
            return 1.5 if step in (10, 11) or 30 <= step <= 35 else 4 + noise / 10
        if device == "lab.cold.d2":  # below 2 from step 70 on; the rule is deleted at step 75
            return 1.2 if step >= 70 else 4 + noise / 10
        if device == "office.z1.d2":  # around the device override's 25 / 24; still over it at the end
            return 26 if step % 20 in (5, 6, 7) or step >= 85 else 23 + noise / 10
        return 22 + noise / 10
    if sensor == "humidity":
        if device.startswith("office"):  # over 60 at steps 20-30 (opens at 24); two readings at 50-51 (none)
            return 65 + noise / 3 if 20 <= step <= 30 or step in (50, 51) else 50 + noise
        return 45 + noise
    return float(rng.randint(0, 30))


def _reports(device: str, sensor: str, step: int) -> bool:
    """Silences: a stale episode that resolves, one that stays open, a gap of exactly STALE_AFTER_S, one of one
    step more, and a whole device gone quiet (stale only where its partition's watermark moves on)."""
    if device == "lab.cold.d2" and sensor == "humidity":
        return not 30 <= step <= 59  # 900 s gap: stale, resolves at step 60
    if device == "lab.z1.d2" and sensor == "humidity":
        return not 21 <= step <= 39  # exactly 600 s between steps 20 and 40: not stale
    if device == "lab.z1.d1" and sensor == "humidity":
        return not 61 <= step <= 81  # 630 s: stale once step 81 arrives, resolved at step 82
    if device == "office.z1.d1" and sensor == "occupancy":
        return step <= 50  # stops for good: stays open
    if device == "hall.z9.d1":
        return step < 60
    return True


@dataclass
class RulesDataset:
    messages: list[tuple[bytes, bytes, dict]]  # (key, value, event) in production order
    versions: list[dict]
    devices: dict[str, tuple[str, str, int]]
    stale_after_s: int = STALE_AFTER_S

    def partition_of(self, device: str) -> int:
        return self.devices[device][2]


def build_rules_dataset(seed: int = 3) -> RulesDataset:
    rng = random.Random(seed)
    messages: list[tuple[bytes, bytes, dict]] = []
    sent: list[dict] = []

    def add(event: dict) -> None:
        messages.append((event["device_id"].encode(), orjson.dumps(event), event))

    for step in range(STEPS):
        moment = step_time(step)
        for device, (site, zone, _) in DEVICES.items():
            for sensor in SENSORS:
                if not _reports(device, sensor, step):
                    continue
                value = _value(device, sensor, step, rng)
                event = {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "device_id": device,
                    "site_id": site,
                    "zone_id": zone,
                    "sensor_type": sensor,
                    "value": round(value, 2) if sensor != "occupancy" else value,
                    "ts_event": iso(moment),
                    "unit": UNITS[sensor],
                }
                add(event)
                sent.append(event)
            roll = rng.random()
            if roll < 0.04 and sent:  # an exact re-send: a duplicate, never alerted on again
                add(dict(rng.choice(sent[-30:])))
            elif (
                roll < 0.07 and step > 20 and device == "lab.z1.d1"
            ):  # too late, and far over every threshold
                late = {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "device_id": device, "site_id": "lab", "zone_id": "z1", "sensor_type": "co2",
                    "value": 5000, "ts_event": iso(moment - timedelta(seconds=GRACE_S + 100)),
                }  # fmt: skip
                add(late)
    return RulesDataset(messages, rule_versions(), dict(DEVICES))


# ---------------------------------------------------------------------------------------------------------------
# SPEC §9, literally.


@dataclass(frozen=True)
class ModelRule:
    rule_id: str
    revision: int
    sensor_type: str
    direction: str
    open_at: float
    resolve_at: float
    site_id: str | None
    zone_id: str | None
    device_id: str | None
    for_s: float
    severity: str
    enabled: bool
    effective_us: int


def model_rules(versions: list[dict]) -> list[ModelRule]:
    """The defaults (revision 0) and `versions` as revisions 1, 2, … in order."""
    rules = [
        ModelRule(rule_id, 0, sensor, "above", open_at, resolve_at, None, None, None, 0, "warning", True, 0)
        for rule_id, sensor, open_at, resolve_at in DEFAULTS
    ]
    for revision, v in enumerate(versions, start=1):
        rules.append(
            ModelRule(
                v["rule_id"], revision, v["sensor_type"], v["direction"], float(v["open_at"]),
                float(v["resolve_at"]), v.get("site_id"), v.get("zone_id"), v.get("device_id"),
                float(v.get("for_s", 0)), v.get("severity", "warning"), v.get("enabled", True),
                parse_us(v["effective_from"].replace("Z", "+00:00")),
            )
        )  # fmt: skip
    return rules


def applicable(rules: list[ModelRule], event: dict, direction: str) -> ModelRule | None:
    """SPEC §9: among versions with effective_from ≤ ts_event, the latest version of each rule; of those the enabled
    one with the most specific matching scope (device > zone > site > everywhere); a tie: the later version."""
    ts = parse_us(event["ts_event"])
    latest: dict[str, ModelRule] = {}
    for rule in rules:
        if rule.effective_us <= ts and (
            rule.rule_id not in latest or rule.revision > latest[rule.rule_id].revision
        ):
            latest[rule.rule_id] = rule
    best, best_rank = None, None
    for rule in latest.values():
        if not rule.enabled or rule.sensor_type != event["sensor_type"] or rule.direction != direction:
            continue
        if rule.device_id is not None:
            if rule.device_id != event["device_id"]:
                continue
            specificity = 3
        elif rule.zone_id is not None:
            if (rule.site_id, rule.zone_id) != (event["site_id"], event["zone_id"]):
                continue
            specificity = 2
        elif rule.site_id is not None:
            if rule.site_id != event["site_id"]:
                continue
            specificity = 1
        else:
            specificity = 0
        if best_rank is None or (specificity, rule.revision) > best_rank:
            best, best_rank = rule, (specificity, rule.revision)
    return best


@dataclass
class ExpectedAlerts:
    alerts: dict[str, dict] = field(default_factory=dict)  # alert_id -> final state
    messages: list[tuple[str, str]] = field(default_factory=list)  # (alert_id, status) in publication order

    def statuses(self) -> set[tuple[str, str]]:
        return set(self.messages)


def _alert_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def expected_alerts(
    dataset: RulesDataset,
    *,
    partitions: bool = True,
    revisions_from: dict[int, int] | None = None,
    stale_after_s: int | None = None,
) -> ExpectedAlerts:
    """The alerts of `dataset` under SPEC §9. `partitions`: each device in its partition (else all in one);
    `revisions_from`: {offset: revision} — the rule revision events from that offset of their partition on are
    judged by (default: every version known before the first event)."""
    stale_after_s = dataset.stale_after_s if stale_after_s is None else stale_after_s
    stale_us = stale_after_s * 1_000_000
    all_rules = model_rules(dataset.versions)
    schedule = sorted((revisions_from or {0: len(dataset.versions)}).items())
    out = ExpectedAlerts()
    acceptance = Acceptance(GRACE_S)
    episodes: dict[tuple[str, str, str], dict] = {}  # (device, sensor, direction) -> pending or open
    watermark: dict[int, int] = {}
    latest: dict[tuple[str, str], dict] = {}  # (device, sensor) -> the latest reading (event)
    stale_raised: set[tuple[str, str]] = set()  # raised for the current latest reading
    stale_open: dict[tuple[str, str], str] = {}  # -> alert_id
    offsets: dict[int, int] = {}

    def publish(alert: dict, status: str) -> None:
        out.alerts[alert["alert_id"]] = alert
        out.messages.append((alert["alert_id"], status))

    for _key, _value, e in dataset.messages:
        partition = dataset.partition_of(e["device_id"]) if partitions else 0
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        revision = max(r for start, r in schedule if start <= offset) if schedule[0][0] <= offset else 0
        rules = [r for r in all_rules if r.revision <= revision]
        if acceptance.judge(e) != "accepted":
            continue
        device, sensor, ts, value = (
            e["device_id"],
            e["sensor_type"],
            parse_us(e["ts_event"]),
            float(e["value"]),
        )
        # The sensor reports: its stale episode ends.
        if (device, sensor) in stale_open:
            alert = dict(out.alerts[stale_open.pop((device, sensor))], status="resolved", resolved_at=ts)
            publish(alert, "resolved")
        # Threshold episodes, per direction.
        for direction in ("above", "below"):
            rule = applicable(rules, e, direction)
            key = (device, sensor, direction)
            current = episodes.get(key)
            violates = rule is not None and (
                value > rule.open_at if direction == "above" else value < rule.open_at
            )
            extreme = max if direction == "above" else min
            if current is not None and current["status"] == "open":
                resolves = rule is None or (
                    value <= rule.resolve_at if direction == "above" else value >= rule.resolve_at
                )
                if resolves:
                    publish(dict(current, status="resolved", resolved_at=ts), "resolved")
                    del episodes[key]
                else:
                    current["peak_value"] = extreme(current["peak_value"], value)
                    out.alerts[current["alert_id"]] = dict(current)
                continue
            if not violates:
                episodes.pop(key, None)
                continue
            first = current["first"] if current is not None else e
            peak = extreme(current["peak"], value) if current is not None else value
            if ts - parse_us(first["ts_event"]) >= rule.for_s * 1_000_000:
                opened = {
                    "alert_id": _alert_id(f"telemetrypulse:{device}:{sensor}:{first['event_id']}"),
                    "status": "open", "rule": "threshold",
                    "alert_type": f"{sensor.upper()}_{'HIGH' if direction == 'above' else 'LOW'}",
                    "rule_id": rule.rule_id, "severity": rule.severity, "device_id": device,
                    "site_id": first["site_id"], "zone_id": first["zone_id"], "sensor_type": sensor,
                    "threshold": rule.open_at, "value": float(first["value"]), "peak_value": peak,
                    "opened_at": parse_us(first["ts_event"]), "resolved_at": None, "event_id": first["event_id"],
                }  # fmt: skip
                episodes[key] = opened
                publish(dict(opened), "open")
            else:
                episodes[key] = {"status": "pending", "first": first, "peak": peak}
        # The latest value, then the partition's watermark, then every sensor of the partition.
        held = latest.get((device, sensor))
        if held is None or ts >= parse_us(held["ts_event"]):
            latest[(device, sensor)] = e
            stale_raised.discard((device, sensor))
        watermark[partition] = max(watermark.get(partition, ts), ts)
        if not stale_us:
            continue
        for (d, s), last in latest.items():
            in_partition = (dataset.partition_of(d) if partitions else 0) == partition
            if not in_partition or (d, s) in stale_raised:
                continue
            last_ts = parse_us(last["ts_event"])
            if watermark[partition] - last_ts > stale_us:
                alert = {
                    "alert_id": _alert_id(f"telemetrypulse:{d}:{s}:stale:{last['event_id']}"),
                    "status": "open", "rule": "stale", "alert_type": "SENSOR_STALE", "rule_id": None,
                    "severity": "warning", "device_id": d, "site_id": last["site_id"], "zone_id": last["zone_id"],
                    "sensor_type": s, "threshold": float(stale_after_s), "value": float(last["value"]),
                    "peak_value": float(last["value"]), "opened_at": last_ts + stale_us, "resolved_at": None,
                    "event_id": last["event_id"],
                }  # fmt: skip
                stale_raised.add((d, s))
                stale_open[(d, s)] = alert["alert_id"]
                publish(alert, "open")
    return out
