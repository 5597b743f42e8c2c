"""Threshold alert rules and episodes with hysteresis (SPEC §5)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from telemetrypulse.changes import SENSORS
from telemetrypulse.models import iso_utc

RULE = "threshold"
# The namespace and name format of alert ids are public: a consumer can recompute an id.
ALERT_NAMESPACE = uuid.NAMESPACE_URL


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    alert_type: str
    open_above: float
    resolve_at_or_below: float


RULES = {
    "co2": ThresholdRule("CO2_HIGH", 1000.0, 950.0),
    "temperature": ThresholdRule("TEMPERATURE_HIGH", 30.0, 29.0),
    "humidity": ThresholdRule("HUMIDITY_HIGH", 80.0, 77.0),
}


# Per sensor code (changes.SENSORS), the value above which a reading opens an episode; inf: the sensor has no rule.
_OPEN_ABOVE = np.array([RULES[name].open_above if name in RULES else np.inf for name in SENSORS])


def may_change_episode(sensor_codes: np.ndarray, values: np.ndarray, episode_open: np.ndarray) -> np.ndarray:
    """Per accepted reading, whether `step` could do anything with it: an episode of its (device, sensor) is open,
    or the reading would open one. The batch engine walks `step` only over the (device, sensor) groups where this
    holds somewhere, so the rules' thresholds stay in this module."""
    return episode_open | (values > _OPEN_ABOVE[sensor_codes])


def alert_id(device_id: str, sensor_type: str, opening_event_id: str) -> str:
    """UUIDv5 over `telemetrypulse:{device_id}:{sensor_type}:{event_id}` in the URL namespace."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"telemetrypulse:{device_id}:{sensor_type}:{opening_event_id}"))


def new_episode(
    device_id: str, site_id: str, zone_id: str, sensor_type: str, value: float, ts_us: int, event_id: str
) -> dict:
    rule = RULES[sensor_type]
    return {
        "alert_id": alert_id(device_id, sensor_type, event_id),
        "status": "open",
        "rule": RULE,
        "alert_type": rule.alert_type,
        "device_id": device_id,
        "site_id": site_id,
        "zone_id": zone_id,
        "sensor_type": sensor_type,
        "threshold": rule.open_above,
        "value": value,
        "peak_value": value,
        "opened_at": iso_utc(ts_us),
        "resolved_at": None,
        "event_id": event_id,
    }


def step(
    open_episode: dict | None, event, site_id: str, zone_id: str
) -> tuple[dict | None, dict | None, bool]:
    """One accepted reading through the rule of its sensor, in device order.

    Returns (episode still open after it, message to publish or None, whether the open episode's
    peak moved). A reading above the open threshold opens an episode; while open, the peak follows
    the highest reading; the first reading at or below the resolve level ends it.
    """
    rule = RULES.get(event.sensor_type)
    if rule is None:
        return open_episode, None, False
    value = event.value
    if open_episode is None:
        if value > rule.open_above:
            episode = new_episode(
                event.device_id, site_id, zone_id, event.sensor_type, value, event.ts_event_us, event.event_id
            )
            return episode, dict(episode), False
        return None, None, False
    if value <= rule.resolve_at_or_below:
        resolved = dict(open_episode, status="resolved", resolved_at=iso_utc(event.ts_event_us))
        resolved["resolved_event_id"] = event.event_id
        return None, resolved, False
    if value > open_episode["peak_value"]:
        open_episode["peak_value"] = value
        return open_episode, None, True
    return open_episode, None, False
