"""`GET /trends`: window aggregates over time for a device, a zone, a site or the whole fleet.

Points are rolled up from the device-level windows exactly as the zone views are (counts and sums add,
min of mins, max of maxes), so a zone trend equals `telemetry_agg_5m`/`15m` and a device trend equals
the device's own rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.data_access import WhereClause
from telemetrypulse.api.deps import (
    DeviceIdQuery,
    EndQuery,
    ReaderDep,
    SensorTypeQuery,
    SiteIdQuery,
    StartQuery,
    WindowQuery,
    ZoneIdQuery,
)
from telemetrypulse.api.errors import InvalidParameter
from telemetrypulse.api.routes.common import READ_ERRORS, unit_of
from telemetrypulse.api.schemas import Trends, TrendScope, WindowSize

# Reads need the read scope once some key has it (SPEC §10).
router = APIRouter(
    prefix="/trends",
    tags=["trends"],
    dependencies=[READ_ACCESS],
    responses={**READ_ERRORS, **auth_errors(Scope.read)},
)

DEFAULT_SPAN = {WindowSize.five_minutes: timedelta(hours=6), WindowSize.fifteen_minutes: timedelta(hours=24)}
MAX_WINDOWS = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to_window(moment: datetime, window: WindowSize) -> datetime:
    # timedelta // timedelta is exact; float seconds would round 12:04:59.999999 into the next window.
    size = timedelta(seconds=window.seconds)
    return EPOCH + (moment - EPOCH) // size * size


@router.get("", response_model=Trends, summary="Window aggregates over time")
async def get_trends(
    reader: ReaderDep,
    site_id: SiteIdQuery = None,
    zone_id: ZoneIdQuery = None,
    device_id: DeviceIdQuery = None,
    sensor_type: SensorTypeQuery = None,
    window: WindowQuery = WindowSize.five_minutes,
    start: StartQuery = None,
    end: EndQuery = None,
) -> Trends:
    """Scope: `device_id`, or `site_id` + `zone_id`, or `site_id`, or nothing (all devices); every sensor
    type unless `sensor_type` is given. Windows with `start <= window_start < end` are returned.

    Default range: 6 h of 5m windows or 24 h of 15m windows, ending at `end`, starting at `start`, or —
    when neither is given — ending with the newest window that has data in this scope. At most 10 000
    windows per request.
    """
    if zone_id is not None and site_id is None and device_id is None:
        raise InvalidParameter("query.zone_id: zone ids are per site; give site_id as well")
    where = WhereClause()
    where.equals("device_id", device_id).equals("site_id", site_id).equals("zone_id", zone_id)
    where.equals("sensor_type", sensor_type.value if sensor_type else None)
    table = window.device_table
    span = DEFAULT_SPAN[window]
    if start is None and end is None:
        newest = await reader.fetchval(f"SELECT max(window_end) FROM {table} {where.sql()}", *where.args)
        end = newest or floor_to_window(datetime.now(UTC), window) + timedelta(seconds=window.seconds)
        start = end - span
    elif start is None:
        start = end - span
    elif end is None:
        end = start + span
    if start >= end:
        raise InvalidParameter(
            f"query.start must be before query.end (got {start.isoformat()} >= {end.isoformat()})"
        )
    if (end - start).total_seconds() / window.seconds > MAX_WINDOWS:
        raise InvalidParameter(
            f"query.start/end: at most {MAX_WINDOWS} windows of {window.value} per request; narrow the range"
        )
    where.add("window_start >= {}", start).add("window_start < {}", end)
    rows = await reader.fetch(
        f"""
        SELECT sensor_type, window_start, window_end,
               sum(count_events)::bigint          AS count_events,
               sum(sum_value) / sum(count_events) AS avg_value,
               min(min_value)                     AS min_value,
               max(max_value)                     AS max_value,
               count(*)::int                      AS device_count
        FROM {table} {where.sql()}
        GROUP BY sensor_type, window_start, window_end
        ORDER BY sensor_type, window_start
        """,
        *where.args,
    )
    series: dict[str, list[dict]] = {}
    for row in rows:
        point = dict(row)
        series.setdefault(point.pop("sensor_type"), []).append(point)
    return Trends(
        window=window,
        scope=TrendScope(site_id=site_id, zone_id=zone_id, device_id=device_id),
        start=start,
        end=end,
        series=[{"sensor_type": s, "unit": unit_of(s), "points": points} for s, points in series.items()],
    )
