"""`POST /ingest` and `POST /ingest/batch`: validate like the worker, produce to the events topic, 202.

Validation is `models.validate_event` on the very bytes that will be produced (each batch item is
re-encoded with orjson first), so the API accepts exactly what the worker accepts. A 202 means the
broker acknowledged the events (idempotent producer, acks=all); the worker processes them
asynchronously.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import IngestKey, auth_errors
from telemetrypulse.api.deps import StateDep
from telemetrypulse.api.device_schemas import IngestAccepted, IngestBatchResult
from telemetrypulse.api.errors import InvalidParameter, PayloadTooLarge
from telemetrypulse.api.http_metrics import INGESTED
from telemetrypulse.api.routes.common import UNAVAILABLE
from telemetrypulse.api.schemas import ErrorResponse
from telemetrypulse.models import Event, Invalid, now_us, validate_event

MAX_BATCH = 1000
# One event is a few hundred bytes; the cap keeps every message far below the broker's message size limit.
MAX_EVENT_BYTES = 64 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024

ERRORS: dict[int | str, dict[str, Any]] = {
    **auth_errors(Scope.ingest),
    413: {"model": ErrorResponse, "description": "Body too large"},
    422: {"model": ErrorResponse, "description": "Not a valid event (error codes as in the DLQ: SPEC §6)"},
    **UNAVAILABLE,
}

router = APIRouter(prefix="/ingest", tags=["ingest"], responses=ERRORS)


class EventIn(BaseModel):
    """An event as in SPEC §3 (documentation of the body; the worker's validator is what decides)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                    "device_id": "dev-0001",
                    "site_id": "site-01",
                    "zone_id": "zone-a",
                    "sensor_type": "co2",
                    "value": 612.5,
                    "ts_event": "2024-05-01T12:00:00Z",
                    "unit": "ppm",
                }
            ]
        },
    )

    event_id: str = Field(json_schema_extra={"format": "uuid"})
    device_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    site_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    zone_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    sensor_type: Literal["co2", "temperature", "humidity", "occupancy"]
    value: float = Field(
        description="co2 0-40000, temperature -50-100, humidity 0-100, occupancy integer >= 0"
    )
    ts_event: str = Field(
        json_schema_extra={"format": "date-time"},
        description="ISO-8601 with offset; at most 5 min in the future",
    )
    unit: Literal["ppm", "celsius", "percent", "count"] | None = Field(
        None, description="Must match the sensor"
    )


EVENT_SCHEMA = EventIn.model_json_schema()
BATCH_SCHEMA = {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": MAX_BATCH}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _refused(invalid: Invalid, location: str = "body") -> InvalidParameter:
    return InvalidParameter(
        invalid.detail,
        code=invalid.error,
        errors=[{"location": location, "message": f"{invalid.error}: {invalid.detail}"}],
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    summary="Submit one event",
    openapi_extra=_body_doc(EVENT_SCHEMA),
)
async def ingest_one(request: Request, state: StateDep, _key: IngestKey) -> IngestAccepted:
    """Body: one event object (SPEC §3). 422 names the first rule it breaks, with the DLQ's error code."""
    raw = await _read_body(request, MAX_EVENT_BYTES)
    result = validate_event(raw, now_us())
    if isinstance(result, Invalid):
        INGESTED.labels("rejected").inc()
        raise _refused(result)
    await state.publisher.publish([(result.device_id.encode(), raw)])
    INGESTED.labels("accepted").inc()
    return IngestAccepted(accepted=1, event_ids=[result.event_id])


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestBatchResult,
    summary="Submit up to 1000 events",
    openapi_extra=_body_doc(BATCH_SCHEMA),
)
async def ingest_batch(request: Request, state: StateDep, _key: IngestKey) -> IngestBatchResult:
    """Body: a JSON array of 1-1000 events. The valid ones are produced and the rest reported by index
    (202); if none is valid, 422 with every item's error."""
    raw = await _read_body(request, MAX_BATCH_BYTES)
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidParameter(f"body: not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        shape = f"{len(items)} items" if isinstance(items, list) else type(items).__name__
        raise InvalidParameter(f"body: expected a JSON array of 1-{MAX_BATCH} events, got {shape}")
    now = now_us()
    accepted: list[tuple[Event, bytes]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        encoded = orjson.dumps(item)
        result = (
            Invalid("too_large", f"event is {len(encoded)} bytes; the limit is {MAX_EVENT_BYTES}")
            if len(encoded) > MAX_EVENT_BYTES
            else validate_event(encoded, now)
        )
        if isinstance(result, Invalid):
            errors.append({"index": index, "error": result.error, "detail": result.detail})
        else:
            accepted.append((result, encoded))
    INGESTED.labels("rejected").inc(len(errors))
    if not accepted:
        raise InvalidParameter(
            f"no valid event in the batch ({len(errors)} rejected; see errors)",
            errors=[
                {"location": f"body.{e['index']}", "message": f"{e['error']}: {e['detail']}"} for e in errors
            ],
        )
    await state.publisher.publish([(event.device_id.encode(), encoded) for event, encoded in accepted])
    INGESTED.labels("accepted").inc(len(accepted))
    return IngestBatchResult(
        accepted=len(accepted),
        rejected=len(errors),
        event_ids=[event.event_id for event, _ in accepted],
        errors=errors,
    )
