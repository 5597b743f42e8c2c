"""Alert episodes (SPEC §5, §9): threshold episodes under the run-time rules, and stale-sensor episodes.

An episode is kept per (device, sensor, kind), kind ABOVE, BELOW (threshold rules by direction) or STALE. A threshold
episode is None, pending (a rule with for_s > 0 is violated, not yet long enough: a dict with status "pending") or
open (a dict that is the open message). `step` walks one accepted reading through one direction; the batch engine
(state_thresholds.py) calls it only for (device, sensor) groups where something can happen, in each device's topic
order.
Stale episodes are opened and resolved by stale.py; their messages are built here.

Pure logic: no Faust, Kafka or database.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from telemetrypulse.models import iso_utc
from telemetrypulse.rules import DEFAULT_VERSIONS, Rule

RULE = "threshold"
STALE_RULE = "stale"
STALE_ALERT_TYPE = "SENSOR_STALE"
STALE_SEVERITY = "warning"
ABOVE, BELOW, STALE = 0, 1, 2  # episode kinds
KINDS = 3
# The namespace and name format of alert ids are public: a consumer can recompute an id.
ALERT_NAMESPACE = uuid.NAMESPACE_URL


class DefaultThreshold(NamedTuple):
    alert_type: str
    open_above: float
    resolve_at_or_below: float


# The default rules' thresholds by sensor (the API's ok/warn/alert levels of live status and heatmaps).
RULES = {
    v.sensor_type: DefaultThreshold(f"{v.sensor_type.upper()}_HIGH", v.open_at, v.resolve_at)
    for v in DEFAULT_VERSIONS
}


class Reading(NamedTuple):
    event_id: str
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: str
    value: float
    ts_us: int


def alert_id(device_id: str, sensor_type: str, opening_event_id: str) -> str:
    """UUIDv5 over `telemetrypulse:{device_id}:{sensor_type}:{event_id}` in the URL namespace (SPEC §5; the same
    for both directions, as SPEC §9 keeps §5's formula)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"telemetrypulse:{device_id}:{sensor_type}:{opening_event_id}"))


def stale_alert_id(device_id: str, sensor_type: str, event_id: str) -> str:
    """UUIDv5 over `telemetrypulse:{device_id}:{sensor_type}:stale:{event_id}` (SPEC §9)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"telemetrypulse:{device_id}:{sensor_type}:stale:{event_id}"))


def kind_of(episode: dict) -> int:
    """The kind of a stored episode (records written before run-time rules hold open `_HIGH` episodes only)."""
    if episode.get("status") == "pending":
        return ABOVE if episode["direction"] == "above" else BELOW
    if episode.get("rule") == STALE_RULE:
        return STALE
    return BELOW if episode["alert_type"].endswith("_LOW") else ABOVE


def _opened(rule: Rule, first: dict | Reading, device_id: str, peak: float) -> dict:
    """The open message of a threshold episode whose opening reading is `first`."""
    if isinstance(first, Reading):
        event_id, site_id, zone_id, value, ts_us = (
            first.event_id,
            first.site_id,
            first.zone_id,
            first.value,
            first.ts_us,
        )
    else:
        event_id, site_id, zone_id = first["event_id"], first["site_id"], first["zone_id"]
        value, ts_us = first["value"], first["ts_us"]
    return {
        "alert_id": alert_id(device_id, rule.sensor_type, event_id),
        "status": "open",
        "rule": RULE,
        "alert_type": rule.alert_type,
        "device_id": device_id,
        "site_id": site_id,
        "zone_id": zone_id,
        "sensor_type": rule.sensor_type,
        "threshold": rule.open_at,
        "value": value,
        "peak_value": peak,
        "opened_at": iso_utc(ts_us),
        "resolved_at": None,
        "event_id": event_id,
        "rule_id": rule.rule_id,
        "severity": rule.severity,
    }


def _resolved(episode: dict, reading: Reading) -> dict:
    resolved = dict(episode, status="resolved", resolved_at=iso_utc(reading.ts_us))
    resolved["resolved_event_id"] = reading.event_id
    return resolved


def step(
    episode: dict | None, reading: Reading, rule: Rule | None, above: bool
) -> tuple[dict | None, dict | None, bool]:
    """One accepted reading through one direction, with the rule that applies to it (None: no enabled rule).

    Returns (the episode after it: None, pending or open; the message to publish or None; whether an open
    episode's peak moved). SPEC §9:
    - open: resolves at the first reading the applying rule resolves (value ≤ resolve_at above, ≥ below), or at
      the next reading when no rule applies any more; until then the peak follows the most extreme value;
    - pending: every reading since the first violating one must violate; once the latest is for_s (of the rule
      applying to it) or more after the first, the episode opens with the first as its opening reading;
    - none: a violating reading opens an episode (for_s = 0) or starts a pending one.
    """
    value = reading.value
    if episode is not None and episode["status"] == "open":
        if rule is None or rule.resolves(value):
            return None, _resolved(episode, reading), False
        if (value > episode["peak_value"]) if above else (value < episode["peak_value"]):
            episode["peak_value"] = value
            return episode, None, True
        return episode, None, False
    if rule is None or not rule.violates(value):
        return None, None, False  # a pending episode ends without a message
    if episode is None:
        if rule.for_us == 0:
            opened = _opened(rule, reading, reading.device_id, value)
            return opened, dict(opened), False
        pending = {
            "status": "pending",
            "direction": rule.direction,
            "sensor_type": reading.sensor_type,
            "event_id": reading.event_id,
            "site_id": reading.site_id,
            "zone_id": reading.zone_id,
            "value": value,
            "ts_us": reading.ts_us,
            "peak_value": value,
        }
        return pending, None, False
    peak = max(episode["peak_value"], value) if above else min(episode["peak_value"], value)
    if reading.ts_us - episode["ts_us"] >= rule.for_us:
        opened = _opened(rule, episode, reading.device_id, peak)
        return opened, dict(opened), False
    episode["peak_value"] = peak
    return episode, None, False


def stale_opened(
    device_id: str,
    site_id: str,
    zone_id: str,
    sensor_type: str,
    value: float,
    ts_us: int,
    event_id: str,
    stale_after_s: int,
) -> dict:
    """The open message of a stale episode: the last reading (ts_us, value, event_id) is more than stale_after_s
    behind its partition's watermark (SPEC §9)."""
    return {
        "alert_id": stale_alert_id(device_id, sensor_type, event_id),
        "status": "open",
        "rule": STALE_RULE,
        "alert_type": STALE_ALERT_TYPE,
        "device_id": device_id,
        "site_id": site_id,
        "zone_id": zone_id,
        "sensor_type": sensor_type,
        "threshold": float(stale_after_s),
        "value": value,
        "peak_value": value,
        "opened_at": iso_utc(ts_us + stale_after_s * 1_000_000),
        "resolved_at": None,
        "event_id": event_id,
        "rule_id": None,
        "severity": STALE_SEVERITY,
    }


def stale_resolved(episode: dict, ts_us: int, event_id: str) -> dict:
    """A stale episode ends at the sensor's next accepted reading."""
    resolved = dict(episode, status="resolved", resolved_at=iso_utc(ts_us))
    resolved["resolved_event_id"] = event_id
    return resolved
