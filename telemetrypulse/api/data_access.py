"""Read access to PostgreSQL for the API: every query has a deadline, and "database down" becomes a 503.

The pool is the read-only one (`db.create_pool(read_only=True)`: reader role, read-only transactions).
A connection that died with the server (restart, failover) is retried once on a fresh one, so the first
request after PostgreSQL comes back succeeds instead of failing on a stale pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from telemetrypulse.api.errors import DATABASE_DOWN, DatabaseUnavailable

_STALE_CONNECTION = (asyncpg.ConnectionDoesNotExistError, asyncpg.ConnectionFailureError, ConnectionError)


class Reader:
    """Runs read queries on the pool within `timeout_s`."""

    # A read is safe to run again on a fresh connection; see Writer.
    attempts = (1, 2)

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def fetch(self, sql: str, *args: Any, timeout_s: float | None = None) -> list[asyncpg.Record]:
        return await self._run("fetch", sql, args, timeout_s)

    async def fetchrow(self, sql: str, *args: Any, timeout_s: float | None = None) -> asyncpg.Record | None:
        return await self._run("fetchrow", sql, args, timeout_s)

    async def fetchval(self, sql: str, *args: Any, timeout_s: float | None = None) -> Any:
        return await self._run("fetchval", sql, args, timeout_s)

    async def _run(self, method: str, sql: str, args: tuple[Any, ...], timeout_s: float | None) -> Any:
        deadline = self.timeout_s if timeout_s is None else timeout_s
        for attempt in self.attempts:
            try:
                async with asyncio.timeout(deadline):
                    async with self.pool.acquire() as conn:
                        return await getattr(conn, method)(sql, *args)
            except _STALE_CONNECTION as e:
                if attempt == self.attempts[-1]:
                    raise DatabaseUnavailable(f"PostgreSQL connection lost: {type(e).__name__}") from e
            except TimeoutError as e:
                raise DatabaseUnavailable(f"PostgreSQL did not answer within {deadline:g} s") from e
            except DATABASE_DOWN as e:
                raise DatabaseUnavailable(f"PostgreSQL is not reachable: {type(e).__name__}: {e}") from e
        raise AssertionError("unreachable")

    async def copy_csv(self, sql: str, *args: Any, timeout_s: float) -> AsyncIterator[bytes]:
        """The output of `COPY (sql) TO STDOUT (FORMAT csv)`, chunk by chunk as PostgreSQL sends it.

        PostgreSQL writes the CSV (about ten times faster than Python would). A slow client slows the COPY rather
        than filling memory: asyncpg stops reading the socket while a chunk waits in the small queue. The
        connection is held for this one statement only; closing the iterator early cancels it.
        """
        chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=COPY_CHUNKS_AHEAD)

        async def keep(data: bytes | bytearray | memoryview) -> None:
            await chunks.put(bytes(data))  # a copy: asyncpg may reuse its buffer once this returns

        async def copy() -> None:
            async with asyncio.timeout(timeout_s), self.pool.acquire() as conn:
                await conn.copy_from_query(sql, *args, output=keep, format="csv")

        task = asyncio.create_task(copy())
        try:
            while True:
                getter = asyncio.ensure_future(chunks.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not chunks.empty():
                    yield chunks.get_nowait()
                break
            try:
                task.result()
            except TimeoutError as e:
                raise DatabaseUnavailable(f"PostgreSQL did not finish within {timeout_s:g} s") from e
            except _STALE_CONNECTION + DATABASE_DOWN as e:
                raise DatabaseUnavailable(f"PostgreSQL is not reachable: {type(e).__name__}: {e}") from e
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


# A few chunks of read-ahead (each is what one socket read brought, up to ~64 KiB).
COPY_CHUNKS_AHEAD = 4


class Writer(Reader):
    """Runs the API's few writes (acknowledgements, notes, webhooks) on the operator pool.

    Not retried on a lost connection: the statement may have committed before the connection died, and a
    note written twice is worse than a 503 the operator can retry.
    """

    attempts = (1,)


class WhereClause:
    """Builds `WHERE a = $1 AND b = $2` from the filters actually given.

    Optional filters are left out of the SQL rather than written as `($1 IS NULL OR a = $1)`, which
    keeps each statement indexable (a generic plan cannot use an index through that OR).
    """

    def __init__(self, first_param: int = 1) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []
        self._next = first_param

    def param(self, value: Any) -> str:
        self.args.append(value)
        placeholder = f"${self._next}"
        self._next += 1
        return placeholder

    def equals(self, column: str, value: Any) -> WhereClause:
        if value is not None:
            self.conditions.append(f"{column} = {self.param(value)}")
        return self

    def add(self, condition: str, *values: Any) -> WhereClause:
        """`condition` holds `{}` for each value, in order."""
        self.conditions.append(condition.format(*(self.param(v) for v in values)))
        return self

    def sql(self) -> str:
        return ("WHERE " + " AND ".join(self.conditions)) if self.conditions else ""
