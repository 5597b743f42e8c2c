"""Dependencies and parameter types shared by the routers, as `Annotated` aliases.

Times in query strings are ISO-8601 and must carry an offset (`Z`, `+02:00`): a naive time is refused
with 422 rather than guessed. A `+` that arrived as a space (an unencoded `+02:00` in a URL) is read as
the `+` it was meant to be.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import BeforeValidator

from telemetrypulse.api.data_access import Reader
from telemetrypulse.api.errors import ServiceUnavailable
from telemetrypulse.api.resources import ApiState
from telemetrypulse.api.schemas import AlertStatus, HeatmapMetric, OutputFormat, SensorType, WindowSize

ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
# Query times are kept inside what every layer can represent and do arithmetic on (datetime, PostgreSQL).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)
_SPACE_FOR_PLUS = re.compile(r"^(.*\d) (\d\d(:?\d\d)?)$")


def parse_query_time(value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        if not isinstance(value, str):
            raise ValueError("expected an ISO-8601 date-time string")
        text = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"not an ISO-8601 date-time (e.g. 2024-05-01T12:00:00Z): {value[:64]!r}"
            ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("time has no UTC offset: add Z or ±hh:mm (e.g. 2024-05-01T12:00:00Z)")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range (1970-01-01 .. 2999-12-31)") from None
    if not EARLIEST <= moment <= LATEST:
        raise ValueError("time out of range (1970-01-01 .. 2999-12-31)")
    return moment


QueryTime = Annotated[datetime, BeforeValidator(parse_query_time)]


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker thread,
# a thread hop per request for what is an attribute lookup.
async def get_state(request: Request) -> ApiState:
    state = getattr(request.app.state, "api", None)
    if state is None:
        raise ServiceUnavailable("the API is starting or stopping")
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


async def get_reader(state: StateDep) -> Reader:
    return state.reader


ReaderDep = Annotated[Reader, Depends(get_reader)]


def _id_query(what: str, example: str):
    return Query(pattern=ID_PATTERN, description=f"{what} (1-64 chars of [A-Za-z0-9._-])", examples=[example])


SiteIdQuery = Annotated[str | None, _id_query("Site id", "site-01")]
ZoneIdQuery = Annotated[str | None, _id_query("Zone id", "zone-a")]
DeviceIdQuery = Annotated[str | None, _id_query("Device id", "dev-0001")]
DeviceIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="Device id", examples=["dev-0001"])]
SensorTypeQuery = Annotated[SensorType | None, Query(description="Sensor type")]
RequiredSensorQuery = Annotated[SensorType, Query(description="Sensor type")]
WindowQuery = Annotated[
    WindowSize, Query(description="Tumbling window size: 5m, 15m, or 1h / 1d (roll-ups of the 15m windows)")
]
MetricQuery = Annotated[HeatmapMetric, Query(description="Cell value: window average or window maximum")]
StatusQuery = Annotated[AlertStatus | None, Query(description="Only open or only resolved alerts")]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Page size, 1-1000")]
OptionalLimitQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=1000,
        description="Page size, 1-1000 (JSON default 100); with format=csv: at most this many rows",
    ),
]
FormatQuery = Annotated[
    OutputFormat,
    Query(description="json, or csv: the same rows as CSV (RFC 4180, a header row), streamed"),
]


def _time_query(description: str):
    return Query(description=description, examples=["2024-05-01T12:00:00Z"])


StartQuery = Annotated[QueryTime | None, _time_query("Inclusive start, ISO-8601 with offset")]
EndQuery = Annotated[QueryTime | None, _time_query("Exclusive end, ISO-8601 with offset")]
SinceQuery = Annotated[QueryTime | None, _time_query("Only alerts opened at or after this time (ISO-8601)")]
AtQuery = Annotated[
    QueryTime | None, _time_query("A time inside the wanted window (ISO-8601); default: latest")
]
