"""`GET /alerts` (newest first, keyset cursor), `GET /alerts/stream` (server-sent events), and the alert
lifecycle (SPEC §10): `GET /alerts/{alert_id}` with acknowledgement, notes and timeline,
`POST /alerts/{alert_id}/ack` and `POST /alerts/{alert_id}/notes` (operate scope).

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
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from telemetrypulse.access import Scope
from telemetrypulse.api import lifecycle
from telemetrypulse.api.alert_feed import ALERT_COLUMNS, ALERT_SOURCE
from telemetrypulse.api.auth import READ_ACCESS, OperateKey, auth_errors
from telemetrypulse.api.data_access import WhereClause
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
from telemetrypulse.api.errors import InvalidParameter, NotFound
from telemetrypulse.api.routes.common import BAD_BODY, NOT_FOUND, READ_ERRORS
from telemetrypulse.api.schemas import (
    AcknowledgeIn,
    Alert,
    AlertDetail,
    AlertPage,
    Note,
    NoteIn,
    Severity,
)
from telemetrypulse.models import from_us, iso_utc, now_us, to_us

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=READ_ERRORS)
READ = {"dependencies": [READ_ACCESS], "responses": auth_errors(Scope.read)}
OPERATE_ERRORS = {**auth_errors(Scope.operate), **NOT_FOUND, **BAD_BODY}

AlertIdPath = Annotated[
    UUID, Path(description="The alert's id (SPEC §5)", examples=["4b1e6f53-3c1d-5c8e-9a57-0d6f0f3b7f21"])
]
AcknowledgedQuery = Annotated[
    bool | None, Query(description="Only acknowledged (true) or only unacknowledged (false) alerts")
]
SeverityQuery = Annotated[Severity | None, Query(description="Only alerts of this severity")]
RuleKindQuery = Annotated[
    Literal["threshold", "stale"] | None,
    Query(description="Only threshold alerts (run-time rules) or only stale-sensor alerts"),
]

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


@router.get("", response_model=AlertPage, summary="Alerts, newest first, cursor-paginated", **READ)
async def list_alerts(
    reader: ReaderDep,
    status: StatusQuery = None,
    site_id: SiteIdQuery = None,
    zone_id: ZoneIdQuery = None,
    device_id: DeviceIdQuery = None,
    sensor_type: SensorTypeQuery = None,
    since: SinceQuery = None,
    acknowledged: AcknowledgedQuery = None,
    severity: SeverityQuery = None,
    rule: RuleKindQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> AlertPage:
    """Ordered by `opened_at` then `alert_id`, both descending. `since` keeps alerts opened at or after it."""
    where = WhereClause()
    where.equals("a.status", status.value if status else None).equals("a.site_id", site_id)
    where.equals("a.zone_id", zone_id).equals("a.device_id", device_id)
    where.equals("a.sensor_type", sensor_type.value if sensor_type else None)
    where.equals("a.severity", severity).equals("a.rule", rule)
    if acknowledged is not None:
        where.add("k.alert_id IS NOT NULL" if acknowledged else "k.alert_id IS NULL")
    if since is not None:
        where.add("a.opened_at >= {}", since)
    if cursor is not None:
        opened_at, alert_id = decode_cursor(cursor)
        where.add("(a.opened_at, a.alert_id) < ({}, {})", opened_at, alert_id)
    rows = await reader.fetch(
        f"SELECT {ALERT_COLUMNS} FROM {ALERT_SOURCE} {where.sql()}"
        f" ORDER BY a.opened_at DESC, a.alert_id DESC LIMIT {where.param(limit + 1)}",
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
    dependencies=[READ_ACCESS],
    responses={
        200: {"description": "`event: alert` (data: Alert, id: change_seq) and `event: heartbeat`"},
        **auth_errors(Scope.read),
    },
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


@router.get(
    "/{alert_id}",
    response_model=AlertDetail,
    summary="One alert with its acknowledgement, notes and timeline",
    dependencies=[READ_ACCESS],
    responses={**auth_errors(Scope.read), **NOT_FOUND},
)
async def get_alert(alert_id: AlertIdPath, reader: ReaderDep) -> AlertDetail:
    detail = await lifecycle.alert_detail(reader, alert_id)
    if detail is None:
        raise NotFound(f"alert {alert_id} is unknown")
    return AlertDetail.model_validate(detail)


@router.post(
    "/{alert_id}/ack",
    response_model=AlertDetail,
    summary="Acknowledge an alert (operate scope); repeating it changes nothing",
    responses=OPERATE_ERRORS,
)
async def acknowledge_alert(
    alert_id: AlertIdPath, body: AcknowledgeIn, response: Response, state: StateDep, key: OperateKey
) -> AlertDetail:
    """Sets `acknowledged_by` and `acknowledged_at` once. A later acknowledgement — by anyone — is answered
    200 with the acknowledgement that stands (header `X-Acknowledged: already`), and changes nothing."""
    added = await lifecycle.acknowledge(state.writer, alert_id, body.by, body.note, key.name)
    if added is None:
        raise NotFound(f"alert {alert_id} is unknown")
    response.headers["X-Acknowledged"] = "now" if added else "already"
    detail = await lifecycle.alert_detail(state.reader, alert_id)
    assert detail is not None  # alerts are never deleted while the API runs
    return AlertDetail.model_validate(detail)


@router.post(
    "/{alert_id}/notes",
    response_model=Note,
    status_code=status.HTTP_201_CREATED,
    summary="Add a note to an alert (operate scope)",
    responses=OPERATE_ERRORS,
)
async def add_note(alert_id: AlertIdPath, body: NoteIn, state: StateDep, key: OperateKey) -> Note:
    note = await lifecycle.add_note(state.writer, alert_id, body.by, body.text, key.name)
    if note is None:
        raise NotFound(f"alert {alert_id} is unknown")
    return Note.model_validate(note)
