"""The sink process (`telemetrypulse sink`): the consumer loop over `<APP_ID>-changes` and its lifecycle.

A plain aiokafka consumer in group `<APP_ID>-sink`; each `getmany` (all its partitions) is one PostgreSQL
transaction (writer.py). The positions that count are in PostgreSQL (`sink_offsets`), committed with the rows
they cover:
- an assigned partition stays paused until its position is read from `sink_offsets` (retried while PostgreSQL is
  down); without a row it starts from its beginning. Kafka's committed offsets are never used to position.
- a failed write is retried with backoff, forever: a batch is never skipped and never acknowledged unwritten.
  While PostgreSQL is down Kafka simply holds the changes.
- after each transaction the same offsets are committed to Kafka too, best effort, so lag shows in the usual tools.
- a record that cannot be decoded or checked is logged at ERROR with its coordinates, counted and skipped.
- SIGTERM: the transaction under way completes (or fails), then the consumer leaves the group.
Several sinks in one group stay exact: every write is idempotent and positions only move forward.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from telemetrypulse import db, metrics
from telemetrypulse.aio import wait_set
from telemetrypulse.exceptions import SettingsError
from telemetrypulse.kafka_admin import ensure_topics
from telemetrypulse.settings import Settings, aiokafka_options, get_settings
from telemetrypulse.sink.batch import BatchBuilder, RecordError, SinkBatch, decode_record
from telemetrypulse.sink.writer import PostgresWriter

log = logging.getLogger("telemetrypulse.sink")

POLL_TIMEOUT_MS = 500  # also how soon an idle sink notices SIGTERM
# A worker record is up to 900 KB; a larger per-partition fetch lets the consumer prefetch several while a
# transaction runs.
MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
# On revocation, wait this long for a transaction under way: the next owner then starts after it instead of
# writing the same records again (harmless, only wasted work).
REVOKE_WAIT_S = 15.0
COMMIT_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 60.0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: SinkService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.service.on_assigned(set(assigned))


class _Progress:
    """Totals since the last progress line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.since = time.monotonic()
        self.transactions = self.records = self.raw = self.windows = self.latest = self.alerts = 0
        self.retries = self.skipped = 0

    def add(self, batch: SinkBatch) -> None:
        self.transactions += 1
        self.records += batch.records
        self.skipped += batch.skipped
        self.raw += len(batch.raw)
        self.windows += len(batch.windows)
        self.latest += len(batch.latest)
        self.alerts += len(batch.alerts)


class SinkService:
    def __init__(self, settings: Settings, writer: PostgresWriter | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic_changes
        self.group = settings.sink_group
        self.writer = writer or PostgresWriter(settings.dsn, self.group)
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: set[TopicPartition] = set()  # assigned, paused until their position is read
        self._generation = 0  # counts rebalance callbacks
        self._attempt_done = asyncio.Event()  # no transaction under way
        self._attempt_done.set()
        self._uncommitted: dict[tuple[str, int], int] = {}  # positions written but not yet committed to Kafka
        self._committer: asyncio.Task | None = None
        self._progress = _Progress()

    def stop(self) -> None:
        self._stopping.set()

    # ---------------------------------------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        settings = self.settings
        if not await self._unless_stopping(db.wait_for_database(settings.dsn)):
            return
        applied = await db.migrate(settings.dsn)
        if applied:
            log.info("applied migrations %s", applied)
        created = await self._retrying(
            "creating the changes topic",
            lambda: ensure_topics(settings, [self.topic], settings.topic_partitions),
        )
        if not created:
            return
        consumer = AIOKafkaConsumer(
            **aiokafka_options(settings),
            group_id=self.group,
            client_id=f"{self.group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A transactional producer's aborted records are never written.
            isolation_level="read_committed",
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.subscribe([self.topic], listener=_Rebalance(self))
            log.info("sink started: group %s, topic %s", self.group, self.topic)
            await self._consume(consumer)
        finally:
            if self._committer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._committer, COMMIT_TIMEOUT_S)
            # Leaves the group: the partitions move to the other sinks at once, not after a session timeout.
            await consumer.stop()
            await self.writer.close()
            self._log_progress()
            log.info("sink stopped")

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Fetch and decode the next batch while PostgreSQL writes the current one (the sink's own work and the
        database's then overlap on two cores); transactions stay one at a time, in order."""
        delay = BACKOFF_FIRST_S
        writing: asyncio.Task[bool] | None = None
        try:
            while not self._stopping.is_set():
                if self._pending:
                    if writing is not None:  # positions are read after the transaction under way
                        if not await writing:
                            return
                        writing = None
                    if not await self._start_pending(consumer):
                        metrics.SINK_RETRIES.inc()
                        if not await self._sleep(delay):
                            return
                        delay = min(delay * 2, BACKOFF_MAX_S)
                        continue
                    delay = BACKOFF_FIRST_S
                fetched = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=self.settings.sink_batch_max_records
                )
                if time.monotonic() - self._progress.since >= PROGRESS_EVERY_S:
                    self._log_progress()
                batch = self._build(fetched) if fetched else None
                if writing is not None:
                    if not await writing:
                        return  # stopping while PostgreSQL fails: nothing acknowledged, Kafka keeps the batch
                    writing = None
                if batch is not None:
                    writing = asyncio.create_task(self._write(consumer, batch))
        finally:
            if writing is not None:
                await writing  # SIGTERM: the transaction under way completes (a retry wait ends at once)

    async def _write(self, consumer: AIOKafkaConsumer, batch: SinkBatch) -> bool:
        if not await self._write_until_done(batch):
            return False
        self._progress.add(batch)
        self._update_lag(consumer, batch)
        self._commit_later(consumer, batch.positions)
        return True

    # ---------------------------------------------------------------------------------------------- positions

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        # Synchronously, before the fetcher can use them: nothing is read until the position is known. Every
        # assigned partition is positioned anew, kept ones too (records prefetched past the last commit).
        assert self._consumer is not None
        if assigned:
            self._consumer.pause(*assigned)
        self._pending = set(assigned)
        self._generation += 1

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._pending -= revoked
        self._generation += 1
        if not self._attempt_done.is_set():
            await wait_set(self._attempt_done, REVOKE_WAIT_S)

    async def _start_pending(self, consumer: AIOKafkaConsumer) -> bool:
        """Seek each pending partition to its stored position (or its beginning) and resume it; False while
        PostgreSQL cannot be read. A rebalance during one of the awaits makes it start over with the new set."""
        generation = self._generation
        partitions = sorted(self._pending)
        try:
            stored = await self.writer.read_positions(self.topic, [tp.partition for tp in partitions])
        except Exception as e:
            log.warning("cannot read positions from sink_offsets (%s); retrying", e)
            return False
        if generation != self._generation:
            return True
        starts, from_beginning = [], []
        for tp in partitions:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
                starts.append(f"{tp.partition} from {stored[tp.partition]} (sink_offsets)")
            else:
                from_beginning.append(tp)
                starts.append(f"{tp.partition} from its beginning (no row in sink_offsets)")
        if from_beginning:
            try:
                await consumer.seek_to_beginning(*from_beginning)
            except IllegalStateError:
                return True  # revoked meanwhile
            if generation != self._generation:
                return True
        consumer.resume(*partitions)
        self._pending.clear()
        log.info("assigned %s partitions: %s", self.topic, "; ".join(starts))
        return True

    # ---------------------------------------------------------------------------------------------- writing

    def _build(self, fetched: dict[TopicPartition, list[Any]]) -> SinkBatch:
        builder = BatchBuilder()
        for tp, records in fetched.items():
            for record in records:
                try:
                    checked = decode_record(record.value)
                except RecordError as e:
                    log.error(
                        "undecodable change record %s partition %d offset %d skipped: %s",
                        tp.topic,
                        tp.partition,
                        record.offset,
                        e,
                    )
                    metrics.SINK_UNDECODABLE.inc()
                    builder.skipped += 1
                else:
                    builder.add(checked)
            builder.advance(tp.topic, tp.partition, records[-1].offset + 1)
        return builder.build()

    async def _write_until_done(self, batch: SinkBatch) -> bool:
        """True once written; False only when stopping before it could be."""
        delay = BACKOFF_FIRST_S
        while True:
            started = time.perf_counter()
            self._attempt_done.clear()
            try:
                await self.writer.write(batch)
                error = None
            except Exception as e:  # anything: a batch is never skipped, nor acknowledged unwritten
                error = e
            finally:
                self._attempt_done.set()
            if error is None:
                metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
                metrics.SINK_RECORDS.inc(batch.records)
                metrics.SINK_ROWS.labels("telemetry_events").inc(len(batch.raw))
                metrics.SINK_ROWS.labels("telemetry_device_agg").inc(len(batch.windows))
                metrics.SINK_ROWS.labels("telemetry_device_latest").inc(len(batch.latest))
                metrics.SINK_ROWS.labels("telemetry_alerts").inc(len(batch.alerts))
                return True
            metrics.SINK_RETRIES.inc()
            self._progress.retries += 1
            log.warning("%s: %s; retrying in %.1fs", type(error).__name__, error, delay)
            if not await self._sleep(delay):
                return False
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _update_lag(self, consumer: AIOKafkaConsumer, batch: SinkBatch) -> None:
        for (topic, partition), next_offset in batch.positions.items():
            end = consumer.highwater(TopicPartition(topic, partition))
            if end is not None:
                metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(end - next_offset, 0))

    def _commit_later(self, consumer: AIOKafkaConsumer, positions: dict[tuple[str, int], int]) -> None:
        """Kafka's copy of the positions, in the background: only for lag tools, never read back."""
        for key, offset in positions.items():
            self._uncommitted[key] = max(offset, self._uncommitted.get(key, 0))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_to_kafka(consumer))

    async def _commit_to_kafka(self, consumer: AIOKafkaConsumer) -> None:
        while self._uncommitted:
            positions, self._uncommitted = self._uncommitted, {}
            assigned = consumer.assignment()
            offsets = {
                tp: offset
                for (topic, partition), offset in positions.items()
                if (tp := TopicPartition(topic, partition)) in assigned
            }
            if not offsets:
                continue
            try:
                await asyncio.wait_for(consumer.commit(offsets), COMMIT_TIMEOUT_S)
            except Exception as e:  # best effort: the positions that count are in PostgreSQL
                log.debug("committing offsets to Kafka failed: %s", e)

    # ---------------------------------------------------------------------------------------------- helpers

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; False when stopping."""
        await wait_set(self._stopping, seconds)
        return not self._stopping.is_set()

    async def _unless_stopping(self, awaitable: Awaitable[Any]) -> bool:
        """Await unless SIGTERM comes first (then cancel it); True when it completed."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False

    async def _retrying(self, what: str, make: Callable[[], Awaitable[Any]]) -> bool:
        """Retry with backoff until done (a broker still starting is normal); False when stopping."""
        delay = BACKOFF_FIRST_S
        while True:
            try:
                return await self._unless_stopping(make())
            except Exception as e:
                log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(e).__name__, e, delay)
            if not await self._sleep(delay):
                return False
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _log_progress(self) -> None:
        p = self._progress
        if p.transactions or p.retries or p.skipped:
            log.info(
                "in %.0fs: %d transactions, %d change records (%d raw rows, %d windows, %d latest values, "
                "%d alerts), %d retries, %d records skipped",
                time.monotonic() - p.since,
                p.transactions,
                p.records,
                p.raw,
                p.windows,
                p.latest,
                p.alerts,
                p.retries,
                p.skipped,
            )
        p.reset()


def _serve_metrics(port: int) -> None:
    import prometheus_client

    prometheus_client.start_http_server(port, addr="127.0.0.1")


async def _run(settings: Settings) -> None:
    service = SinkService(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    await service.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetrypulse sink",
        description="Write the worker's change records (<APP_ID>-changes) into PostgreSQL, exactly once.",
    )
    parser.parse_args(argv)
    try:
        settings = get_settings()
        settings.dsn  # noqa: B018 -- fail at start, naming the variable, not at the first write
    except SettingsError as e:
        print(f"telemetrypulse sink: configuration error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.sink_web_port:
        try:
            _serve_metrics(settings.sink_web_port)
        except OSError as e:
            print(
                f"telemetrypulse sink: configuration error: SINK_WEB_PORT: cannot listen on "
                f"127.0.0.1:{settings.sink_web_port} ({e.strerror or e})",
                file=sys.stderr,
            )
            return 2
    asyncio.run(_run(settings))
    return 0
