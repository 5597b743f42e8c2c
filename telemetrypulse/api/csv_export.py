"""CSV answers (`?format=csv` on `/trends`, `/alerts` and `/devices/{device_id}/readings`, SPEC §11).

RFC 4180: a header row, CRLF after every record, a field quoted only when it holds a comma, a double quote or a
line break (quotes doubled inside). The rows, columns and order are those of the JSON answer, flattened; values
are written so that parsing them back gives the JSON's values: times ISO-8601 UTC with `Z` and microseconds,
numbers in their shortest round-trip form, `true`/`false`, null as an empty field.

Bodies are streamed chunk by chunk: memory stays the same for a month of readings as for a minute. Everything
that can refuse a request (validation, 404, the database being down) happens before the first byte, so a refusal
is still a 4xx/503 with a JSON body; a failure after that can only cut the stream short.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

from fastapi.responses import StreamingResponse

MEDIA_TYPE = "text/csv; charset=utf-8"
# Rows per chunk handed to the server (and per keyset query where the rows come from Python).
CHUNK_ROWS = 2000
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# The same text from PostgreSQL (COPY … CSV writes what the SELECT gives it).
SQL_TIME = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
SQL_BOOL = "CASE WHEN {} THEN 'true' ELSE 'false' END"


def csv_response_doc(what: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: the 200 answer is also `text/csv` (with `format=csv`)."""
    return {
        200: {
            "description": f"{what}; with `format=csv`: the same rows as CSV (RFC 4180, a header row, streamed)",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }


def text_of(value: Any) -> str:
    """One field as the JSON answer would give the value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(TIME_FORMAT)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, UUID | int | str):
        return str(value)
    raise TypeError(f"no CSV text for {type(value).__name__}")


def encode_rows(rows: Iterable[Sequence[Any]]) -> bytes:
    """Records in RFC 4180 form (the csv module quotes minimally and ends lines with CRLF by default)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([text_of(v) for v in row] for row in rows)
    return buffer.getvalue().encode()


def header(columns: Sequence[str]) -> bytes:
    return encode_rows([columns])


def chunked(rows: Sequence[Sequence[Any]]) -> Iterable[bytes]:
    for first in range(0, len(rows), CHUNK_ROWS):
        yield encode_rows(rows[first : first + CHUNK_ROWS])


async def _body(
    columns: Sequence[str], chunks: AsyncIterator[bytes] | Iterable[bytes]
) -> AsyncIterator[bytes]:
    yield header(columns)
    if isinstance(chunks, AsyncIterator):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def csv_response(
    filename: str, columns: Sequence[str], chunks: AsyncIterator[bytes] | Iterable[bytes]
) -> StreamingResponse:
    """A streamed CSV download: the header row, then each chunk as it comes."""
    return StreamingResponse(
        _body(columns, chunks),
        media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
