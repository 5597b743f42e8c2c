"""`GET /trends`: window aggregates over time for a device, a zone, a site or the whole fleet, as JSON or CSV.

Points are rolled up from the device-level windows exactly as the zone views are (counts, sums and sums of
squares add, min of mins, max of maxes; the standard deviation from those sums), so a zone trend equals
`telemetry_agg_<window>` and a device trend equals the device's own rows. 1h and 1d windows are the roll-ups of
the 15m windows that PostgreSQL keeps (migration 0006).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.csv_export import chunked, csv_response, csv_response_doc
from telemetrypulse.api.data_access import WhereClause
from telemetrypulse.api.deps import (
    DeviceIdQuery,
    EndQuery,
    FormatQuery,
    ReaderDep,
    SensorTypeQuery,
    SiteIdQuery,
    StartQuery,
    WindowQuery,
    ZoneIdQuery,
)
from telemetrypulse.api.errors import InvalidParameter
from telemetrypulse.api.history_schemas import TrendPoint, Trends, TrendScope
from telemetrypulse.api.routes.common import READ_ERRORS, unit_of
from telemetrypulse.api.schemas import OutputFormat, WindowSize

# Reads need the read scope once some key has it (SPEC §10).
router = APIRouter(
    prefix="/trends",
    tags=["trends"],
    dependencies=[READ_ACCESS],
    responses={**READ_ERRORS, **auth_errors(Scope.read)},
)

DEFAULT_SPAN = {
    WindowSize.five_minutes: timedelta(hours=6),
    WindowSize.fifteen_minutes: timedelta(hours=24),
    WindowSize.hour: timedelta(days=7),
    WindowSize.day: timedelta(days=30),
}
MAX_WINDOWS = 10_000
# The CSV's columns: a point's fields, each row tagged with its series.
CSV_COLUMNS = ["sensor_type", "unit", *TrendPoint.model_fields]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_to_window(moment: datetime, window: WindowSize) -> datetime:
    # timedelta // timedelta is exact; float seconds would round 12:04:59.999999 into the next window.
    size = timedelta(seconds=window.seconds)
    return EPOCH + (moment - EPOCH) // size * size


@router.get(
    "",
    response_model=Trends,
    summary="Window aggregates over time (JSON or CSV)",
    responses=csv_response_doc("The trend series"),
)
async def get_trends(
    reader: ReaderDep,
    site_id: SiteIdQuery = None,
    zone_id: ZoneIdQuery = None,
    device_id: DeviceIdQuery = None,
    sensor_type: SensorTypeQuery = None,
    window: WindowQuery = WindowSize.five_minutes,
    start: StartQuery = None,
    end: EndQuery = None,
    format: FormatQuery = OutputFormat.json,
) -> Trends | StreamingResponse:
    """Scope: `device_id`, or `site_id` + `zone_id`, or `site_id`, or nothing (all devices); every sensor
    type unless `sensor_type` is given. Windows with `start <= window_start < end` are returned.

    Default range: 6 h of 5m windows, 24 h of 15m, 7 days of 1h or 30 days of 1d windows, ending at `end`,
    starting at `start`, or — when neither is given — ending with the newest window that has data in this
    scope. At most 10 000 windows per request.

    `format=csv`: one row per point, its series' `sensor_type` and `unit` first, then the point's fields.
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
    # Counts are summed as float8 (exact up to 2^53): sum(bigint) accumulates in numeric, about a third of the
    # query's time over a month of hourly windows of a whole fleet.
    rows = await reader.fetch(
        f"""
        SELECT sensor_type, window_start, window_end, n::bigint AS count_events, s / n AS avg_value,
               lo AS min_value, hi AS max_value, telemetry_stddev(n, s, q, lo, hi) AS stddev_value,
               devices AS device_count
        FROM (SELECT sensor_type, window_start, window_end, sum(count_events::float8) AS n, sum(sum_value) AS s,
                     sum(sum_sq_value) AS q, min(min_value) AS lo, max(max_value) AS hi, count(*)::int AS devices
              FROM {table} {where.sql()}
              GROUP BY sensor_type, window_start, window_end) AS windows
        ORDER BY sensor_type, window_start
        """,
        *where.args,
    )
    series: dict[str, list[dict]] = {}
    for row in rows:
        point = dict(row)
        series.setdefault(point.pop("sensor_type"), []).append(point)
    if format is OutputFormat.csv:
        points = TrendPoint.model_fields
        records = [
            [row["sensor_type"], unit_of(row["sensor_type"]), *(row[name] for name in points)] for row in rows
        ]
        return csv_response(f"trends-{window.value}.csv", CSV_COLUMNS, chunked(records))
    return Trends(
        window=window,
        scope=TrendScope(site_id=site_id, zone_id=zone_id, device_id=device_id),
        start=start,
        end=end,
        series=[{"sensor_type": s, "unit": unit_of(s), "points": points} for s, points in series.items()],
    )
