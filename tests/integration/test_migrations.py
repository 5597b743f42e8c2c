"""Migrations: processes that start at once (worker, API, several workers) apply each one exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import asyncpg
import pytest

from devkit.waiting import wait_for
from telemetrypulse import db

pytestmark = pytest.mark.integration

RACERS = 4


def migrate_process(dsn: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=dsn)
    return subprocess.Popen(
        [sys.executable, "-m", "telemetrypulse.cli", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_processes_starting_at_once_apply_each_migration_once(database):
    """The test holds the migrations lock until every process is queued on it, so they really race."""
    versions = [version for version, _ in db.migration_files()]
    holder = await asyncpg.connect(database)
    processes: list[subprocess.Popen] = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", db.MIGRATION_LOCK_ID)
        processes = [migrate_process(database) for _ in range(RACERS)]

        async def all_waiting() -> bool:
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted",
                db.MIGRATION_LOCK_ID,
            )
            return waiting == RACERS

        await wait_for(all_waiting, timeout_s=60, what=f"{RACERS} migrate processes queued on the lock")
        await holder.execute("SELECT pg_advisory_unlock($1)", db.MIGRATION_LOCK_ID)
        outputs = []
        for process in processes:
            out, err = await asyncio.to_thread(process.communicate, timeout=60)
            assert process.returncode == 0, err
            outputs.append(out)
        rows = await holder.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        await holder.close()

    applied_by = [re.search(r"migrations applied: (.*)", out).group(1) for out in outputs]
    applied = [v for line in applied_by if line != "none pending" for v in line.split(", ")]
    assert sorted(applied) == versions, applied_by  # each version by exactly one process
    assert applied_by.count("none pending") == RACERS - 1
    assert [r["version"] for r in rows] == versions


async def test_a_second_migrate_applies_nothing(database):
    assert await db.migrate(database) == [version for version, _ in db.migration_files()]
    assert await db.migrate(database) == []
