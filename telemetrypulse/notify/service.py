"""The notifier process: consume the alerts topic into the outbox, keep the receivers current, send.

Three loops, one process:
- **consume**: its own consumer group (`<APP_ID>-notifier`); each fetched batch becomes one pending
  delivery per matching receiver in PostgreSQL, and only then are its offsets committed. A crash at any
  point re-consumes messages whose deliveries may already exist; the outbox ignores those repeats.
- **control** (every `WEBHOOK_POLL_S`): reload receivers (WEBHOOK_URLS + the `webhooks` table, so
  `PUT /webhooks/{name}` needs no restart), hold the sender lease, start/stop one sender per receiver.
- **senders** (notify/sender.py): one task per receiver.

SIGTERM/SIGINT: stop consuming after the batch in hand (its offsets committed), let each sender finish
the attempt in flight, leave the consumer group, release the lease, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from telemetrypulse import db
from telemetrypulse.aio import wait_set
from telemetrypulse.exceptions import OutboxError, SettingsError, TelemetryPulseError
from telemetrypulse.kafka_admin import ensure_topics
from telemetrypulse.notify import delivery_metrics
from telemetrypulse.notify.outbox import Outbox, SenderLease
from telemetrypulse.notify.sender import ReceiverSender
from telemetrypulse.settings import Settings, aiokafka_options, get_settings
from telemetrypulse.webhooks import (
    AlertMessage,
    PlannedDelivery,
    Receiver,
    env_receivers,
    parse_alert_message,
    plan_deliveries,
    redact_url,
)

log = logging.getLogger("telemetrypulse.notify")

FETCH_MAX_RECORDS = 500
STOP_GRACE_EXTRA_S = 5.0


def consumer_group(settings: Settings) -> str:
    return settings.names.notifier_group


def check_settings(settings: Settings) -> None:
    """What only the notifier needs; raises SettingsError with one line naming the variable."""
    settings.dsn  # noqa: B018 - DATABASE_URL, named if missing
    if settings.webhook_urls is not None and settings.webhook_secret is None:
        raise SettingsError(
            "WEBHOOK_SECRET: required when WEBHOOK_URLS is set (every delivery is signed with it)"
        )


def select_alerts(records: list[ConsumerRecord], now_ms: int, max_age_s: float) -> list[AlertMessage]:
    """The alert messages of a fetched batch worth delivering, in order (pure; logs what it skips)."""
    alerts = []
    for record in records:
        parsed = parse_alert_message(record.value)
        if isinstance(parsed, str):
            delivery_metrics.MESSAGES.labels("invalid").inc()
            log.warning(
                "skipping a message that is not an alert (%s) at %s[%d]@%d",
                parsed,
                record.topic,
                record.partition,
                record.offset,
            )
            continue
        if record.timestamp is not None and now_ms - record.timestamp > max_age_s * 1000:
            delivery_metrics.MESSAGES.labels("too_old").inc()
            continue
        delivery_metrics.MESSAGES.labels("planned").inc()
        alerts.append(parsed)
    return alerts


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dsn = settings.dsn
        self.topic = settings.topic_alerts
        self.group = consumer_group(settings)
        self.secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
        self.env_receivers = env_receivers(settings.webhook_receivers())
        self.receivers: dict[str, Receiver] = {}
        self.senders: dict[str, ReceiverSender] = {}
        self.stopping = asyncio.Event()
        self.outbox: Outbox | None = None
        self.lease = SenderLease(self.dsn)
        self._said_idle = False
        self._said_standby = False

    # ------------------------------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        # Until the loops run, a signal simply ends the process: nothing is in flight yet.
        await db.wait_for_database(self.dsn)
        applied = await db.migrate(self.dsn)
        if applied:
            log.info("applied migrations %s", applied)
        await self._ensure_topic()
        pool = await db.create_pool(self.dsn, min_size=1, max_size=4)
        self.outbox = Outbox(pool)
        self._serve_metrics()
        consumer = AIOKafkaConsumer(
            self.topic,
            **aiokafka_options(self.settings),
            group_id=self.group,
            client_id=self.group,
            enable_auto_commit=False,
            # A new group starts at the topic's beginning; messages older than WEBHOOK_MAX_AGE_S are
            # skipped (they would expire unsent anyway), so a first start does not replay history.
            auto_offset_reset="earliest",
        )
        loops: list[asyncio.Task] = []
        try:
            await self._reload_receivers()
            await consumer.start()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            log.info(
                "notifier ready: consuming %s as group %s; %d receiver(s); retries for up to %gs",
                self.topic,
                self.group,
                len(self.receivers),
                self.settings.webhook_max_age_s,
            )
            loops = [
                asyncio.create_task(self._consume_loop(consumer), name="notifier-consume"),
                asyncio.create_task(self._control_loop(), name="notifier-control"),
            ]
            stop = asyncio.create_task(self.stopping.wait(), name="notifier-stop")
            done, _ = await asyncio.wait({*loops, stop}, return_when=asyncio.FIRST_COMPLETED)
            self.stopping.set()
            for task in loops:
                if task in done and task.exception() is not None:
                    raise task.exception()
            # The consumer finishes the batch in hand (enqueued and committed, or neither).
            await asyncio.wait(loops, timeout=30)
            log.info("notifier stopping: letting in-flight deliveries finish")
            await self._stop_senders(list(self.senders))
        finally:
            for task in loops:
                task.cancel()
            await self._stop_senders(list(self.senders))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 15)
            await self.lease.release()
            await pool.close()
        log.info("notifier stopped")
        return 0

    async def _ensure_topic(self) -> None:
        """The alerts topic (the worker creates it too); a broker that is still starting is waited for."""
        delay = 1.0
        while True:
            try:
                await ensure_topics(self.settings, [self.topic], self.settings.topic_partitions)
                return
            except (KafkaError, OSError, TimeoutError) as e:
                log.warning("Kafka not reachable yet (%s: %s); retrying in %.0fs", type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _serve_metrics(self) -> None:
        port = self.settings.notifier_web_port
        if not port:
            return
        from prometheus_client import start_http_server

        try:
            start_http_server(port)
        except OSError as e:
            log.warning("metrics: cannot listen on port %d (%s); running without /metrics", port, e)
        else:
            log.info("metrics on :%d/metrics", port)

    # ------------------------------------------------------------------------------------------ consume

    async def _consume_loop(self, consumer: AIOKafkaConsumer) -> None:
        assert self.outbox is not None
        while not self.stopping.is_set():
            try:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            except KafkaError as e:
                log.warning("alerts topic: %s; retrying", e)
                await asyncio.sleep(1)
                continue
            if not fetched:
                continue
            records = [r for tp in sorted(fetched, key=lambda t: t.partition) for r in fetched[tp]]
            alerts = select_alerts(records, int(time.time() * 1000), self.settings.webhook_max_age_s)
            planned = plan_deliveries(alerts, list(self.receivers.values()))
            if not await self._enqueue_until_done(planned):
                return  # stopping before the outbox took them: their offsets stay uncommitted
            offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "") for tp, batch in fetched.items()}
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as e:
                # A rebalance took the partitions: the next owner re-reads them, the outbox drops repeats.
                log.warning("offset commit failed (%s); those alerts will be read again", e)
            for name in {p.receiver for p in planned}:
                if name in self.senders:
                    self.senders[name].wake()

    async def _enqueue_until_done(self, planned: list[PlannedDelivery]) -> bool:
        """Retry until PostgreSQL has the deliveries: committing past them would lose them."""
        assert self.outbox is not None
        delay = 0.5
        while True:
            try:
                created = await self.outbox.enqueue(planned)
                delivery_metrics.DELIVERIES_CREATED.inc(created)
                return True
            except OutboxError as e:
                delivery_metrics.OUTBOX_RETRIES.inc()
                if self.stopping.is_set():
                    log.warning(
                        "stopping with %d deliveries not enqueued (%s); they are read again next start",
                        len(planned),
                        e,
                    )
                    return False
                log.warning("outbox: %s; retrying in %.1fs (offsets not committed)", e, delay)
                await wait_set(self.stopping, delay)
                delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------------------------------ control

    async def _control_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._reload_receivers()
                await self._hold_lease()
                await self._sync_senders()
                await self._update_pending()
            except OutboxError as e:
                log.warning("control: %s", e)
            await wait_set(self.stopping, self.settings.webhook_poll_s)

    async def _reload_receivers(self) -> None:
        assert self.outbox is not None
        table = await self.outbox.receivers()
        current = {r.name: r for r in [*self.env_receivers, *table]}
        if current != self.receivers:
            added = sorted(set(current) - set(self.receivers))
            removed = sorted(set(self.receivers) - set(current))
            changed = sorted(n for n in set(current) & set(self.receivers) if current[n] != self.receivers[n])
            for name in added + changed:
                r = current[name]
                log.info(
                    "receiver %s %s: %s (site %s, min severity %s)",
                    name,
                    "added" if name in added else "changed",
                    redact_url(r.url),
                    r.site_id or "any",
                    r.min_severity,
                )
            for name in removed:
                log.info("receiver %s removed (its pending deliveries are kept, not sent)", name)
            self.receivers = current
        if not self.receivers and not self._said_idle:
            log.info(
                "no webhook receivers configured (WEBHOOK_URLS or PUT /webhooks/{name}): alerts are read and "
                "not delivered; checking again every %gs",
                self.settings.webhook_poll_s,
            )
            self._said_idle = True
        elif self.receivers:
            self._said_idle = False

    async def _hold_lease(self) -> None:
        assert self.outbox is not None
        if self.lease.held:
            if not await self.lease.still_held():
                await self._stop_senders(list(self.senders))
            return
        if not await self.lease.try_acquire():
            if not self._said_standby:
                log.info(
                    "another notifier holds the sender lease: this one enqueues deliveries, it does not send"
                )
                self._said_standby = True
            return
        self._said_standby = False
        interrupted = await self.outbox.recover_interrupted()
        if interrupted:
            log.warning(
                "%d attempt(s) were in flight when the last sender stopped; they will be retried "
                "(a receiver may see them twice): %s",
                len(interrupted),
                ", ".join(f"{r}/{d}" for r, d in interrupted[:10]),
            )

    async def _sync_senders(self) -> None:
        assert self.outbox is not None
        if not self.lease.held:
            return
        for name in [n for n in self.senders if n not in self.receivers]:
            await self._stop_senders([name])
        for name, receiver in self.receivers.items():
            sender = self.senders.get(name)
            if sender is None:
                sender = ReceiverSender(
                    receiver,
                    self.outbox,
                    secret=self.secret,
                    timeout_s=self.settings.webhook_timeout_s,
                    max_age_s=self.settings.webhook_max_age_s,
                    poll_s=self.settings.webhook_poll_s,
                )
                self.senders[name] = sender
                sender.start()
            elif sender.receiver != receiver:
                sender.update(receiver)

    async def _stop_senders(self, names: list[str]) -> None:
        senders = [self.senders.pop(n) for n in names if n in self.senders]
        grace = self.settings.webhook_timeout_s + STOP_GRACE_EXTRA_S
        await asyncio.gather(*(s.stop(grace) for s in senders))

    async def _update_pending(self) -> None:
        assert self.outbox is not None
        pending = await self.outbox.pending_by_receiver()
        for name in set(pending) | set(self.receivers):
            delivery_metrics.PENDING.labels(name).set(pending.get(name, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetrypulse notify",
        description="Deliver alert messages to webhooks: signed, retried, once per receiver (SPEC §10)",
    )
    parser.parse_args(argv)
    try:
        settings = get_settings()
        check_settings(settings)
    except TelemetryPulseError as e:
        print(f"telemetrypulse notify: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request URL at INFO; a receiver's URL may carry its token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(Notifier(settings).run())
