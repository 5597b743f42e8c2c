"""What several routers share: documented error responses, units and threshold levels, keyset cursors."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from uuid import UUID

from telemetrypulse.alerts import RULES
from telemetrypulse.api.errors import InvalidParameter
from telemetrypulse.api.history_schemas import Thresholds
from telemetrypulse.api.schemas import ErrorResponse, Level
from telemetrypulse.models import SENSOR_UNITS, from_us, to_us

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


def encode_cursor(moment: datetime, row_id: UUID) -> str:
    """An opaque keyset position: a time and the id that breaks ties (alerts: opened_at, alert_id; readings:
    ts_event, event_id)."""
    raw = f"{to_us(moment)}.{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        us_text, id_text = raw.split(".", 1)
        return from_us(int(us_text)), UUID(id_text)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise InvalidParameter("query.cursor: not a cursor returned by this API") from None
