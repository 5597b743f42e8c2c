"""The API's error bodies and handlers: every refusal is `{"error", "detail", "errors"}` with a 4xx or 503.

Bad input must never surface as a 500, and an unreachable database or broker is the client's cue to retry
(503), not a server bug. Anything else still escapes as a 500 on purpose: it is a bug worth seeing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from telemetrypulse.exceptions import TelemetryPulseError

log = logging.getLogger(__name__)

# Errors that mean "PostgreSQL is not reachable right now", as opposed to a wrong query.
DATABASE_DOWN = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    # SQLSTATE 55000 at login: "database … is not currently accepting connections" (ALTER DATABASE …
    # ALLOW_CONNECTIONS false during maintenance or a restore). /health/ready answered 500 instead of 503
    # (found by tests/faults F6).
    asyncpg.ObjectNotInPrerequisiteStateError,
)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    503: "unavailable",
}


class ApiError(TelemetryPulseError):
    """A refusal with its HTTP status, machine-readable code and human message."""

    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        if code is not None:
            self.code = code


class InvalidParameter(ApiError):
    status_code = 422
    code = "invalid_parameter"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class KafkaUnavailable(ServiceUnavailable):
    code = "kafka_unavailable"


def error_body(code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": code, "detail": detail, "errors": errors or []}


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for item in exc.errors():
        location = _location(tuple(item.get("loc", ())))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in item and item.get("type") != "missing":
            message = f"{message} (got {_shown(item['input'])})"
        errors.append({"location": location, "message": message})
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors) or "invalid request"
    return JSONResponse(error_body("invalid_parameter", detail, errors), status_code=422)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": "5"} if exc.status_code == 503 else None
    if exc.status_code == 401:
        headers = {"WWW-Authenticate": "ApiKey"}
    return JSONResponse(
        error_body(exc.code, exc.detail, exc.errors), status_code=exc.status_code, headers=headers
    )


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _STATUS_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        error_body(code, detail), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    body = error_body("database_unavailable", "PostgreSQL is not reachable; retry shortly")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for kind in DATABASE_DOWN:
        app.add_exception_handler(kind, _database_down)
