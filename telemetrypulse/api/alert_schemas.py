"""Request and response models of alerts: the alert as listed and streamed (/alerts), and its lifecycle (SPEC
§10) — acknowledgements, notes and the timeline operators and the notifier add to it. Times are ISO-8601 UTC
(`Z`)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from telemetrypulse.api.schemas import (
    AlertStatus,
    ApiModel,
    OperatorInput,
    OperatorName,
    PlainText,
    SensorType,
    Severity,
    UtcDatetime,
)


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


class AlertPage(ApiModel):
    items: list[Alert] = Field(description="Newest first (by opened_at, then alert_id)")
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )


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
