"""Liveness and readiness. Readiness asks PostgreSQL and Kafka each time, with a short deadline, so it
turns 503 quickly when either goes away and 200 again once both are back, with no restart."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from telemetrypulse.api.deps import StateDep
from telemetrypulse.api.errors import ServiceUnavailable
from telemetrypulse.api.schemas import DependencyCheck, Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Liveness, summary="The process is up")
async def live() -> Liveness:
    return Liveness()


async def _timed(check) -> DependencyCheck:
    started = time.perf_counter()
    try:
        await check
    except ServiceUnavailable as e:
        return DependencyCheck(ok=False, latency_ms=(time.perf_counter() - started) * 1000, detail=e.detail)
    return DependencyCheck(ok=True, latency_ms=(time.perf_counter() - started) * 1000)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="PostgreSQL and Kafka are reachable",
    responses={503: {"model": Readiness, "description": "PostgreSQL or Kafka is not reachable"}},
)
async def ready(state: StateDep) -> JSONResponse:
    timeout = state.options.ready_timeout_s
    postgres, kafka = await asyncio.gather(
        _timed(state.reader.fetchval("SELECT 1", timeout_s=timeout)),
        _timed(state.publisher.check(timeout)),
    )
    ok = postgres.ok and kafka.ok
    body = Readiness(status="ready" if ok else "unavailable", checks={"postgres": postgres, "kafka": kafka})
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
