"""The local stack from `make up`: a second `up` reuses the same processes and writes the same env file.

Never runs `down`: other tests (and other people's sessions) share this stack.
"""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devkit.local_postgres import private_dsn
from devkit.local_stack import LocalStack
from devkit.paths import ROOT

pytestmark = pytest.mark.integration


def run_up() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "devkit", "up"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_up_twice_reuses_the_same_processes():
    stack = LocalStack()
    run_up()
    first = (stack.kafka.pid(), stack.postgres.pid(), stack.env_file.read_text())
    out = run_up()
    second = (stack.kafka.pid(), stack.postgres.pid(), stack.env_file.read_text())
    assert first == second
    assert first[0] is not None
    assert "kafka reused" in out
    if not stack.state().get("env", {}).get("database_url_external"):
        assert first[1] is not None and "postgres reused" in out


async def test_env_file_points_at_the_running_stack():
    stack = LocalStack()
    env = stack.env()
    assert set(env) == {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    port = stack.state()["kafka"]["port"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{port}"

    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert [b["port"] for b in cluster["brokers"]] == [port]

    if not stack.state().get("env", {}).get("database_url_external"):
        assert env["DATABASE_URL"] == private_dsn(stack.state()["postgres"]["port"])
    conn = await asyncpg.connect(env["DATABASE_URL"])
    try:
        # The stack's user must be able to create databases (each integration test gets its own).
        assert await conn.fetchval(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await conn.close()


def test_status_reports_up():
    done = subprocess.run(
        [sys.executable, "-m", "devkit", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kafka running" in done.stdout
