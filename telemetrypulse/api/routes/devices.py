"""`GET /devices` (filterable list, keyset pages) and `GET /devices/{device_id}` (the drill-down)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from telemetrypulse.access import Scope
from telemetrypulse.api.alert_feed import ALERT_COLUMNS, ALERT_SOURCE
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.data_access import WhereClause
from telemetrypulse.api.deps import ID_PATTERN, DeviceIdPath, LimitQuery, ReaderDep, SiteIdQuery, ZoneIdQuery
from telemetrypulse.api.device_schemas import DeviceDetail, DeviceList
from telemetrypulse.api.errors import NotFound
from telemetrypulse.api.routes.common import NOT_FOUND, READ_ERRORS, unit_of

# Reads need the read scope once some key has it (SPEC §10).
router = APIRouter(
    prefix="/devices",
    tags=["devices"],
    dependencies=[READ_ACCESS],
    responses={**READ_ERRORS, **auth_errors(Scope.read)},
)

AfterQuery = Annotated[
    str | None,
    Query(
        pattern=ID_PATTERN,
        description="Return devices after this device_id (the previous page's next_cursor)",
    ),
]


@router.get("", response_model=DeviceList, summary="Devices, optionally of one site or zone")
async def list_devices(
    reader: ReaderDep,
    site_id: SiteIdQuery = None,
    zone_id: ZoneIdQuery = None,
    limit: LimitQuery = 1000,
    after: AfterQuery = None,
) -> DeviceList:
    """Devices with an accepted reading, ordered by device_id; site and zone are those of the latest reading."""
    where = WhereClause().equals("site_id", site_id).equals("zone_id", zone_id)
    if after is not None:
        where.add("device_id > {}", after)
    rows = await reader.fetch(
        f"""
        SELECT device_id,
               (array_agg(site_id ORDER BY ts_event DESC))[1] AS site_id,
               (array_agg(zone_id ORDER BY ts_event DESC))[1] AS zone_id,
               array_agg(sensor_type ORDER BY sensor_type)     AS sensor_types,
               max(ts_event)                                   AS last_seen
        FROM telemetry_device_latest {where.sql()}
        GROUP BY device_id ORDER BY device_id LIMIT {where.param(limit + 1)}
        """,
        *where.args,
    )
    items = [dict(r) for r in rows[:limit]]
    return DeviceList(items=items, next_cursor=items[-1]["device_id"] if len(rows) > limit else None)


@router.get(
    "/{device_id}",
    response_model=DeviceDetail,
    responses=NOT_FOUND,
    summary="One device: latest values, open alerts",
)
async def get_device(device_id: DeviceIdPath, reader: ReaderDep) -> DeviceDetail:
    """Latest accepted reading per sensor, when it was last seen, and its open alerts. 404 if never seen."""
    latest = await reader.fetch(
        "SELECT sensor_type, value, ts_event, event_id, site_id, zone_id"
        " FROM telemetry_device_latest WHERE device_id = $1 ORDER BY sensor_type",
        device_id,
    )
    alerts = await reader.fetch(
        f"SELECT {ALERT_COLUMNS} FROM {ALERT_SOURCE} WHERE a.device_id = $1 AND a.status = 'open'"
        " ORDER BY a.opened_at DESC, a.alert_id DESC",
        device_id,
    )
    if not latest and not alerts:
        raise NotFound(f"device {device_id!r} has never been seen")
    if latest:
        newest = max(latest, key=lambda r: r["ts_event"])
        site_id, zone_id, last_seen = newest["site_id"], newest["zone_id"], newest["ts_event"]
    else:
        site_id, zone_id, last_seen = alerts[0]["site_id"], alerts[0]["zone_id"], None
    sensors = [
        {
            "sensor_type": r["sensor_type"],
            "value": r["value"],
            "unit": unit_of(r["sensor_type"]),
            "ts_event": r["ts_event"],
            "event_id": r["event_id"],
        }
        for r in latest
    ]
    return DeviceDetail(
        device_id=device_id,
        site_id=site_id,
        zone_id=zone_id,
        last_seen=last_seen,
        sensors=sensors,
        open_alerts=[dict(a) for a in alerts],
    )
