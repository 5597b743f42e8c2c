"""Databases of their own for tests and benchmark passes: created on the stack's PostgreSQL (its user may create
databases), dropped afterwards; and the counts of stored events every check starts from."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, prefix: str = "tp_test") -> tuple[str, str]:
    """A fresh empty database: (its name, its URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def schema_ready(conn: asyncpg.Connection) -> bool:
    """Whether the migrations have run (the last relation the pipeline's counts read exists)."""
    return bool(await conn.fetchval("SELECT to_regclass('telemetry_device_agg_15m') IS NOT NULL"))


async def window_sums(conn: asyncpg.Connection) -> tuple[int, int]:
    """Events counted in the 5 m and 15 m device windows (each accepted event is in exactly one of each)."""
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_5m) AS w5,"
        " (SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_15m) AS w15"
    )
    return int(row["w5"]), int(row["w15"])
