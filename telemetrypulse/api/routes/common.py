"""What several routers share: documented error responses, units and threshold levels."""

from __future__ import annotations

from typing import Any

from telemetrypulse.alerts import RULES
from telemetrypulse.api.schemas import ErrorResponse, Level, Thresholds
from telemetrypulse.models import SENSOR_UNITS

INVALID = {422: {"model": ErrorResponse, "description": "A parameter is invalid (the message names it)"}}
UNAVAILABLE = {503: {"model": ErrorResponse, "description": "PostgreSQL (or Kafka) is not reachable; retry"}}
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such resource"}}
BAD_BODY = {400: {"model": ErrorResponse, "description": "The body is not valid JSON"}}
READ_ERRORS: dict[int | str, dict[str, Any]] = {**INVALID, **UNAVAILABLE}


def unit_of(sensor_type: str) -> str:
    return SENSOR_UNITS[sensor_type]


def thresholds_of(sensor_type: str) -> Thresholds | None:
    rule = RULES.get(sensor_type)
    if rule is None:
        return None
    return Thresholds(open_above=rule.open_above, resolve_at_or_below=rule.resolve_at_or_below)


def level_of(sensor_type: str, value: float | None) -> Level | None:
    """`alert` above the open threshold, `warn` between resolve level and threshold, else `ok`."""
    rule = RULES.get(sensor_type)
    if rule is None or value is None:
        return None
    if value > rule.open_above:
        return "alert"
    if value > rule.resolve_at_or_below:
        return "warn"
    return "ok"
