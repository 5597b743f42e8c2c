"""Response models of the API, named for what they return. Times are ISO-8601 UTC (`Z`)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


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


class Site(ApiModel):
    site_id: str = Field(examples=["site-01"])
    zones: list[str] = Field(description="Zone ids with at least one device", examples=[["zone-a", "zone-b"]])
    device_count: int = Field(ge=0)
    sensor_types: list[SensorType]
    last_seen: UtcDatetime = Field(description="Greatest event time of any latest reading in the site")


class SiteList(ApiModel):
    items: list[Site]


class DeviceSummary(ApiModel):
    device_id: str = Field(examples=["dev-0001"])
    site_id: str
    zone_id: str
    sensor_types: list[SensorType]
    last_seen: UtcDatetime = Field(description="Event time of the device's most recent accepted reading")


class DeviceList(ApiModel):
    items: list[DeviceSummary]
    next_cursor: str | None = Field(
        None, description="Pass as `after` for the next page; null on the last page"
    )


class SensorReading(ApiModel):
    sensor_type: SensorType
    value: float
    unit: str = Field(examples=["ppm"])
    ts_event: UtcDatetime
    event_id: UUID


class Alert(ApiModel):
    alert_id: UUID
    status: AlertStatus
    rule: str = Field(
        description="`threshold` (a rule of /rules) or `stale` (a sensor gone quiet)", examples=["threshold"]
    )
    alert_type: str = Field(examples=["CO2_HIGH"])
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: SensorType
    threshold: float
    value: float = Field(description="The opening reading")
    peak_value: float = Field(description="Highest accepted value while open")
    opened_at: UtcDatetime
    resolved_at: UtcDatetime | None
    event_id: UUID = Field(description="The opening reading's event_id")
    change_seq: int = Field(description="Position in the alert change feed (the SSE `id`)")
    rule_id: str | None = Field(
        None, description="The rule that opened it (SPEC §9); null for stale-sensor alerts"
    )
    severity: Severity = Field("warning", description="info, warning or critical")
    acknowledged: bool = Field(False, description="An operator acknowledged it (POST /alerts/{alert_id}/ack)")
    acknowledged_by: str | None = Field(None, description="Who acknowledged it, as they said")
    acknowledged_at: UtcDatetime | None = None

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "alert_id": "4b1e6f53-3c1d-5c8e-9a57-0d6f0f3b7f21",
                    "status": "open",
                    "rule": "threshold",
                    "alert_type": "CO2_HIGH",
                    "device_id": "dev-0001",
                    "site_id": "site-01",
                    "zone_id": "zone-a",
                    "sensor_type": "co2",
                    "threshold": 1000.0,
                    "value": 1042.0,
                    "peak_value": 1180.5,
                    "opened_at": "2024-05-01T12:03:10Z",
                    "resolved_at": None,
                    "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                    "change_seq": 42,
                    "rule_id": None,
                    "severity": "warning",
                    "acknowledged": True,
                    "acknowledged_by": "alice",
                    "acknowledged_at": "2024-05-01T12:05:02Z",
                }
            ]
        },
    )


class DeviceDetail(ApiModel):
    device_id: str
    site_id: str = Field(description="Site of the most recent reading")
    zone_id: str = Field(description="Zone of the most recent reading")
    last_seen: UtcDatetime | None
    sensors: list[SensorReading] = Field(description="Latest accepted reading per sensor")
    open_alerts: list[Alert]


class ZoneSensorStatus(ApiModel):
    site_id: str
    zone_id: str
    sensor_type: SensorType
    unit: str
    latest_value: float = Field(
        description="Mean of the latest readings of the zone's devices for this sensor"
    )
    latest_ts: UtcDatetime = Field(description="Event time of the newest of those readings")
    device_count: int = Field(description="Devices contributing to `latest_value`")
    window_start: UtcDatetime = Field(description="Start of the 5-minute window containing `latest_ts`")
    window_end: UtcDatetime
    window_avg: float | None = Field(
        description="Zone average over that window (null if it has no aggregate yet)"
    )
    window_min: float | None
    window_max: float | None
    window_count: int = Field(description="Events aggregated in that window")
    level: Level | None = Field(description="`latest_value` against the alert thresholds; null for occupancy")

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "site_id": "site-01",
                    "zone_id": "zone-a",
                    "sensor_type": "temperature",
                    "unit": "celsius",
                    "latest_value": 23.4,
                    "latest_ts": "2024-05-01T12:04:58Z",
                    "device_count": 3,
                    "window_start": "2024-05-01T12:00:00Z",
                    "window_end": "2024-05-01T12:05:00Z",
                    "window_avg": 23.1,
                    "window_min": 22.7,
                    "window_max": 23.6,
                    "window_count": 180,
                    "level": "ok",
                }
            ]
        },
    )


class LiveStatus(ApiModel):
    site_id: str | None
    generated_at: UtcDatetime
    items: list[ZoneSensorStatus]


class TrendPoint(ApiModel):
    window_start: UtcDatetime
    window_end: UtcDatetime
    count_events: int
    avg_value: float
    min_value: float
    max_value: float
    stddev_value: float = Field(description="Population standard deviation of the window's readings")
    device_count: int

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "window_start": "2024-05-01T12:00:00Z",
                    "window_end": "2024-05-01T12:05:00Z",
                    "count_events": 180,
                    "avg_value": 812.4,
                    "min_value": 640.0,
                    "max_value": 1010.5,
                    "stddev_value": 92.7,
                    "device_count": 3,
                }
            ]
        },
    )


class TrendSeries(ApiModel):
    sensor_type: SensorType
    unit: str
    points: list[TrendPoint]


class TrendScope(BaseModel):
    site_id: str | None = None
    zone_id: str | None = None
    device_id: str | None = None


class Trends(ApiModel):
    window: WindowSize
    scope: TrendScope
    start: UtcDatetime = Field(description="Inclusive; windows starting at or after it")
    end: UtcDatetime = Field(description="Exclusive; windows starting before it")
    series: list[TrendSeries] = Field(description="One series per sensor type with data, points oldest first")


class Thresholds(BaseModel):
    open_above: float
    resolve_at_or_below: float


class HeatmapCell(BaseModel):
    value: float = Field(description="The chosen metric (avg or max) for the zone in the window")
    count_events: int
    device_count: int
    avg_value: float
    min_value: float
    max_value: float
    stddev_value: float = Field(
        description="Population standard deviation of the zone's readings in the window"
    )
    level: Level | None = Field(
        description="ok ≤ resolve level < warn ≤ open threshold < alert; null for occupancy"
    )

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "value": 812.4,
                    "count_events": 180,
                    "device_count": 3,
                    "avg_value": 812.4,
                    "min_value": 640.0,
                    "max_value": 1010.5,
                    "stddev_value": 92.7,
                    "level": "ok",
                }
            ]
        },
    )


class Heatmap(ApiModel):
    sensor_type: SensorType
    unit: str
    window: WindowSize
    metric: HeatmapMetric
    window_start: UtcDatetime | None = Field(description="null when there is no data at all for this sensor")
    window_end: UtcDatetime | None
    thresholds: Thresholds | None
    sites: list[str] = Field(description="Row labels")
    zones: list[str] = Field(description="Column labels")
    cells: list[list[HeatmapCell | None]] = Field(
        description="cells[row][column]; null where the zone has no data"
    )


class Reading(ApiModel):
    """One stored raw reading (SPEC §7 `telemetry_events`): accepted or too late, never a duplicate."""

    ts_event: UtcDatetime
    event_id: UUID
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: SensorType
    value: float
    unit: str = Field(examples=["ppm"])
    late: bool = Field(description="Too late for windows and alerts (SPEC §4): stored and counted only")
    ts_ingest: UtcDatetime = Field(description="When the event reached Kafka")


class ReadingPage(ApiModel):
    device_id: str
    sensor_type: SensorType | None
    start: UtcDatetime = Field(description="Inclusive")
    end: UtcDatetime = Field(description="Exclusive")
    items: list[Reading] = Field(description="Oldest first (by ts_event, then event_id)")
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` (same other parameters) for the next page; null on the last page"
    )


class AlertPage(ApiModel):
    items: list[Alert] = Field(description="Newest first (by opened_at, then alert_id)")
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )


class IngestAccepted(BaseModel):
    accepted: int = Field(examples=[1])
    event_ids: list[str] = Field(examples=[["0f8fad5b-d9cb-469f-a165-70867728950e"]])


class IngestItemError(BaseModel):
    index: int = Field(description="Position of the item in the submitted array")
    error: str = Field(description="Reason code, as in the DLQ (SPEC §6)", examples=["invalid_field"])
    detail: str


class IngestBatchResult(BaseModel):
    accepted: int
    rejected: int
    event_ids: list[str] = Field(description="Ids of the accepted events, in submission order")
    errors: list[IngestItemError] = Field(description="One entry per rejected item")


# ---------------------------------------------------------------- alert lifecycle (SPEC §10)


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


class AcknowledgeIn(OperatorInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"by": "alice", "note": "window opened, watching it"}]}
    )

    by: OperatorName
    note: Annotated[PlainText, Field(max_length=2000)] | None = Field(
        None, description="Optional words kept with the acknowledgement"
    )


class NoteIn(OperatorInput):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"by": "bob", "text": "facility team is on it"}]}
    )

    by: OperatorName
    text: Annotated[PlainText, Field(min_length=1, max_length=4000, description="The note, 1-4000 chars")]


class Acknowledgement(ApiModel):
    by: str
    at: UtcDatetime
    note: str | None
    key_name: str | None = Field(description="Name of the API key that acknowledged it")


class Note(ApiModel):
    note_id: int
    by: str
    text: str
    created_at: UtcDatetime
    key_name: str | None = Field(description="Name of the API key that wrote it")


TimelineKind = Literal["opened", "acknowledged", "note", "resolved", "delivered", "delivery_expired"]


class TimelineEntry(ApiModel):
    at: UtcDatetime
    kind: TimelineKind
    by: str | None = Field(None, description="The operator, or the webhook receiver of a delivery")
    text: str | None = None


class AlertDetail(Alert):
    """The alert with what operators and the notifier added. `opened_at`/`resolved_at` are event time (the
    readings' clocks); acknowledgements, notes and deliveries are server time."""

    acknowledgement: Acknowledgement | None
    notes: list[Note] = Field(description="Oldest first")
    timeline: list[TimelineEntry] = Field(description="Everything that happened to the alert, oldest first")


# ---------------------------------------------------------------- webhooks


class WebhookIn(OperatorInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/telemetry",
                    "site_id": "site-01",
                    "min_severity": "warning",
                }
            ]
        },
    )

    url: Annotated[PlainText, Field(min_length=1, max_length=2000, description="http:// or https:// URL")]
    site_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Only alerts of this site (default: every site)"
    )
    min_severity: Severity = Field("info", description="Only alerts of at least this severity")


class Webhook(ApiModel):
    name: str
    url: str
    site_id: str | None
    min_severity: Severity
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WebhookList(ApiModel):
    items: list[Webhook] = Field(
        description="Receivers kept by PUT /webhooks/{name}, by name (WEBHOOK_URLS not shown)"
    )


class WebhookDelivery(ApiModel):
    receiver: str = Field(description="Webhook name, or `env-…` for a URL of WEBHOOK_URLS")
    delivery_id: str = Field(description="`{alert_id}:{status}`, the X-TelemetryPulse-Delivery header")
    alert_id: UUID
    status: AlertStatus
    state: DeliveryState = Field(description="pending (to send or retry), delivered (2xx recorded), expired")
    attempts: int
    created_at: UtcDatetime
    next_attempt_at: UtcDatetime | None = Field(description="When it is tried next (pending only)")
    last_attempt_at: UtcDatetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: UtcDatetime | None
    seq: int = Field(description="Creation order; each receiver is sent in this order")


class WebhookDeliveryPage(ApiModel):
    items: list[WebhookDelivery] = Field(description="Newest first")
    next_cursor: int | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )


# ---------------------------------------------------------------- alert rules (SPEC §9)


def _event_time(value: object) -> datetime:
    from telemetrypulse.api.deps import parse_query_time  # deps imports this module

    return parse_query_time(value)


EventTime = Annotated[datetime, BeforeValidator(_event_time)]
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
