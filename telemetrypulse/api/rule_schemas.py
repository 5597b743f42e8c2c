"""Request and response models of alert rules (SPEC §9, /rules): a new rule version as written, and the
versions as kept. Times are ISO-8601 UTC (`Z`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from telemetrypulse.api.deps import parse_query_time
from telemetrypulse.api.schemas import ApiModel, OperatorInput, SensorType, Severity, UtcDatetime

EventTime = Annotated[datetime, BeforeValidator(parse_query_time)]
Direction = Literal["above", "below"]
ScopeId = Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Threshold = Annotated[float, Field(allow_inf_nan=False)]


class RuleIn(OperatorInput):
    """A new version of a rule. `above` opens when value > open_at and resolves at the first value ≤ resolve_at
    (resolve_at ≤ open_at); `below` opens when value < open_at and resolves at the first value ≥ resolve_at
    (resolve_at ≥ open_at). Scope: nothing (every device), `site_id`, `site_id` + `zone_id`, or `device_id` alone."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sensor_type": "temperature",
                    "direction": "below",
                    "open_at": 2.0,
                    "resolve_at": 3.0,
                    "site_id": "site-01",
                    "zone_id": "cold-room",
                    "for_s": 120,
                    "severity": "critical",
                }
            ]
        },
    )

    sensor_type: SensorType
    direction: Direction
    open_at: Threshold = Field(description="The level a reading must pass to open an episode")
    resolve_at: Threshold = Field(description="The level that resolves an open episode (hysteresis)")
    site_id: ScopeId = Field(None, description="Only devices of this site")
    zone_id: ScopeId = Field(None, description="Only devices of this zone (needs site_id)")
    device_id: ScopeId = Field(None, description="Only this device (alone: no site_id or zone_id)")
    for_s: float = Field(
        0.0,
        ge=0,
        le=30 * 86400,
        allow_inf_nan=False,
        description="Seconds of event time a violation must last",
    )
    severity: Severity = "warning"
    enabled: bool = True
    effective_from: EventTime | None = Field(
        None, description="Event time from which this version applies (ISO-8601 with offset); default: now"
    )


class RuleVersionOut(ApiModel):
    version_id: str = Field(description="This version's id")
    version: int = Field(description="1 for the rule's first version, 2 for the next, …")
    revision: int = Field(
        description="Its place in the rules topic, the order every worker applies (0: built in)"
    )
    rule_id: str
    sensor_type: SensorType
    direction: Direction
    open_at: float
    resolve_at: float
    site_id: str | None
    zone_id: str | None
    device_id: str | None
    for_s: float
    severity: Severity
    enabled: bool
    effective_from: UtcDatetime = Field(description="Applies to readings with ts_event at or after this")
    created_at: UtcDatetime
    created_by: str | None = Field(description="Name of the API key that wrote it")


class RuleSummary(RuleVersionOut):
    """A rule as its latest version defines it."""

    version_count: int = Field(description="How many versions the rule has")


class RuleDetail(RuleSummary):
    versions: list[RuleVersionOut] = Field(description="Every version, oldest first")


class RuleList(ApiModel):
    items: list[RuleSummary] = Field(description="Each rule's latest version, by rule_id")
