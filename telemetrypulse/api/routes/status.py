"""`GET /status/live`: per zone and sensor, the latest value and the current window's average.

`latest_value` is the mean of the latest readings of the zone's devices (each device counts once,
however often it reports); `latest_ts` is the newest of them. The window is the 5-minute window that
contains `latest_ts` — the open window while data flows, and still meaningful when replaying old data.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.data_access import WhereClause
from telemetrypulse.api.deps import ReaderDep, SiteIdQuery
from telemetrypulse.api.device_schemas import LiveStatus
from telemetrypulse.api.routes.common import READ_ERRORS, level_of, unit_of

# Reads need the read scope once some key has it (SPEC §10).
router = APIRouter(
    prefix="/status",
    tags=["status"],
    dependencies=[READ_ACCESS],
    responses={**READ_ERRORS, **auth_errors(Scope.read)},
)


@router.get(
    "/live", response_model=LiveStatus, summary="Latest value and current-window average per zone and sensor"
)
async def live_status(reader: ReaderDep, site_id: SiteIdQuery = None) -> LiveStatus:
    where = WhereClause().equals("site_id", site_id)
    # The window roll-up is computed per row from the device table (the view's formula): joining the
    # view instead lets PostgreSQL flatten it and aggregate every window ever stored before joining.
    # An aggregate inside LATERAL stays a per-row index lookup on (site_id, zone_id, sensor_type, window_start).
    rows = await reader.fetch(
        f"""
        WITH latest AS (
            SELECT site_id, zone_id, sensor_type,
                   avg(value)                                                   AS latest_value,
                   max(ts_event)                                                AS latest_ts,
                   count(*)::int                                                AS device_count,
                   date_bin('5 minutes', max(ts_event), timestamptz 'epoch')    AS window_start
            FROM telemetry_device_latest {where.sql()}
            GROUP BY site_id, zone_id, sensor_type
        )
        SELECT l.*, l.window_start + interval '5 minutes' AS window_end,
               w.window_avg, w.window_min, w.window_max, coalesce(w.window_count, 0)::bigint AS window_count
        FROM latest l
        CROSS JOIN LATERAL (
            SELECT sum(d.sum_value) / sum(d.count_events) AS window_avg,
                   min(d.min_value)                       AS window_min,
                   max(d.max_value)                       AS window_max,
                   sum(d.count_events)                    AS window_count
            FROM telemetry_device_agg_5m d
            WHERE d.site_id = l.site_id AND d.zone_id = l.zone_id AND d.sensor_type = l.sensor_type
              AND d.window_start = l.window_start
        ) w
        ORDER BY l.site_id, l.zone_id, l.sensor_type
        """,
        *where.args,
    )
    items = [
        dict(r, unit=unit_of(r["sensor_type"]), level=level_of(r["sensor_type"], r["latest_value"]))
        for r in rows
    ]
    return LiveStatus(site_id=site_id, generated_at=datetime.now(UTC), items=items)
