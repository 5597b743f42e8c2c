"""Response models of the devices and what they send: sites, devices and their latest readings (/sites,
/devices), the live zone status (/status), and the answers of POST /ingest. Times are ISO-8601 UTC (`Z`)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from telemetrypulse.api.alert_schemas import Alert
from telemetrypulse.api.schemas import ApiModel, Level, SensorType, UtcDatetime


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
