"""The vocabulary every request and response model of the API shares, and the service's own answers.

Enums of query parameters and fields (sensor types, window sizes, formats), `UtcDatetime` (every time out is
ISO-8601 UTC with `Z`), the `ApiModel` base, the 4xx/503 body (`ErrorResponse`), the health answers, and the
rules every body an operator writes follows (`OperatorInput`, `PlainText`, `OperatorName`). The models of each
resource live beside it, named for what they return: device_schemas.py, history_schemas.py, alert_schemas.py,
webhook_schemas.py, rule_schemas.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class SensorType(StrEnum):
    co2 = "co2"
    temperature = "temperature"
    humidity = "humidity"
    occupancy = "occupancy"


class WindowSize(StrEnum):
    five_minutes = "5m"
    fifteen_minutes = "15m"
    hour = "1h"
    day = "1d"

    @property
    def seconds(self) -> int:
        return _WINDOW_SECONDS[self.value]

    @property
    def device_table(self) -> str:
        """Device-level windows of this size (1h and 1d: roll-ups of 15m, migration 0006)."""
        return f"telemetry_device_agg_{self.value}"

    @property
    def zone_view(self) -> str:
        """The exact zone roll-up of the device windows."""
        return f"telemetry_agg_{self.value}"


_WINDOW_SECONDS = {"5m": 300, "15m": 900, "1h": 3600, "1d": 86400}


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"


class HeatmapMetric(StrEnum):
    avg = "avg"
    max = "max"


class AlertStatus(StrEnum):
    open = "open"
    resolved = "resolved"


Level = Literal["ok", "warn", "alert"]
Severity = Literal["info", "warning", "critical"]
DeliveryState = Literal["pending", "delivered", "expired"]


def _as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# pydantic writes a UTC datetime with `Z`; converting on the way in makes every output UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class ApiModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class FieldError(BaseModel):
    location: str = Field(description="Where the problem is: `query.window`, `body.3`, `header.x-api-key`, …")
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx and 503 body."""

    error: str = Field(description="Machine-readable reason", examples=["invalid_parameter"])
    detail: str = Field(
        description="Human-readable explanation",
        examples=["query.window: Input should be '5m', '15m', '1h' or '1d' (got '2h')"],
    )
    errors: list[FieldError] = Field(
        default_factory=list, description="One entry per offending field, if any"
    )


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class DependencyCheck(BaseModel):
    ok: bool
    latency_ms: float = Field(description="Time the check took")
    detail: str | None = Field(None, description="Why the check failed")


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, DependencyCheck] = Field(description="`postgres` and `kafka`")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "checks": {
                        "postgres": {"ok": True, "latency_ms": 1.2},
                        "kafka": {"ok": True, "latency_ms": 3.4},
                    },
                }
            ]
        }
    )


# ---------------------------------------------------------------- request bodies operators write


def _plain_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded: both are the client's error.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


PlainText = Annotated[str, AfterValidator(_plain_text)]
OperatorName = Annotated[
    PlainText,
    Field(
        min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$", description="Who (a name, 1-100 chars)"
    ),
]


class OperatorInput(BaseModel):
    """A request body an operator writes: unknown fields are refused, surrounding spaces dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
