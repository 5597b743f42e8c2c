"""The notifier's PostgreSQL edge: the outbox of deliveries, the attempt log, the webhooks table, and
the sender lease.

Promises kept here, whatever the process does around them:
- a delivery is created once per (receiver, delivery id), however often its message is consumed
  (`INSERT … ON CONFLICT DO NOTHING`);
- a delivery with a recorded 2xx is `delivered` and never handed out again (only `pending` rows are due);
- an alert's `resolved` is never due to a receiver while its `open` is pending for that receiver;
- an attempt is written *before* its request is sent, so one left without `finished_at` by a crash is
  known to have been in flight (the only kind of delivery that may reach a receiver twice).
All times are the database's clock, so several notifier hosts agree on what is due and what is expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from telemetrypulse.exceptions import OutboxError
from telemetrypulse.webhooks import PlannedDelivery, Receiver

log = logging.getLogger(__name__)

# Any constant: only one notifier process per database sends at a time (the others consume and enqueue).
SENDER_LOCK_ID = 0x7E1E_0013
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

# Rows in message order; `seq` (an identity) numbers them in that order, which is the order sent.
ENQUEUE = """
INSERT INTO webhook_deliveries (receiver, delivery_id, alert_id, status, site_id, severity, payload)
SELECT receiver, delivery_id, alert_id, status, site_id, severity, payload
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bytea[])
     WITH ORDINALITY AS d(receiver, delivery_id, alert_id, status, site_id, severity, payload, position)
ORDER BY position
ON CONFLICT (receiver, delivery_id) DO NOTHING
RETURNING 1
"""

EXPIRE = """
UPDATE webhook_deliveries SET state = 'expired', expired_at = now()
WHERE receiver = $1 AND state = 'pending' AND created_at < now() - make_interval(secs => $2)
RETURNING delivery_id, attempts
"""

# Due: pending, its time has come, and — for a resolve — its alert's open is not still pending here.
DUE = """
SELECT d.delivery_id, d.status, d.payload, d.attempts,
       extract(epoch FROM now() - d.created_at) AS age_s
FROM webhook_deliveries d
WHERE d.receiver = $1 AND d.state = 'pending' AND d.next_attempt_at <= now()
  AND NOT (d.status = 'resolved' AND EXISTS (
      SELECT 1 FROM webhook_deliveries o
      WHERE o.receiver = d.receiver AND o.alert_id = d.alert_id AND o.status = 'open' AND o.state = 'pending'))
ORDER BY d.seq
LIMIT $2
"""

NEXT_DUE = """
SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM webhook_deliveries
WHERE receiver = $1 AND state = 'pending'
"""

BEGIN_ATTEMPT = """
INSERT INTO webhook_attempts (receiver, delivery_id, attempt) VALUES ($1, $2, $3) RETURNING attempt_id
"""

# An outcome is one statement (one round trip, atomic): the attempt closed and its delivery updated.
# `state = 'pending'` makes recording idempotent and keeps a delivered row delivered.
RECORD_SUCCESS = """
WITH attempt AS (
    UPDATE webhook_attempts SET finished_at = clock_timestamp(), status_code = $4, duration_ms = $5
    WHERE attempt_id = $3
)
UPDATE webhook_deliveries
SET state = 'delivered', attempts = attempts + 1, last_attempt_at = now(), last_status_code = $4,
    last_error = NULL, delivered_at = now()
WHERE receiver = $1 AND delivery_id = $2 AND state = 'pending'
RETURNING extract(epoch FROM now() - created_at) AS latency_s
"""

RECORD_FAILURE = """
WITH attempt AS (
    UPDATE webhook_attempts SET finished_at = clock_timestamp(), status_code = $4, error = $5, duration_ms = $6
    WHERE attempt_id = $3
)
UPDATE webhook_deliveries
SET attempts = attempts + 1, last_attempt_at = now(), last_status_code = $4, last_error = $5,
    next_attempt_at = now() + make_interval(secs => $7)
WHERE receiver = $1 AND delivery_id = $2 AND state = 'pending'
"""

# Attempts left in flight by a notifier that died: closed, and counted on their delivery.
RECOVER_INTERRUPTED = """
WITH closed AS (
    UPDATE webhook_attempts SET finished_at = clock_timestamp(),
        error = 'interrupted: the notifier stopped during this attempt (the receiver may have got it)'
    WHERE finished_at IS NULL
    RETURNING receiver, delivery_id
), counted AS (
    UPDATE webhook_deliveries d SET attempts = attempts + 1, last_error = 'interrupted'
    FROM closed c WHERE d.receiver = c.receiver AND d.delivery_id = c.delivery_id AND d.state = 'pending'
)
SELECT receiver, delivery_id FROM closed
"""

PENDING_BY_RECEIVER = """
SELECT receiver, count(*) AS pending FROM webhook_deliveries WHERE state = 'pending' GROUP BY receiver
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    receiver: str
    delivery_id: str
    status: str
    payload: bytes
    attempts: int
    age_s: float


class Outbox:
    """The deliveries and attempts in PostgreSQL. Every method raises OutboxError on a database error;
    callers decide whether to retry (they do: nothing here is lost by trying again)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _run(self, method: str, sql: str, *args, what: str):
        try:
            async with self.pool.acquire(timeout=10) as conn:
                return await getattr(conn, method)(sql, *args, timeout=30)
        except DB_ERRORS as e:
            raise OutboxError(f"{what}: {type(e).__name__}: {e}") from e

    async def enqueue(self, planned: list[PlannedDelivery]) -> int:
        """Create the deliveries (existing ones are left as they are); returns how many are new."""
        if not planned:
            return 0
        columns = (
            [p.receiver for p in planned],
            [p.alert.delivery_id for p in planned],
            [p.alert.alert_id for p in planned],
            [p.alert.status for p in planned],
            [p.alert.site_id for p in planned],
            [p.alert.severity for p in planned],
            [p.alert.body for p in planned],
        )
        rows = await self._run("fetch", ENQUEUE, *columns, what="enqueueing deliveries")
        return len(rows)

    async def receivers(self) -> list[Receiver]:
        rows = await self._run(
            "fetch",
            "SELECT name, url, site_id, min_severity FROM webhooks ORDER BY name",
            what="reading webhooks",
        )
        return [Receiver(r["name"], r["url"], r["site_id"], r["min_severity"]) for r in rows]

    async def expire(self, receiver: str, max_age_s: float) -> list[tuple[str, int]]:
        rows = await self._run("fetch", EXPIRE, receiver, float(max_age_s), what="expiring deliveries")
        return [(r["delivery_id"], r["attempts"]) for r in rows]

    async def due(self, receiver: str, limit: int) -> list[Delivery]:
        rows = await self._run("fetch", DUE, receiver, limit, what="reading due deliveries")
        return [
            Delivery(
                receiver, r["delivery_id"], r["status"], bytes(r["payload"]), r["attempts"], float(r["age_s"])
            )
            for r in rows
        ]

    async def seconds_until_due(self, receiver: str) -> float | None:
        """Until the next pending delivery is due (≤ 0: now), or None when nothing is pending."""
        value = await self._run("fetchval", NEXT_DUE, receiver, what="reading the next due time")
        return None if value is None else float(value)

    async def begin_attempt(self, delivery: Delivery) -> int:
        return await self._run(
            "fetchval",
            BEGIN_ATTEMPT,
            delivery.receiver,
            delivery.delivery_id,
            delivery.attempts + 1,
            what="recording an attempt",
        )

    async def record_success(
        self, attempt_id: int, delivery: Delivery, status_code: int, duration_ms: float
    ) -> float | None:
        """Returns the delivery's latency from creation to this 2xx (None if it was already recorded)."""
        latency = await self._run(
            "fetchval",
            RECORD_SUCCESS,
            delivery.receiver,
            delivery.delivery_id,
            attempt_id,
            status_code,
            duration_ms,
            what="recording a delivery",
        )
        return None if latency is None else float(latency)

    async def record_failure(
        self,
        attempt_id: int,
        delivery: Delivery,
        status_code: int | None,
        error: str,
        duration_ms: float,
        retry_in_s: float,
    ) -> None:
        await self._run(
            "execute",
            RECORD_FAILURE,
            delivery.receiver,
            delivery.delivery_id,
            attempt_id,
            status_code,
            error,
            duration_ms,
            float(retry_in_s),
            what="recording a failed attempt",
        )

    async def recover_interrupted(self) -> list[tuple[str, str]]:
        rows = await self._run("fetch", RECOVER_INTERRUPTED, what="closing interrupted attempts")
        return [(r["receiver"], r["delivery_id"]) for r in rows]

    async def pending_by_receiver(self) -> dict[str, int]:
        rows = await self._run("fetch", PENDING_BY_RECEIVER, what="counting pending deliveries")
        return {r["receiver"]: r["pending"] for r in rows}


class SenderLease:
    """A session advisory lock on a connection of its own: the notifier holding it is the only one that
    sends, so two notifier processes never send the same pending delivery at once. The lock goes with the
    connection: a crashed holder's lease is free as soon as PostgreSQL notices the session is gone."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def try_acquire(self) -> bool:
        conn = None
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", SENDER_LOCK_ID, timeout=10):
                self._conn, conn = conn, None
                return True
            return False
        except DB_ERRORS as e:
            log.warning("sender lease: cannot ask PostgreSQL (%s: %s)", type(e).__name__, e)
            return False
        finally:
            if conn is not None:
                await _close(conn)

    async def still_held(self) -> bool:
        """One round trip on the lease's connection; False (and released) if the connection is gone."""
        if self._conn is None:
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=10)
            return True
        except DB_ERRORS as e:
            log.warning("sender lease lost with its connection (%s: %s)", type(e).__name__, e)
            await self.release()
            return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)  # closing the session releases the lock


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        with contextlib.suppress(Exception):
            conn.terminate()
