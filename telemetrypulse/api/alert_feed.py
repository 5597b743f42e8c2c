"""The live alert change feed behind `GET /alerts/stream`.

Every insert or update of `telemetry_alerts` takes a new `change_seq` and a trigger NOTIFYs channel
`telemetry_alerts`. One LISTEN connection per API process wakes a pump that reads the new rows once
and fans them out to every SSE subscriber; a slow poll covers a lost LISTEN connection.

Sequence numbers are taken at write time but become visible at commit, so two writers can commit out of
order (seq 11 visible before seq 10). The pump therefore remembers the holes below its cursor for a
while and looks for them again, instead of skipping them for good. Holes are mostly permanent
(`INSERT … ON CONFLICT DO NOTHING` consumes a number too); they expire after `GAP_TTL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from telemetrypulse.aio import wait_set
from telemetrypulse.api.data_access import Reader
from telemetrypulse.api.errors import DATABASE_DOWN, ServiceUnavailable
from telemetrypulse.api.http_metrics import SSE_EVENTS, SSE_SUBSCRIBERS

log = logging.getLogger(__name__)

CHANNEL = "telemetry_alerts"
# An alert as the API returns it: the sink's row (`a`) with the operator's acknowledgement (`k`), which
# lives in its own table so that nothing the stream writes can erase it.
ALERT_COLUMNS = (
    "a.alert_id, a.status, a.rule, a.alert_type, a.device_id, a.site_id, a.zone_id, a.sensor_type,"
    " a.threshold, a.value, a.peak_value, a.opened_at, a.resolved_at, a.event_id, a.change_seq, a.rule_id,"
    " a.severity, k.alert_id IS NOT NULL AS acknowledged, k.acknowledged_by, k.acknowledged_at"
)
ALERT_SOURCE = "telemetry_alerts a LEFT JOIN alert_acknowledgements k ON k.alert_id = a.alert_id"
GAP_TTL_S = 30.0
MAX_GAPS = 10_000
BATCH = 1000


class Subscription:
    """One SSE client's queue. `overflowed` means it fell too far behind and must reconnect (and resume)."""

    def __init__(self, max_queue: int) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_queue)
        self.overflowed = asyncio.Event()

    def offer(self, row: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.overflowed.set()


class AlertFeed:
    def __init__(self, dsn: str, reader: Reader, *, poll_s: float = 5.0, max_queue: int = 5000) -> None:
        self.dsn = dsn
        self.reader = reader
        self.poll_s = poll_s
        self.max_queue = max_queue
        self.cursor = 0
        self.listening = False
        self._gaps: dict[int, float] = {}
        self._subscribers: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        with contextlib.suppress(ServiceUnavailable):
            self.cursor = await self._max_seq()
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="alert-feed-listen"),
            asyncio.create_task(self._pump_loop(), name="alert-feed-pump"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for subscription in list(self._subscribers):
            subscription.overflowed.set()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self.max_queue)
        self._subscribers.add(subscription)
        SSE_SUBSCRIBERS.set(len(self._subscribers))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        SSE_SUBSCRIBERS.set(len(self._subscribers))

    async def since(self, after_seq: int, limit: int = BATCH) -> list[dict[str, Any]]:
        """Rows changed after `after_seq`, oldest change first (the resume path of Last-Event-ID)."""
        rows = await self.reader.fetch(
            f"SELECT {ALERT_COLUMNS} FROM {ALERT_SOURCE} WHERE a.change_seq > $1 ORDER BY a.change_seq LIMIT $2",
            after_seq,
            limit,
        )
        return [dict(r) for r in rows]

    async def _max_seq(self) -> int:
        return await self.reader.fetchval("SELECT coalesce(max(change_seq), 0) FROM telemetry_alerts")

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _listen_loop(self) -> None:
        delay = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening = True
                delay = 0.5
                # Changes made while we were not listening are found by the cursor on this wake-up.
                self._wake.set()
                while not lost.is_set():
                    await wait_set(lost, 30)
                    if not lost.is_set():
                        # A half-open TCP connection never terminates by itself; a ping finds it.
                        await conn.execute("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except (*DATABASE_DOWN, asyncpg.PostgresError) as e:
                log.warning(
                    "alert feed: LISTEN connection lost (%s); polling every %.0fs meanwhile", e, self.poll_s
                )
            finally:
                self.listening = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _pump_loop(self) -> None:
        while True:
            await wait_set(self._wake, self.poll_s)
            self._wake.clear()
            try:
                await self.pump()
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable as e:
                log.warning("alert feed: %s", e)
            except Exception:
                log.exception("alert feed: pump failed")

    async def pump(self) -> int:
        """Read changes past the cursor (and in remembered holes) and hand them to every subscriber."""
        if not self._subscribers:
            # Nobody to tell: just keep up, so a new subscriber does not get a stale burst.
            self.cursor = max(self.cursor, await self._max_seq())
            self._gaps.clear()
            return 0
        now = time.monotonic()
        for seq in [s for s, seen in self._gaps.items() if now - seen > GAP_TTL_S]:
            del self._gaps[seq]
        delivered = 0
        while True:
            rows = await self.reader.fetch(
                f"SELECT {ALERT_COLUMNS} FROM {ALERT_SOURCE}"
                " WHERE a.change_seq > $1 OR a.change_seq = ANY($2::bigint[]) ORDER BY a.change_seq LIMIT $3",
                self.cursor,
                list(self._gaps),
                BATCH,
            )
            if not rows:
                return delivered
            for row in rows:
                seq = row["change_seq"]
                if seq > self.cursor:
                    for missing in range(self.cursor + 1, min(seq, self.cursor + 1 + MAX_GAPS)):
                        self._gaps.setdefault(missing, now)
                    self.cursor = seq
                else:
                    self._gaps.pop(seq, None)
                item = dict(row)
                for subscription in list(self._subscribers):
                    subscription.offer(item)
                delivered += 1
                SSE_EVENTS.inc()
            if len(self._gaps) > MAX_GAPS:
                for seq in sorted(self._gaps)[: len(self._gaps) - MAX_GAPS]:
                    del self._gaps[seq]
            if len(rows) < BATCH:
                return delivered
