"""`GET /alerts` (newest first, keyset cursor), `GET /alerts/stream` (server-sent events), and the alert
lifecycle (SPEC §10): `GET /alerts/{alert_id}` with acknowledgement, notes and timeline,
`POST /alerts/{alert_id}/ack` and `POST /alerts/{alert_id}/notes` (operate scope).

The stream sends `event: alert` with the alert as JSON and `id: <change_seq>` each time an alert opens
or resolves, and `event: heartbeat` when idle. A client reconnecting with `Last-Event-ID` (browsers do
this by themselves) first gets every change after that id, then the live feed: nothing is lost between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, Header, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from telemetrypulse.access import Scope
from telemetrypulse.api import lifecycle
from telemetrypulse.api.alert_feed import ALERT_COLUMNS, ALERT_SOURCE
from telemetrypulse.api.alert_schemas import AcknowledgeIn, Alert, AlertDetail, AlertPage, Note, NoteIn
from telemetrypulse.api.auth import READ_ACCESS, OperateKey, auth_errors
from telemetrypulse.api.csv_export import csv_response, csv_response_doc, encode_rows
from telemetrypulse.api.data_access import Reader, WhereClause
from telemetrypulse.api.deps import (
    DeviceIdQuery,
    FormatQuery,
    OptionalLimitQuery,
    ReaderDep,
    SensorTypeQuery,
    SinceQuery,
    SiteIdQuery,
    StateDep,
    StatusQuery,
    ZoneIdQuery,
)
from telemetrypulse.api.errors import InvalidParameter, NotFound
from telemetrypulse.api.routes.common import BAD_BODY, NOT_FOUND, READ_ERRORS, decode_cursor, encode_cursor
from telemetrypulse.api.schemas import AlertStatus, OutputFormat, SensorType, Severity
from telemetrypulse.models import iso_utc, now_us

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


@router.get(
    "",
    response_model=AlertPage,
    summary="Alerts, newest first, cursor-paginated (JSON or CSV)",
    dependencies=[READ_ACCESS],
    responses={**auth_errors(Scope.read), **csv_response_doc("A page of alerts")},
)
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
    limit: OptionalLimitQuery = None,
    cursor: CursorQuery = None,
    format: FormatQuery = OutputFormat.json,
) -> AlertPage | StreamingResponse:
    """Ordered by `opened_at` then `alert_id`, both descending. `since` keeps alerts opened at or after it.

    JSON: pages of `limit` alerts (default 100). `format=csv`: the same alerts, one row per alert with the JSON's
    fields as columns, streamed — every alert after `cursor` that matches, or the first `limit` of them."""
    filters = AlertFilters(
        status, site_id, zone_id, device_id, sensor_type, since, acknowledged, severity, rule
    )
    after = decode_cursor(cursor) if cursor is not None else None
    if format is OutputFormat.csv:
        first = await fetch_alerts(reader, filters, after, min(limit or CSV_PAGE, CSV_PAGE))
        return csv_response("alerts.csv", ALERT_FIELDS, alert_csv_chunks(reader, filters, first, limit))
    page_size = limit or DEFAULT_PAGE
    rows = await fetch_alerts(reader, filters, after, page_size + 1)
    items = [dict(r) for r in rows[:page_size]]
    next_cursor = (
        encode_cursor(items[-1]["opened_at"], items[-1]["alert_id"]) if len(rows) > page_size else None
    )
    return AlertPage(items=items, next_cursor=next_cursor)


DEFAULT_PAGE = 100
CSV_PAGE = 1000  # alerts per keyset query of a CSV export
ALERT_FIELDS = list(Alert.model_fields)


@dataclass(frozen=True, slots=True)
class AlertFilters:
    status: AlertStatus | None
    site_id: str | None
    zone_id: str | None
    device_id: str | None
    sensor_type: SensorType | None
    since: datetime | None
    acknowledged: bool | None
    severity: str | None
    rule: str | None


async def fetch_alerts(
    reader: Reader, filters: AlertFilters, after: tuple[datetime, UUID] | None, count: int
) -> list[asyncpg.Record]:
    """Up to `count` alerts matching `filters`, newest first, after the keyset position `after`."""
    where = WhereClause()
    where.equals("a.status", filters.status.value if filters.status else None).equals(
        "a.site_id", filters.site_id
    )
    where.equals("a.zone_id", filters.zone_id).equals("a.device_id", filters.device_id)
    where.equals("a.sensor_type", filters.sensor_type.value if filters.sensor_type else None)
    where.equals("a.severity", filters.severity).equals("a.rule", filters.rule)
    if filters.acknowledged is not None:
        where.add("k.alert_id IS NOT NULL" if filters.acknowledged else "k.alert_id IS NULL")
    if filters.since is not None:
        where.add("a.opened_at >= {}", filters.since)
    if after is not None:
        where.add("(a.opened_at, a.alert_id) < ({}, {})", *after)
    return await reader.fetch(
        f"SELECT {ALERT_COLUMNS} FROM {ALERT_SOURCE} {where.sql()}"
        f" ORDER BY a.opened_at DESC, a.alert_id DESC LIMIT {where.param(count)}",
        *where.args,
    )


async def alert_csv_chunks(
    reader: Reader, filters: AlertFilters, first: list[asyncpg.Record], limit: int | None
) -> AsyncIterator[bytes]:
    """CSV rows of `first` and of every later page (keyset: no alert twice, none skipped while alerts arrive),
    up to `limit` alerts in all."""
    page, left = first, limit
    while page:
        if left is not None:
            page = page[:left]
            left -= len(page)
        alerts = [Alert.model_validate(dict(row)) for row in page]
        yield encode_rows([[getattr(alert, name) for name in ALERT_FIELDS] for alert in alerts])
        if len(page) < CSV_PAGE or left == 0:
            return
        after = (page[-1]["opened_at"], page[-1]["alert_id"])
        page = await fetch_alerts(reader, filters, after, min(left or CSV_PAGE, CSV_PAGE))


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
                # asyncio.timeout, not wait_for: a client that leaves cancels this generator, and 3.11's wait_for
                # can lose that cancellation when a row arrives at the same moment (telemetrypulse/aio.py).
                async with asyncio.timeout(heartbeat):
                    row = await queue.get()
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
