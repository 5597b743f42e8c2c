"""Response models of the stored history (SPEC §7, issue 14): window trends (/trends), the zone heatmap
(/heatmap) and raw readings (/readings; /trends and /readings also answer as CSV, with the same rows). Times are
ISO-8601 UTC (`Z`)."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from telemetrypulse.api.schemas import ApiModel, HeatmapMetric, Level, SensorType, UtcDatetime, WindowSize


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
