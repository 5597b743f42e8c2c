"""Issue 10: rows lost after quick successive restarts — a partition without a committed offset must start
from its beginning, whatever the recovery fetched and dropped before.

F8 forces the trigger found: a worker dies before its first offset commit (so no input partition has a
committed offset), the next one restores state from the changelog while live events arrive, and a fetch is
still waiting when recovery pauses the last changelog partition (held there by test-only timing holds,
`tests/faults/holds/sitecustomize.py`). Before the fix that fetch drained every buffered record, Faust dropped
them, and nothing sought the partitions without a committed offset back: the rows never reached PostgreSQL.

F9 is the sequence seen from outside, with real timing: workers killed before they are ready, one killed while
it waits for a database that refuses logins, one killed seconds after it became ready with events flowing,
then a last restart. F10 asks the same of the sink process. All end exactly the SPEC model's.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import pytest

from devkit import kafka_io
from devkit.deployment import Deployment
from devkit.waiting import wait_for
from tests.faults.harness import FaultRun
from tests.pipeline_model import build_dataset

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

HOLDS = str(Path(__file__).resolve().parent / "holds")


def with_holds(*holds: str) -> dict[str, str]:
    return {"PYTHONPATH": HOLDS, "TP_TEST_HOLDS": ",".join(holds)}


async def changelog_records(pipe: Deployment) -> int:
    ends = await kafka_io.end_offsets(pipe.bootstrap, pipe.names.partition_state_changelog)
    return sum(ends.values())


async def test_f8_restore_while_no_offset_is_committed_loses_nothing(pipeline):
    dataset = build_dataset(seed=108)
    first = pipeline.add_worker(**with_holds("no_commit"))
    first.start()
    await first.wait_ready()
    async with FaultRun(
        pipeline, dataset, "F8-restore-without-committed-offsets", chunks=40, pause_s=0.5
    ) as run:
        await run.reached(0.2)
        # The first worker has applied events (state in the changelog, rows published) but committed nothing.
        await wait_for(lambda: changelog_records(pipeline), 30, what="device state in the changelog")
        fault = run.fault("SIGKILL before any commit, restart restoring state with a fetch in flight")
        first.kill()
        second = pipeline.add_worker(**with_holds("slow_recovery_fetch", "hold_recovery_end"))
        second.start()
        await second.wait_ready()
        await run.progress(fault)
        result = await run.verify()
        log = second.log_text()
        result["start_positions_logged"] = "no committed offset: from the beginning" in log
    run.report(result)
    assert result["start_positions_logged"], "the worker logs where each partition starts"


async def _refuse_logins(admin_dsn: str, database: str, refuse: bool) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')
        if refuse:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
            )
    finally:
        await admin.close()


async def test_f9_quick_successive_restarts_with_a_database_outage(pipeline, stack):
    rng = random.Random(109)
    dataset = build_dataset(seed=109)
    database = pipeline.dsn.rsplit("/", 1)[1]
    async with FaultRun(pipeline, dataset, "F9-quick-restarts-db-outage", chunks=40, pause_s=0.5) as run:
        await run.reached(0.1)
        worker = pipeline.add_worker()
        # Three workers killed before they are ready, 2-6 s after they were started.
        for _ in range(3):
            worker.start()
            await asyncio.sleep(rng.uniform(2, 6))
            worker.kill()
        # One killed while it waits for the database at start (logins refused for 20 s).
        await _refuse_logins(stack["DATABASE_URL"], database, refuse=True)
        refused_at = time.monotonic()
        try:
            worker.start()
            await wait_for(
                lambda: "database not reachable yet" in worker.log_text().rsplit("===== start", 1)[-1],
                30,
                what="the worker waiting for the database",
            )
            worker.kill()
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - refused_at)))
        finally:
            await _refuse_logins(stack["DATABASE_URL"], database, refuse=False)
        # One killed 2 s after it became ready, with events flowing.
        worker.start()
        await worker.wait_ready()
        await asyncio.sleep(2)
        await run.kill_and_restart(
            worker, "SIGKILL 2 s after ready, after 4 earlier kills and a database outage"
        )
        result = await run.verify()
    run.report(result)


async def test_f10_the_sink_killed_in_quick_succession_and_through_a_database_outage(pipeline, stack):
    """The same question for the sink process (issue 10): its positions come from PostgreSQL, written with the rows;
    a partition without one starts from its beginning. Kill it before its first transaction, while it waits for a
    database that refuses logins, and right after it wrote, with events flowing: PostgreSQL ends exact."""
    rng = random.Random(110)
    dataset = build_dataset(seed=110)
    database = pipeline.dsn.rsplit("/", 1)[1]
    worker = pipeline.add_worker()  # starts the deployment's sink too
    sink = pipeline.sinks[0]
    worker.start()
    await worker.wait_ready()
    async with FaultRun(
        pipeline, dataset, "F10-sink-quick-restarts-db-outage", chunks=40, pause_s=0.5
    ) as run:
        await run.reached(0.1)
        for _ in range(3):
            sink.kill()
            sink.start()
            await asyncio.sleep(rng.uniform(0.5, 3))
        await _refuse_logins(stack["DATABASE_URL"], database, refuse=True)
        try:
            sink.kill()
            sink.start()
            await asyncio.sleep(5)
            sink.kill()
            worker.kill()  # the worker too, while the sink is down
            worker.start()
        finally:
            await _refuse_logins(stack["DATABASE_URL"], database, refuse=False)
        sink.start()
        await wait_for(lambda: run.raw_rows(), 60, what="the sink writing again")
        await run.kill_and_restart(sink, "sink SIGKILL right after it wrote, with events flowing")
        result = await run.verify()
    run.report(result)
