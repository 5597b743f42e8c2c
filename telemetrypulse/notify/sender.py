"""One receiver's delivery loop: send what is due, in order, record every attempt, retry with backoff.

Each receiver has its own task and its own HTTP connection pool, and every request has a total deadline
(`WEBHOOK_TIMEOUT_S`), so a slow or dead receiver only ever delays itself. When a receiver cannot be
reached at all (connection refused, no answer in time) the task pauses that receiver, with backoff,
instead of trying each of its pending deliveries against it in turn; an HTTP error answer is per
delivery (the receiver is up; maybe only that payload is refused), so the round goes on with the next.

Up to `IN_FLIGHT` deliveries of one receiver are sent at once, started in creation order. That never
reorders an alert: its resolve is not even due while its open is pending (outbox.DUE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from telemetrypulse.aio import wait_set
from telemetrypulse.exceptions import OutboxError
from telemetrypulse.notify import delivery_metrics
from telemetrypulse.notify.outbox import Delivery, Outbox
from telemetrypulse.webhooks import BACKOFF_MAX_S, Receiver, backoff_s, delivery_headers, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH = 50
IN_FLIGHT = 4
DB_PAUSE_S = 2.0
# While stopping, how long a finished attempt's outcome is retried into a failing database before the
# attempt is left open (it then counts as in flight: the next notifier may send it again).
RECORD_GRACE_S = 10.0
USER_AGENT = "TelemetryPulse-Notifier/0.1"
ERROR_SNIPPET = 200
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt says about the receiver (a delivery's own outcome is in the outbox)."""

    unreachable: bool = False  # no HTTP answer at all: connection refused, reset, or past the deadline
    slow_down_s: float | None = None  # pause the receiver (429/503 with their Retry-After, or our database)


def retry_after_s(value: str | None) -> float | None:
    """A `Retry-After` in seconds (the HTTP-date form is rare for webhooks and is ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), BACKOFF_MAX_S)


class ReceiverSender:
    def __init__(
        self,
        receiver: Receiver,
        outbox: Outbox,
        *,
        secret: bytes | None,
        timeout_s: float,
        max_age_s: float,
        poll_s: float,
    ) -> None:
        self.receiver = receiver
        self.outbox = outbox
        self.secret = secret
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._unreachable = 0  # consecutive attempts that got no HTTP answer at all
        self._task: asyncio.Task | None = None
        # Redirects are not followed: a signed delivery goes to the configured URL or nowhere.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT),
        )

    @property
    def name(self) -> str:
        return self.receiver.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"webhook-sender-{self.name}")

    def wake(self) -> None:
        self._wake.set()

    def update(self, receiver: Receiver) -> None:
        """A new URL or filter; takes effect from the next attempt."""
        self.receiver = receiver

    async def stop(self, grace_s: float) -> None:
        """Let the attempt in flight finish (at most `grace_s`), then end the task."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace_s)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # ------------------------------------------------------------------------------------------ loop

    async def _run(self) -> None:
        warned_secret = False
        while not self._stop.is_set():
            if self.secret is None:
                if not warned_secret:
                    log.error(
                        "WEBHOOK_SECRET is not set: deliveries to %s are kept pending until the notifier "
                        "is restarted with it (every delivery is signed)",
                        self.name,
                    )
                    warned_secret = True
                await self._idle(self.poll_s)
                continue
            try:
                for delivery_id, attempts in await self.outbox.expire(self.name, self.max_age_s):
                    delivery_metrics.EXPIRED.labels(self.name).inc()
                    log.warning(
                        "delivery %s to %s given up after %d attempts (WEBHOOK_MAX_AGE_S=%g)",
                        delivery_id,
                        self.name,
                        attempts,
                        self.max_age_s,
                    )
                batch = await self.outbox.due(self.name, BATCH)
            except OutboxError as e:
                delivery_metrics.OUTBOX_RETRIES.inc()
                log.warning("sender %s: %s; retrying in %.0fs", self.name, e, DB_PAUSE_S)
                await self._pause(DB_PAUSE_S)
                continue
            if not batch:
                await self._idle(await self._until_due())
                continue
            pause = await self._deliver_batch(batch)
            if pause:
                await self._pause(pause)

    async def _deliver_batch(self, batch: list[Delivery]) -> float | None:
        """Send a batch, `IN_FLIGHT` at a time; stop starting new ones once the receiver looks down.
        Returns how long to pause the whole receiver, or None."""
        slots = asyncio.Semaphore(IN_FLIGHT)
        outcomes: list[Outcome] = []

        async def one(delivery: Delivery) -> None:
            async with slots:
                if self._stop.is_set() or any(o.unreachable or o.slow_down_s for o in outcomes):
                    return
                outcomes.append(await self._deliver(delivery))

        await asyncio.gather(*(one(d) for d in batch))
        # One round against a dead receiver counts once, however many attempts were in flight in it.
        if any(o.unreachable for o in outcomes):
            self._unreachable += 1
            return backoff_s(self._unreachable)
        if outcomes:
            self._unreachable = 0
        slow_down = [o.slow_down_s for o in outcomes if o.slow_down_s]
        return max(slow_down) if slow_down else None

    async def _until_due(self) -> float:
        try:
            wait = await self.outbox.seconds_until_due(self.name)
        except OutboxError:
            return self.poll_s
        return self.poll_s if wait is None else min(max(wait, 0.05), self.poll_s)

    async def _idle(self, seconds: float) -> None:
        """Until new deliveries are enqueued for this receiver, or `seconds` pass, or stop."""
        await wait_set(self._wake, seconds)
        self._wake.clear()

    async def _pause(self, seconds: float) -> None:
        """A back-off: new deliveries do not cut it short, only a stop does."""
        await wait_set(self._stop, seconds)

    # ------------------------------------------------------------------------------------------ one attempt

    async def _deliver(self, delivery: Delivery) -> Outcome:
        """One attempt, recorded."""
        receiver = self.receiver
        assert self.secret is not None
        try:
            attempt_id = await self.outbox.begin_attempt(delivery)
        except OutboxError as e:
            delivery_metrics.OUTBOX_RETRIES.inc()
            log.warning("sender %s: %s (nothing sent); retrying in %.0fs", self.name, e, DB_PAUSE_S)
            return Outcome(slow_down_s=DB_PAUSE_S)
        headers = delivery_headers(self.secret, delivery.delivery_id, delivery.status, delivery.payload)
        status_code: int | None = None
        error: str | None = None
        retry_after: float | None = None
        started = time.perf_counter()
        try:
            # httpx's timeout is per phase (connect, each read…); this bounds the whole exchange.
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream(
                    "POST", receiver.url, content=delivery.payload, headers=headers
                ) as response:
                    status_code = response.status_code
                    # Read the (small) answer: an unread body closes the connection instead of
                    # returning it to the pool, and every delivery would pay a new TCP handshake.
                    body = await _read_some(response, MAX_ANSWER_BYTES)
                    if not 200 <= status_code < 300:
                        retry_after = retry_after_s(response.headers.get("retry-after"))
                        error = f"HTTP {status_code}{_snippet(body)}"
        except TimeoutError:
            status_code, error = None, f"no answer within {self.timeout_s:g} s"
        except (httpx.HTTPError, OSError) as e:
            # Error texts can quote the URL; the URL can hold the receiver's token.
            text = str(e).replace(receiver.url, redact_url(receiver.url))
            status_code, error = None, f"{type(e).__name__}: {text}"[:500]
        duration_ms = (time.perf_counter() - started) * 1000

        if status_code is not None and 200 <= status_code < 300:
            latency = await self._record(
                lambda: self.outbox.record_success(attempt_id, delivery, status_code, duration_ms)
            )
            delivery_metrics.ATTEMPTS.labels(self.name, "delivered").inc()
            if latency is not None:
                delivery_metrics.DELIVERY_LATENCY.observe(latency)
            log.debug(
                "delivered %s to %s (HTTP %d, %.0f ms)",
                delivery.delivery_id,
                self.name,
                status_code,
                duration_ms,
            )
            return Outcome()

        retry_in = backoff_s(delivery.attempts + 1)
        if retry_after is not None:
            retry_in = max(retry_in, retry_after)
        await self._record(
            lambda: self.outbox.record_failure(
                attempt_id, delivery, status_code, error or "failed", duration_ms, retry_in
            )
        )
        outcome = "http_error" if status_code is not None else "transport_error"
        delivery_metrics.ATTEMPTS.labels(self.name, outcome).inc()
        log.info(
            "delivery %s to %s (%s) failed, attempt %d: %s; retry in %.1fs",
            delivery.delivery_id,
            self.name,
            redact_url(receiver.url),
            delivery.attempts + 1,
            error,
            retry_in,
        )
        if status_code is None:
            return Outcome(unreachable=True)
        if status_code in (429, 503):  # the receiver asks us to slow down
            return Outcome(slow_down_s=retry_in)
        return Outcome()

    async def _record(self, write: Callable[[], Awaitable[T]]) -> T | None:
        """Retry an outcome into PostgreSQL until it is written: an unrecorded 2xx would be sent again."""
        delay = 0.5
        give_up_at: float | None = None
        while True:
            try:
                return await write()
            except OutboxError as e:
                delivery_metrics.OUTBOX_RETRIES.inc()
                if self._stop.is_set():
                    give_up_at = give_up_at or time.monotonic() + RECORD_GRACE_S
                    if time.monotonic() > give_up_at:
                        log.error(
                            "sender %s: cannot record an attempt while stopping (%s); it stays in flight",
                            self.name,
                            e,
                        )
                        return None
                log.warning("sender %s: %s; retrying in %.1fs", self.name, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of an answer (a receiver's answer is not ours to buffer whole)."""
    chunks, size = [], 0
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    return b"".join(chunks)


def _snippet(body: bytes) -> str:
    """The start of an error answer, for the delivery log."""
    text = body[:ERROR_SNIPPET].decode("utf-8", "replace").strip()
    return f": {' '.join(text.split())}" if text else ""
