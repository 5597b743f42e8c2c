"""Webhook receivers and the delivery log (SPEC §10), admin scope: `GET /webhooks`,
`PUT /webhooks/{name}`, `DELETE /webhooks/{name}`, `GET /webhooks/deliveries`.

The API only keeps the receivers in PostgreSQL; the notifier (`telemetrypulse notify`) reads the table
every `WEBHOOK_POLL_S` seconds, so a change reaches it without a restart. Receivers of `WEBHOOK_URLS`
live in the notifier's environment and are not listed here (their deliveries are, as `env-…`).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response, status

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import AdminKey, auth_errors
from telemetrypulse.api.data_access import WhereClause
from telemetrypulse.api.deps import LimitQuery, ReaderDep, StateDep
from telemetrypulse.api.errors import InvalidParameter, NotFound
from telemetrypulse.api.routes.common import BAD_BODY, NOT_FOUND, READ_ERRORS
from telemetrypulse.api.schemas import AlertStatus, DeliveryState
from telemetrypulse.api.webhook_schemas import Webhook, WebhookDeliveryPage, WebhookIn, WebhookList
from telemetrypulse.webhooks import RECEIVER_NAME_PATTERN, url_problem

router = APIRouter(
    prefix="/webhooks", tags=["webhooks"], responses={**READ_ERRORS, **auth_errors(Scope.admin)}
)

# `deliveries` is a route of its own; a webhook of that name could be written but never read back.
RESERVED_NAMES = frozenset({"deliveries"})
WEBHOOK_COLUMNS = "name, url, site_id, min_severity, created_at, updated_at"
DELIVERY_COLUMNS = (
    "receiver, delivery_id, alert_id, status, state, attempts, created_at,"
    " CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at, last_attempt_at,"
    " last_status_code, last_error, delivered_at, seq"
)

NamePath = Annotated[
    str,
    Path(
        pattern=RECEIVER_NAME_PATTERN,
        description="The receiver's name (1-64 chars of [A-Za-z0-9._-]; `deliveries` is reserved)",
        examples=["ops-pager"],
    ),
]
ReceiverQuery = Annotated[
    str | None,
    Query(pattern=RECEIVER_NAME_PATTERN, description="Only deliveries to this receiver (a name, or env-…)"),
]
AlertIdQuery = Annotated[UUID | None, Query(description="Only deliveries of this alert")]
StateQuery = Annotated[
    DeliveryState | None, Query(description="Only pending, delivered or expired deliveries")
]
DeliveryStatusQuery = Annotated[AlertStatus | None, Query(description="Only alert.open or alert.resolved")]
SeqCursorQuery = Annotated[
    int | None, Query(ge=1, le=2**63 - 1, description="The previous page's `next_cursor`")
]


@router.get("", response_model=WebhookList, summary="Webhook receivers kept by PUT /webhooks/{name}")
async def list_webhooks(reader: ReaderDep, _key: AdminKey) -> WebhookList:
    rows = await reader.fetch(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY name")
    return WebhookList(items=[dict(r) for r in rows])


@router.get(
    "/deliveries",
    response_model=WebhookDeliveryPage,
    summary="The notifier's delivery log, newest first",
)
async def list_deliveries(
    reader: ReaderDep,
    _key: AdminKey,
    receiver: ReceiverQuery = None,
    alert_id: AlertIdQuery = None,
    state: StateQuery = None,
    status: DeliveryStatusQuery = None,
    limit: LimitQuery = 100,
    cursor: SeqCursorQuery = None,
) -> WebhookDeliveryPage:
    """One row per (receiver, `{alert_id}:{status}`): created when the notifier consumed the alert message,
    then each attempt's outcome (every attempt is recorded in the table `webhook_attempts`)."""
    where = WhereClause().equals("receiver", receiver).equals("alert_id", alert_id).equals("state", state)
    where.equals("status", status.value if status else None)
    if cursor is not None:
        where.add("seq < {}", cursor)
    rows = await reader.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries {where.sql()}"
        f" ORDER BY seq DESC LIMIT {where.param(limit + 1)}",
        *where.args,
    )
    items = [dict(r) for r in rows[:limit]]
    return WebhookDeliveryPage(items=items, next_cursor=items[-1]["seq"] if len(rows) > limit else None)


@router.get("/{name}", response_model=Webhook, summary="One webhook receiver", responses=NOT_FOUND)
async def get_webhook(name: NamePath, reader: ReaderDep, _key: AdminKey) -> Webhook:
    row = await reader.fetchrow(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE name = $1", name)
    if row is None:
        raise NotFound(f"webhook {name!r} is unknown")
    return Webhook.model_validate(dict(row))


@router.put(
    "/{name}",
    response_model=Webhook,
    summary="Create or replace a webhook receiver",
    responses={201: {"model": Webhook, "description": "Created"}, **BAD_BODY},
)
async def put_webhook(
    name: NamePath, body: WebhookIn, response: Response, state: StateDep, _key: AdminKey
) -> Webhook:
    """200 when it replaced one, 201 when it is new. The notifier picks the change up within
    `WEBHOOK_POLL_S` seconds (default 5); alerts consumed from then on are delivered to it."""
    if name in RESERVED_NAMES:
        raise InvalidParameter(
            f"path.name: {name!r} is reserved", errors=[{"location": "path.name", "message": "reserved"}]
        )
    problem = url_problem(body.url)
    if problem is not None:
        raise InvalidParameter(f"body.url: {problem}", errors=[{"location": "body.url", "message": problem}])
    row = await state.writer.fetchrow(
        "INSERT INTO webhooks (name, url, site_id, min_severity) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET url = excluded.url, site_id = excluded.site_id,"
        " min_severity = excluded.min_severity, updated_at = now()"
        f" RETURNING {WEBHOOK_COLUMNS}, (xmax = 0) AS created",
        name,
        body.url,
        body.site_id,
        body.min_severity,
    )
    if row["created"]:
        response.status_code = status.HTTP_201_CREATED
    return Webhook.model_validate({k: v for k, v in dict(row).items() if k != "created"})


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a webhook receiver",
    responses=NOT_FOUND,
)
async def delete_webhook(name: NamePath, state: StateDep, _key: AdminKey) -> Response:
    """Its pending deliveries are kept, not sent, and resume if a receiver of the same name comes back."""
    deleted = await state.writer.fetchval("DELETE FROM webhooks WHERE name = $1 RETURNING name", name)
    if deleted is None:
        raise NotFound(f"webhook {name!r} is unknown")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
