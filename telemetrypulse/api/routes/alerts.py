"""`GET /alerts` (newest first, keyset cursor) and `GET /alerts/stream` (server-sent events).

The stream sends `event: alert` with the alert as JSON and `id: <change_seq>` each time an alert opens
or resolves, and `event: heartbeat` when idle. A client reconnecting with `Last-Event-ID` (browsers do
this by themselves) first gets every change after that id, then the live feed: nothing is lost between.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from telemetrypulse.api.alert_feed import ALERT_COLUMNS
from telemetrypulse.api.database import WhereClause
from telemetrypulse.api.deps import (
    DeviceIdQuery,
    LimitQuery,
    ReaderDep,
    SensorTypeQuery,
    SinceQuery,
    SiteIdQuery,
    StateDep,
    StatusQuery,
    ZoneIdQuery,
)
from telemetrypulse.api.errors import InvalidParameter
from telemetrypulse.api.routes.common import READ_ERRORS
from telemetrypulse.api.schemas import Alert, AlertPage
from telemetrypulse.models import from_us, iso_utc, now_us, to_us

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=READ_ERRORS)

MAX_SEQ = 2**63 - 1
RECONNECT_MS = 3000

CursorQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="The previous page's `next_cursor` (opaque)",
        examples=["MTcxNDU2NDgwMDAwMDAwMC4..."],
    ),
]


def encode_cursor(opened_at: datetime, alert_id: UUID) -> str:
    raw = f"{to_us(opened_at)}.{alert_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        us_text, id_text = raw.split(".", 1)
        return from_us(int(us_text)), UUID(id_text)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise InvalidParameter("query.cursor: not a cursor returned by this API") from None


@router.get("", response_model=AlertPage, summary="Alerts, newest first, cursor-paginated")
async def list_alerts(
    reader: ReaderDep,
    status: StatusQuery = None,
    site_id: SiteIdQuery = None,
    zone_id: ZoneIdQuery = None,
    device_id: DeviceIdQuery = None,
    sensor_type: SensorTypeQuery = None,
    since: SinceQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> AlertPage:
    """Ordered by `opened_at` then `alert_id`, both descending. `since` keeps alerts opened at or after it."""
    where = WhereClause()
    where.equals("status", status.value if status else None).equals("site_id", site_id)
    where.equals("zone_id", zone_id).equals("device_id", device_id)
    where.equals("sensor_type", sensor_type.value if sensor_type else None)
    if since is not None:
        where.add("opened_at >= {}", since)
    if cursor is not None:
        opened_at, alert_id = decode_cursor(cursor)
        where.add("(opened_at, alert_id) < ({}, {})", opened_at, alert_id)
    rows = await reader.fetch(
        f"SELECT {ALERT_COLUMNS} FROM telemetry_alerts {where.sql()}"
        f" ORDER BY opened_at DESC, alert_id DESC LIMIT {where.param(limit + 1)}",
        *where.args,
    )
    items = [dict(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1]["opened_at"], items[-1]["alert_id"]) if len(rows) > limit else None
    return AlertPage(items=items, next_cursor=next_cursor)


def resume_point(
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Resume after this change_seq (set by browsers)"),
    ] = None,
    since_seq: Annotated[
        int | None,
        Query(
            ge=0, le=MAX_SEQ, description="Resume after this change_seq when no Last-Event-ID header is sent"
        ),
    ] = None,
) -> int | None:
    """The header wins: on a reconnect the browser sends the newest id it saw, fresher than the URL's."""
    if last_event_id is None or not last_event_id.strip():
        return since_seq
    text = last_event_id.strip()
    if not text.isdigit() or int(text) > MAX_SEQ:
        raise InvalidParameter(
            f"header.last-event-id: expected a change_seq (integer >= 0), got {text[:40]!r}"
        )
    return int(text)


def _alert_event(row: dict) -> ServerSentEvent:
    return ServerSentEvent(data=Alert.model_validate(row), event="alert", id=str(row["change_seq"]))


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    summary="Live alert changes (server-sent events)",
    responses={200: {"description": "`event: alert` (data: Alert, id: change_seq) and `event: heartbeat`"}},
)
async def stream_alerts(
    state: StateDep,
    # A dependency, not code in the generator: a bad value must get its 422 before the 200 stream starts.
    resume_after: Annotated[int | None, Depends(resume_point)],
    heartbeat_s: Annotated[
        float | None, Query(ge=1, le=300, description="Seconds between heartbeats")
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Without a resume point the stream starts with changes from now on."""
    heartbeat = heartbeat_s or state.options.sse_heartbeat_s
    feed = state.feed
    # Subscribe before reading the backlog, so a change committed in between is in the queue.
    subscription = feed.subscribe()
    try:
        yield ServerSentEvent(event="hello", data={"resume_after": resume_after}, retry=RECONNECT_MS)
        replayed: set[int] = set()
        if resume_after is not None:
            after = resume_after
            while True:
                rows = await feed.since(after)
                for row in rows:
                    replayed.add(row["change_seq"])
                    yield _alert_event(row)
                if len(rows) < 1000:
                    break
                after = rows[-1]["change_seq"]
        queue = subscription.queue
        while not subscription.overflowed.is_set():
            try:
                row = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield ServerSentEvent(
                    event="heartbeat", data={"server_time": iso_utc(now_us()), "listening": feed.listening}
                )
                continue
            if row["change_seq"] in replayed:
                replayed.discard(row["change_seq"])
                continue
            yield _alert_event(row)
        # Fell too far behind (or shutting down): end the stream; the client reconnects with its Last-Event-ID.
    finally:
        feed.unsubscribe(subscription)
