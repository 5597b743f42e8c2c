"""`GET /sites`: the sites that have devices, with their zones."""

from __future__ import annotations

from fastapi import APIRouter

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.deps import ReaderDep
from telemetrypulse.api.device_schemas import SiteList
from telemetrypulse.api.routes.common import UNAVAILABLE

# Reads need the read scope once some key has it (SPEC §10).
router = APIRouter(
    prefix="/sites",
    tags=["sites"],
    dependencies=[READ_ACCESS],
    responses={**UNAVAILABLE, **auth_errors(Scope.read)},
)

SITES_SQL = """
SELECT site_id,
       array_agg(DISTINCT zone_id ORDER BY zone_id)         AS zones,
       count(DISTINCT device_id)::int                        AS device_count,
       array_agg(DISTINCT sensor_type ORDER BY sensor_type) AS sensor_types,
       max(ts_event)                                         AS last_seen
FROM telemetry_device_latest
GROUP BY site_id
ORDER BY site_id
"""


@router.get("", response_model=SiteList, summary="Sites with their zones and device counts")
async def list_sites(reader: ReaderDep) -> SiteList:
    """Sites known from the devices' latest readings."""
    rows = await reader.fetch(SITES_SQL)
    return SiteList(items=[dict(r) for r in rows])
