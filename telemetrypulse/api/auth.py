"""Access control of the API (SPEC §10): one dependency per scope, as `Annotated` aliases.

Missing key → 401, a key that is not configured → 401, a configured key without the scope → 403, each
with a JSON body that names the scope and, for 403, the key's *name* — never a secret. Which scopes are
open at all is the key ring's rule (access.KeyRing): read and ingest until a key with that scope exists,
operate and admin never.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from telemetrypulse.access import ApiKey, Scope
from telemetrypulse.api.deps import StateDep, get_state
from telemetrypulse.api.errors import Forbidden, Unauthorized
from telemetrypulse.api.schemas import ErrorResponse

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    auto_error=False,
    description=(
        "A key of API_KEYS (`name:secret:scope[+scope…]`) or API_KEY (scope ingest). Reads need the `read` "
        "scope once some key has it; ingest needs `ingest` once some key has it; acknowledgements and notes "
        "need `operate`; webhooks and alert rules need `admin`. `admin` implies every scope."
    ),
)

WHY = {
    Scope.read: "reading",
    Scope.ingest: "ingesting events",
    Scope.operate: "acknowledging and annotating alerts",
    Scope.admin: "managing webhooks and alert rules",
}


def _require(scope: Scope):
    async def check(
        state: StateDep, presented: Annotated[str | None, Security(_api_key_header)]
    ) -> ApiKey | None:
        ring = state.keys
        if not ring.protects(scope):
            return None
        if not presented:
            if scope in (Scope.read, Scope.ingest):
                raise Unauthorized("X-API-Key header required")
            if not len(ring):
                raise Unauthorized(
                    f"X-API-Key header required: {WHY[scope]} needs a key with scope {scope.value}, "
                    "and the server has none configured (API_KEYS)"
                )
            raise Unauthorized(f"X-API-Key header required: {WHY[scope]} needs scope {scope.value}")
        key = ring.authenticate(presented)
        if key is None:
            raise Unauthorized("invalid X-API-Key")
        if not key.allows(scope):
            raise Forbidden(f"key {key.name!r} lacks scope {scope.value} ({WHY[scope]})")
        return key

    check.__name__ = f"require_{scope.value}_scope"
    return check


ReadKey = Annotated[ApiKey | None, Depends(_require(Scope.read))]
IngestKey = Annotated[ApiKey | None, Depends(_require(Scope.ingest))]
OperateKey = Annotated[ApiKey, Depends(_require(Scope.operate))]
AdminKey = Annotated[ApiKey, Depends(_require(Scope.admin))]
READ_ACCESS = Depends(_require(Scope.read))


def scope_first_route(scope: Scope) -> type[APIRoute]:
    """A route class that checks the key before FastAPI reads the request body. FastAPI answers a body that is not
    JSON with 422 before any dependency runs, so without this a caller with no key would learn about the body
    before being told it needs one; here a refusal (401/403) never depends on the body. The route keeps its
    scope dependency too (it documents the security scheme and hands the handler the key)."""
    check = _require(scope)

    class ScopeFirstRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                await check(await get_state(request), request.headers.get("X-API-Key"))
                return await handler(request)

            return guarded

    return ScopeFirstRoute


def auth_errors(scope: Scope) -> dict[int | str, dict[str, Any]]:
    """The documented refusals of a route guarded by `scope`."""
    when = (
        f"some key has scope {scope.value} and X-API-Key is missing or unknown"
        if scope in (Scope.read, Scope.ingest)
        else "X-API-Key is missing or unknown"
    )
    return {
        401: {"model": ErrorResponse, "description": f"Unauthorized: {when}"},
        403: {"model": ErrorResponse, "description": f"Forbidden: the key lacks scope {scope.value}"},
    }
