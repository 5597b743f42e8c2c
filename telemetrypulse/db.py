"""PostgreSQL edge: connection pools, the migrations runner and daily partitions of the raw table.

The migrations are package data (`telemetrypulse/migrations/NNNN_name.sql`), read through `importlib.resources`, so
that an installed wheel (`pip install .`, the Docker image) migrates like the source tree does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

from telemetrypulse.exceptions import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS = files("telemetrypulse") / "migrations"
READER_ROLE = "telemetrypulse_reader"
# May write the operator tables (acknowledgements, notes, webhooks) and nothing the sink owns (0005).
OPERATOR_ROLE = "telemetrypulse_operator"
# Any constant works; it only has to be the same for every process migrating one database.
MIGRATION_LOCK_ID = 0x7E1E_0001
# Held shared by every sink transaction and exclusively by the retention job while it moves the boundaries of
# `telemetry_retention` (sink/writer.py, retention.py).
HISTORY_LOCK_ID = 0x7E1E_0014
# One retention job at a time per database, however many workers run (a session lock, held while it runs).
RETENTION_JOB_LOCK_ID = 0x7E1E_0015


def migration_files(folder: Traversable = MIGRATIONS) -> list[tuple[str, Traversable]]:
    """`NNNN_name.sql` files in order, as (version, file)."""
    found = []
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        match = re.fullmatch(r"(\d{4})_[A-Za-z0-9_]+\.sql", path.name)
        if not match:
            raise MigrationError(f"migration file name not NNNN_name.sql: {path.name}")
        found.append((path.name.removesuffix(".sql"), path))
    return found


async def connect(dsn: str, **kwargs) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, **kwargs)


async def migrate(dsn: str, folder: Traversable = MIGRATIONS) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns the versions applied here.

    An advisory lock serialises processes that start at once (worker and API, several workers):
    the second waits, then finds everything recorded and applies nothing.
    """
    conn = await connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, path in migration_files(folder):
                if version in done:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(path.read_text())
                        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                except asyncpg.PostgresError as e:
                    raise MigrationError(f"migration {path.name} failed: {e}") from e
                log.info("migration %s applied", version)
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()
    return applied


def migrate_sync(dsn: str) -> list[str]:
    return asyncio.run(migrate(dsn))


async def wait_for_database(dsn: str, attempts: int | None = None, delay_s: float = 1.0) -> None:
    """Retry until PostgreSQL answers, with a log line per try (a database that is still starting is normal)."""
    tries = 0
    while True:
        tries += 1
        try:
            conn = await connect(dsn, timeout=5)
            await conn.close()
            return
        except (TimeoutError, OSError, asyncpg.PostgresError) as e:
            if attempts is not None and tries >= attempts:
                raise
            log.warning("database not reachable yet (%s); retrying in %.0fs", e, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)


def _use_role(role: str):
    async def init(conn: asyncpg.Connection) -> None:
        # Fall back to the login role where the migration could not create the role (managed PostgreSQL).
        exists = await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", role)
        if exists:
            await conn.execute(f"SET ROLE {role}")

    return init


async def create_pool(
    dsn: str,
    *,
    read_only: bool = False,
    role: str | None = None,
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """An asyncpg pool; `read_only` pools switch every session to the least-privilege reader role, `role`
    pools to that role (the API's operator writes)."""
    kwargs = {}
    if read_only:
        role = READER_ROLE
        kwargs["server_settings"] = {"default_transaction_read_only": "on"}
    if role is not None:
        kwargs["init"] = _use_role(role)
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, **kwargs)


def partition_name(day: date) -> str:
    return f"telemetry_events_{day:%Y%m%d}"


async def partition_days(conn: asyncpg.Connection) -> dict[date, str]:
    """The raw table's daily partitions: day -> partition name (any other partition is not ours and ignored)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'telemetry_events'::regclass"
    )
    days = {}
    for row in rows:
        match = re.fullmatch(r"telemetry_events_(\d{8})", row["relname"])
        if match:
            days[datetime.strptime(match[1], "%Y%m%d").date()] = row["relname"]
    return days


class DailyPartitions:
    """Creates the raw table's daily partitions before rows for a new day are written.

    Partitions are never created on the insert path by a DEFAULT partition: rows parked there would
    later block creating that day's partition. Instead each new day seen is created first (idempotent,
    safe with several sinks racing), and the known days are cached.
    """

    def __init__(self) -> None:
        self._known: set[date] = set()

    def knows(self, days: set[date]) -> bool:
        """Every one of `days` has a partition, as far as this process knows (nothing to create)."""
        return days <= self._known

    async def ensure(self, conn: asyncpg.Connection, days: set[date]) -> None:
        missing = days - self._known
        if not missing:
            return
        if not self._known:
            self._known.update(await partition_days(conn))
            missing = days - self._known
        for day in sorted(missing):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            end = start + timedelta(days=1)
            sql = (
                f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF telemetry_events"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            # Another sink may create it between our check and our CREATE.
            with contextlib.suppress(asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                await conn.execute(sql)
            self._known.add(day)
