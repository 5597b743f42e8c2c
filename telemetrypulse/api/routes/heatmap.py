"""`GET /heatmap`: one sensor's site × zone matrix for one window.

Rows and columns are every site and zone known for the sensor (from the latest readings) plus any in the
window, so the layout stays put while a zone is quiet; such a cell is null.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.deps import AtQuery, MetricQuery, ReaderDep, RequiredSensorQuery, WindowQuery
from telemetrypulse.api.history_schemas import Heatmap
from telemetrypulse.api.routes.common import READ_ERRORS, level_of, thresholds_of, unit_of
from telemetrypulse.api.routes.trends import floor_to_window
from telemetrypulse.api.schemas import HeatmapMetric, WindowSize

# Reads need the read scope once some key has it (SPEC §10).
router = APIRouter(
    prefix="/heatmap",
    tags=["heatmap"],
    dependencies=[READ_ACCESS],
    responses={**READ_ERRORS, **auth_errors(Scope.read)},
)


@router.get("", response_model=Heatmap, summary="Site × zone matrix of one sensor in one window")
async def get_heatmap(
    reader: ReaderDep,
    sensor_type: RequiredSensorQuery,
    window: WindowQuery = WindowSize.five_minutes,
    metric: MetricQuery = HeatmapMetric.avg,
    at: AtQuery = None,
) -> Heatmap:
    """The window containing `at`, or by default the newest window with data for this sensor. Each cell
    holds the zone roll-up of that window, `value` being its average or maximum (`metric`) and `level`
    that value against the sensor's alert thresholds."""
    sensor = sensor_type.value
    if at is not None:
        window_start = floor_to_window(at, window)
    else:
        window_start = await reader.fetchval(
            f"SELECT max(window_start) FROM {window.device_table} WHERE sensor_type = $1", sensor
        )
    cells_by_key: dict[tuple[str, str], dict] = {}
    if window_start is not None:
        rows = await reader.fetch(
            f"SELECT site_id, zone_id, count_events, avg_value, min_value, max_value, stddev_value, device_count"
            f" FROM {window.zone_view} WHERE sensor_type = $1 AND window_start = $2",
            sensor,
            window_start,
        )
        for row in rows:
            value = row["avg_value"] if metric is HeatmapMetric.avg else row["max_value"]
            cell = dict(row, value=value, level=level_of(sensor, value))
            cells_by_key[(cell.pop("site_id"), cell.pop("zone_id"))] = cell
    known = await reader.fetch(
        "SELECT DISTINCT site_id, zone_id FROM telemetry_device_latest WHERE sensor_type = $1", sensor
    )
    pairs = {(r["site_id"], r["zone_id"]) for r in known} | set(cells_by_key)
    sites = sorted({site for site, _ in pairs})
    zones = sorted({zone for _, zone in pairs})
    return Heatmap(
        sensor_type=sensor_type,
        unit=unit_of(sensor),
        window=window,
        metric=metric,
        window_start=window_start,
        window_end=None if window_start is None else window_start + timedelta(seconds=window.seconds),
        thresholds=thresholds_of(sensor),
        sites=sites,
        zones=zones,
        cells=[[cells_by_key.get((site, zone)) for zone in zones] for site in sites],
    )
