"""F5 (the broker crashes and restarts; later a clean restart) and F6 (PostgreSQL: sessions killed mid-batch,
logins refused, an abrupt restart), with V7: the API's readiness follows the database without a restart.

These crash the SHARED local broker / PostgreSQL of `make up` (every other test, and anyone else testing on
this clone, uses them): only through devkit.local_stack, restored in `finally`, outages kept as short as
the scenario says. Skipped when the stack is external (CI with DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS given).
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import pytest

from devkit import local_stack
from devkit.processes import ChildProcess
from tests.faults.harness import FaultRun, ready_status
from tests.pipeline_model import build_dataset

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

BROKER_DOWN_S = 10


async def in_thread(fn, *args):
    """local_stack calls block (they wait for the service); keep the producer and the probes running meanwhile."""
    return await asyncio.to_thread(fn, *args)


async def test_f5_broker_killed_restarted_then_restarted_cleanly(pipeline, own_kafka):
    dataset = build_dataset(seed=106)
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    async with FaultRun(pipeline, dataset, "F5-broker-crash-and-restart", chunks=30, pause_s=1.0) as run:
        await run.reached(0.3)
        fault = run.fault(f"broker SIGKILL, restarted after {BROKER_DOWN_S}s")
        down = False
        try:
            await in_thread(local_stack.kill_kafka, signal.SIGKILL)
            down = True
            await asyncio.sleep(BROKER_DOWN_S)
        finally:
            await in_thread(local_stack.start_kafka)  # also when the kill itself failed half-way
        fault.over_at = time.monotonic()
        assert down
        await run.progress(fault)  # measured from the broker's return

        await run.reached(0.7)
        fault = run.fault("broker clean restart (SIGTERM, start)")
        try:
            await in_thread(local_stack.kill_kafka, signal.SIGTERM)
        finally:
            await in_thread(local_stack.start_kafka)
        fault.over_at = time.monotonic()
        await run.progress(fault)  # measured from the broker's return
        result = await run.verify()
        assert worker.alive(), "the worker rides out broker outages"
        result["worker_starts"] = worker.starts
    run.report(result)


async def _terminate_sessions(admin: asyncpg.Connection, database: str) -> int:
    return len(
        await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    )


async def _readiness_while(
    api: ChildProcess, outage: asyncio.Event, seen: list[tuple[float, int | None]]
) -> None:
    """Poll /health/ready every 0.25 s while `outage` is set."""
    while outage.is_set():
        seen.append((time.monotonic(), await ready_status(api.url)))
        await asyncio.sleep(0.25)


async def test_f6_postgres_sessions_killed_refused_and_restarted(pipeline, stack, own_postgres):
    dataset = build_dataset(seed=107)
    database = pipeline.dsn.rsplit("/", 1)[1]
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()  # it applies the migrations the API needs
    api = pipeline.add_api().start()
    v7: dict = {}
    try:
        await api.wait_ready()
        api_pid = api.pid
        async with FaultRun(pipeline, dataset, "F6-postgres-outages", chunks=30, pause_s=1.0) as run:
            # 1. The sink's sessions killed again and again while it writes (mid-batch, mid-COPY).
            await run.reached(0.2)
            fault = run.fault("sessions of the test database terminated every 0.2 s for 4 s")
            admin = await asyncpg.connect(stack["DATABASE_URL"])
            killed = 0
            try:
                deadline = time.monotonic() + 4
                while time.monotonic() < deadline:
                    killed += await _terminate_sessions(admin, database)
                    await asyncio.sleep(0.2)
            finally:
                await admin.close()
            fault.over_at = time.monotonic()
            await run.progress(fault)  # from the end of the outage: the sink moves again
            run.notes["sessions_terminated"] = killed

            # 2. Logins refused for 8 s, every session killed: readiness 503, then 200 once logins are back.
            await run.reached(0.4)
            fault = run.fault("logins to the test database refused for 8 s")
            admin = await asyncpg.connect(stack["DATABASE_URL"])
            outage, seen = asyncio.Event(), []
            outage.set()
            try:
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                await _terminate_sessions(admin, database)
                poller = asyncio.create_task(_readiness_while(api, outage, seen))
                await asyncio.sleep(8)
            finally:
                outage.clear()
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                await admin.close()
            await poller
            fault.over_at = time.monotonic()
            v7["refused"] = await _ready_again(api, fault.over_at, seen)
            await run.progress(fault)  # from the end of the outage: the sink moves again

            # 3. The real thing: the server stopped like a crash (no checkpoint) and started again.
            await run.reached(0.65)
            fault = run.fault("PostgreSQL stopped -m immediate, then started")
            outage, seen = asyncio.Event(), []
            outage.set()
            poller = asyncio.create_task(_readiness_while(api, outage, seen))
            try:
                await in_thread(local_stack.stop_postgres, "immediate")
                await asyncio.sleep(1.0)  # long enough for readiness to be asked while the server is down
            finally:
                await in_thread(local_stack.start_postgres)
                outage.clear()
            await poller
            fault.over_at = time.monotonic()
            v7["restart"] = await _ready_again(api, fault.over_at, seen)
            await run.progress(fault)  # from the end of the outage: the sink moves again

            result = await run.verify()
        assert worker.alive() and worker.starts == 1, "the worker rides out database outages"
        assert api.alive() and api.pid == api_pid, "the API was not restarted"
    finally:
        api.stop()
    run.report(dict(result, v7=v7))
    for outage_name, observed in v7.items():
        assert 503 in observed["during"], f"V7 {outage_name}: readiness during the outage was {observed}"
        assert observed["ready_after_s"] is not None, f"V7 {outage_name}: never ready again"


async def _ready_again(api: ChildProcess, since: float, seen: list[tuple[float, int | None]]) -> dict:
    """V7: readiness codes seen during the outage, and how long after it /health/ready answered 200."""
    ready_after = None
    deadline = since + 30
    while time.monotonic() < deadline:
        if await ready_status(api.url) == 200:
            ready_after = round(time.monotonic() - since, 1)
            break
        await asyncio.sleep(0.25)
    return {"during": sorted({code for _, code in seen}, key=str), "ready_after_s": ready_after}
