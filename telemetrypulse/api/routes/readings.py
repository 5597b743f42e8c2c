"""`GET /devices/{device_id}/readings`: a device's stored raw readings over a bounded time range, oldest first,
as JSON pages or one streamed CSV (SPEC §11).

Paging is by keyset on (ts_event, event_id), the order of the listing — not by offset: readings that arrive while
a client pages (new ones, late ones behind the cursor) never make it see a reading twice or skip one that was
there when its page was passed. The range is required and bounded (`start`, `end` ≤ 31 days later): a query
touches at most 32 daily partitions, through the (device_id, ts_event) index.

CSV is written by PostgreSQL itself (COPY … TO STDOUT, one UTC day of the range per statement) and streamed with
backpressure: a month of one sensor's readings goes out at a few hundred thousand rows a second in constant memory
(bench/api.py measures it), and no statement holds a connection for more than a day's slice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import READ_ACCESS, auth_errors
from telemetrypulse.api.csv_export import SQL_BOOL, SQL_TIME, csv_response, csv_response_doc
from telemetrypulse.api.data_access import Reader, WhereClause
from telemetrypulse.api.deps import DeviceIdPath, EndQuery, FormatQuery, QueryTime, ReaderDep, SensorTypeQuery
from telemetrypulse.api.errors import InvalidParameter, NotFound
from telemetrypulse.api.history_schemas import Reading, ReadingPage
from telemetrypulse.api.routes.common import NOT_FOUND, READ_ERRORS, decode_cursor, encode_cursor
from telemetrypulse.api.schemas import OutputFormat
from telemetrypulse.models import SENSOR_UNITS

router = APIRouter(
    prefix="/devices",
    tags=["devices"],
    dependencies=[READ_ACCESS],
    responses={**READ_ERRORS, **auth_errors(Scope.read)},
)

DEFAULT_SPAN = timedelta(hours=24)
MAX_SPAN = timedelta(days=31)
DEFAULT_PAGE = 1000
DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A day's slice of a CSV export: even a dense device (every sensor every second) is done well within this.
SLICE_TIMEOUT_S = 300.0

RequiredStartQuery = Annotated[
    QueryTime,
    Query(description="Inclusive start, ISO-8601 with offset (required)", examples=["2024-05-01T00:00:00Z"]),
]
ReadingsLimitQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=10_000,
        description="Page size, 1-10000 (JSON default 1000); with format=csv: at most this many rows (default all)",
    ),
]
ReadingsCursorQuery = Annotated[
    str | None, Query(max_length=200, description="The previous page's `next_cursor` (opaque)")
]

COLUMNS = list(Reading.model_fields)  # the JSON's fields, in order: the CSV's columns
_UNIT = "CASE sensor_type " + " ".join(f"WHEN '{s}' THEN '{u}'" for s, u in SENSOR_UNITS.items()) + " END"
JSON_SELECT = "SELECT ts_event, event_id, device_id, site_id, zone_id, sensor_type, value, late, ts_ingest"
CSV_SELECT = (
    f"SELECT {SQL_TIME.format('ts_event')}, event_id, device_id, site_id, zone_id, sensor_type, value,"
    f" {_UNIT}, {SQL_BOOL.format('late')}, {SQL_TIME.format('ts_ingest')}"
)


@router.get(
    "/{device_id}/readings",
    response_model=ReadingPage,
    summary="A device's raw readings, oldest first (JSON pages or streamed CSV)",
    responses={**NOT_FOUND, **csv_response_doc("A page of readings")},
)
async def get_readings(
    device_id: DeviceIdPath,
    reader: ReaderDep,
    start: RequiredStartQuery,
    end: EndQuery = None,
    sensor_type: SensorTypeQuery = None,
    limit: ReadingsLimitQuery = None,
    cursor: ReadingsCursorQuery = None,
    format: FormatQuery = OutputFormat.json,
) -> ReadingPage | StreamingResponse:
    """Stored readings (accepted and too late; never a duplicate) with `start <= ts_event < end`, ordered by
    `ts_event` then `event_id`. `end` defaults to `start` + 24 h and may be at most 31 days after `start`.
    404 if the device has never been seen.

    JSON: pages of `limit` readings (default 1000); pass `next_cursor` as `cursor`, with the same other
    parameters, for the next. `format=csv`: every reading of the range after `cursor` (or the first `limit`),
    one row per reading with the JSON's fields as columns, streamed."""
    end = end if end is not None else start + DEFAULT_SPAN
    if start >= end:
        raise InvalidParameter(
            f"query.start must be before query.end (got {start.isoformat()} >= {end.isoformat()})"
        )
    if end - start > MAX_SPAN:
        raise InvalidParameter(
            f"query.start/end: at most {MAX_SPAN.days} days of readings per request; narrow the range"
        )
    after = decode_cursor(cursor) if cursor is not None else None
    if not await reader.fetchval(
        "SELECT EXISTS (SELECT 1 FROM telemetry_device_latest WHERE device_id = $1)"
        " OR EXISTS (SELECT 1 FROM telemetry_alerts WHERE device_id = $1)",
        device_id,
    ):
        raise NotFound(f"device {device_id!r} has never been seen")
    sensor = sensor_type.value if sensor_type is not None else None
    if format is OutputFormat.csv:
        name = f"readings-{device_id}{'-' + sensor if sensor else ''}-{start:%Y%m%dT%H%M%SZ}.csv"
        return csv_response(name, COLUMNS, _csv_chunks(reader, device_id, sensor, start, end, after, limit))
    page_size = limit or DEFAULT_PAGE
    where = _where(device_id, sensor, start, end, after)
    rows = await reader.fetch(
        f"{JSON_SELECT} FROM telemetry_events {where.sql()} ORDER BY ts_event, event_id"
        f" LIMIT {where.param(page_size + 1)}",
        *where.args,
    )
    items = [dict(row, unit=SENSOR_UNITS[row["sensor_type"]]) for row in rows[:page_size]]
    next_cursor = (
        encode_cursor(items[-1]["ts_event"], items[-1]["event_id"]) if len(rows) > page_size else None
    )
    return ReadingPage(
        device_id=device_id,
        sensor_type=sensor_type,
        start=start,
        end=end,
        items=items,
        next_cursor=next_cursor,
    )


def _where(
    device_id: str, sensor: str | None, start: datetime, end: datetime, after: tuple[datetime, UUID] | None
) -> WhereClause:
    where = WhereClause().equals("device_id", device_id).equals("sensor_type", sensor)
    if after is not None:
        after_ts, after_id = after
        # The lower time bound stays a plain range condition (the index's); the id only breaks ties at it.
        start = max(start, after_ts)
        where.add("(ts_event > {} OR event_id > {})", after_ts, after_id)
    return where.add("ts_event >= {}", start).add("ts_event < {}", end)


def day_slices(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights: each piece lies in one daily partition."""
    slices = []
    lower = start
    while lower < end:
        next_midnight = EPOCH + ((lower - EPOCH) // DAY + 1) * DAY
        upper = min(end, next_midnight)
        slices.append((lower, upper))
        lower = upper
    return slices


async def _csv_chunks(
    reader: Reader,
    device_id: str,
    sensor: str | None,
    start: datetime,
    end: datetime,
    after: tuple[datetime, UUID] | None,
    limit: int | None,
) -> AsyncIterator[bytes]:
    left = limit
    lower = max(start, after[0]) if after is not None else start
    for slice_start, slice_end in day_slices(lower, end):
        where = _where(device_id, sensor, slice_start, slice_end, after)
        sql = f"{CSV_SELECT} FROM telemetry_events {where.sql()} ORDER BY ts_event, event_id"
        if left is not None:
            sql += f" LIMIT {where.param(left)}"
        async for chunk in reader.copy_csv(sql, *where.args, timeout_s=SLICE_TIMEOUT_S):
            # PostgreSQL ends CSV lines with LF; RFC 4180 wants CRLF. No field here can hold a line break
            # (ids are [A-Za-z0-9._-], the rest numbers, times, UUIDs and fixed words).
            if left is not None:
                left -= chunk.count(b"\n")
            yield chunk.replace(b"\n", b"\r\n")
        if left is not None and left <= 0:
            return
