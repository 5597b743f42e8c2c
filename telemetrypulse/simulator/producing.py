"""The producing edge of `telemetrypulse simulate`: paced production (`--rate`, a token bucket on the loop clock) or
`--burst` (records appended straight into per-partition batches, as fast as the broker takes them) with aiokafka.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from telemetrypulse.aio import wait_set
from telemetrypulse.simulator.clock import format_ts
from telemetrypulse.simulator.generation import DUPLICATE, VALID, Simulator

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from telemetrypulse.settings import Settings

log = logging.getLogger("telemetrypulse.simulator")


@dataclass
class ProduceStats:
    """What one run produced; `kinds` counts messages by kind (valid, duplicate, each invalid kind)."""

    sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


BURST_BATCH_BYTES = 512 * 1024  # below the 1 MiB message.max.bytes default of Kafka and Redpanda
_BURST_CHUNK = 5000
_LOG_EVERY_S = 10.0


def _producer(settings: Settings, *, burst: bool) -> AIOKafkaProducer:
    from aiokafka import AIOKafkaProducer

    from telemetrypulse.settings import aiokafka_options

    return AIOKafkaProducer(
        **aiokafka_options(settings),
        client_id=settings.names.client_id("simulator"),
        acks="all",
        enable_idempotence=True,
        linger_ms=20 if burst else 5,
        max_batch_size=BURST_BATCH_BYTES if burst else 16384,
    )


async def produce(
    settings: Settings,
    simulator: Simulator,
    *,
    topic: str,
    count: int | None = None,
    rate: float | None = None,
    burst: bool = False,
    progress: bool = False,
    stop: asyncio.Event | None = None,
    create_topic: bool = True,
) -> ProduceStats:
    """Produce `count` messages (None: until `stop` is set) and wait until the broker has acknowledged all of them."""
    if not burst and (rate is None or rate <= 0):
        raise ValueError("rate must be > 0 unless burst")
    stop = stop or asyncio.Event()
    if create_topic:
        from telemetrypulse.kafka_admin import ensure_topics

        await ensure_topics(settings, [topic], settings.topic_partitions)
    producer = _producer(settings, burst=burst)
    await producer.start()
    stats = ProduceStats()
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        if burst:
            await _produce_burst(producer, topic, simulator, count, stop, stats, progress)
        else:
            assert rate is not None
            await _produce_paced(producer, topic, simulator, count, rate, stop, stats)
    finally:
        await producer.stop()  # flushes what is still buffered
        stats.elapsed_s = loop.time() - began
    return stats


class RecordBatches:
    """Records appended straight into one record batch per partition, with no per-message `send()`: what lets one
    Python process produce hundreds of thousands of events a second (`--burst`, the benchmark, the dev kit).

    The partition is the one `send()` would pick (murmur2 of the key, Java-compatible), so every device keeps its
    partition whichever way it was produced; per partition, records reach the topic in the order they were appended.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: Iterable[int]) -> None:
        from aiokafka.partitioner import DefaultPartitioner

        self.producer = producer
        self.topic = topic
        self._partitions = sorted(partitions)
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[bytes, int] = {}
        self._builders: dict[int, Any] = {}

    @classmethod
    async def for_topic(cls, producer: AIOKafkaProducer, topic: str) -> RecordBatches:
        return cls(producer, topic, await producer.partitions_for(topic))

    def append(self, key: bytes, value: bytes) -> int | None:
        """Append a record to its partition's batch; when that batch is full, nothing is appended and the partition
        is returned: pass it to `send_full` with the same record."""
        p = self._partition_of.get(key)
        if p is None:
            p = self._partition_of[key] = self._partitioner(key, self._partitions, self._partitions)
        builder = self._builders.get(p)
        if builder is None:
            builder = self._builders[p] = self.producer.create_batch()
        return p if builder.append(timestamp=None, key=key, value=value) is None else None

    async def send_full(self, partition: int, key: bytes, value: bytes) -> asyncio.Future:
        """Send the partition's full batch and start its next one with the record that did not fit; the delivery
        future of the batch sent. Awaiting it is the backpressure: it waits while the partition's previous batch
        is still queued."""
        future = await self.producer.send_batch(self._builders[partition], self.topic, partition=partition)
        builder = self._builders[partition] = self.producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:
            raise ValueError(f"message of {len(value)} bytes does not fit in a batch")
        return future

    async def send_all(self) -> list[asyncio.Future]:
        """Send every batch that holds records; the next append starts new ones."""
        builders, self._builders = self._builders, {}
        return [
            await self.producer.send_batch(builder, self.topic, partition=p)
            for p, builder in builders.items()
            if builder.record_count()
        ]


class Inflight:
    """Delivery futures not yet known to be done; the first failure is raised, not dropped."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future] = []
        self.limit = 256

    def add(self, future: asyncio.Future) -> None:
        self.futures.append(future)
        if len(self.futures) >= self.limit:
            self.check()

    def check(self) -> None:
        pending = []
        for future in self.futures:
            if future.done():
                future.result()
            else:
                pending.append(future)
        self.futures = pending
        # Amortised: a long backlog of unacknowledged sends must not be rescanned on every add.
        self.limit = max(256, 2 * len(pending))

    async def drain(self) -> None:
        if self.futures:
            await asyncio.gather(*self.futures)
        self.futures = []


async def _produce_paced(
    producer: AIOKafkaProducer,
    topic: str,
    simulator: Simulator,
    count: int | None,
    rate: float,
    stop: asyncio.Event,
    stats: ProduceStats,
) -> None:
    loop = asyncio.get_running_loop()
    messages = simulator.messages()
    inflight = Inflight()
    # A 100 ms bucket keeps high rates smooth without sending a clump after a stall.
    capacity = max(1.0, rate * 0.1)
    tokens = 1.0
    last = loop.time()
    next_log = last + _LOG_EVERY_S
    logged_sent, logged_at = 0, last
    warned_future = False
    while not stop.is_set() and (count is None or stats.sent < count):
        now = loop.time()
        tokens = min(capacity, tokens + (now - last) * rate)
        last = now
        if tokens < 1.0:
            await wait_set(stop, (1.0 - tokens) / rate)
            continue
        n = int(tokens)
        if count is not None:
            n = min(n, count - stats.sent)
        tokens -= n
        for key, value, kind in islice(messages, n):
            inflight.add(await producer.send(topic, value, key=key))
            stats.kinds[kind] += 1
        stats.sent += n
        if now >= next_log:
            inflight.check()
            event_ms = simulator.event_time_ms
            log.info(
                "sent %d events in %.0f s (%.1f/s), total %d (%d duplicate, %d invalid), event time %s",
                stats.sent - logged_sent,
                now - logged_at,
                (stats.sent - logged_sent) / (now - logged_at),
                stats.sent,
                stats.kinds[DUPLICATE],
                stats.sent - stats.kinds[VALID] - stats.kinds[DUPLICATE],
                format_ts(event_ms),
            )
            if not warned_future and event_ms > time.time() * 1000 + 300_000:
                warned_future = True
                log.warning(
                    "simulated event time is now >5 min ahead of the clock: the worker will reject it"
                )
            logged_sent, logged_at, next_log = stats.sent, now, now + _LOG_EVERY_S
    await inflight.drain()


async def _produce_burst(
    producer: AIOKafkaProducer,
    topic: str,
    simulator: Simulator,
    count: int | None,
    stop: asyncio.Event,
    stats: ProduceStats,
    progress: bool,
) -> None:
    """Fill one record batch per partition and hand over full batches; no per-message send() or await.

    Record timestamps stay the produce time: event-time timestamps on a backfill would let retention delete the
    segments at once.
    """
    batches = await RecordBatches.for_topic(producer, topic)
    inflight = Inflight()
    messages = simulator.messages()
    kinds = stats.kinds
    bar = _progress_bar(count) if progress else None
    try:
        while not stop.is_set() and (count is None or stats.sent < count):
            n = _BURST_CHUNK if count is None else min(_BURST_CHUNK, count - stats.sent)
            for key, value, kind in islice(messages, n):
                kinds[kind] += 1
                full = batches.append(key, value)
                if full is not None:
                    inflight.add(await batches.send_full(full, key, value))
            stats.sent += n
            inflight.check()
            if bar is not None:
                bar.update(n)
            await asyncio.sleep(0)  # let the sender task and signal handlers run between chunks
        for future in await batches.send_all():
            inflight.add(future)
        await inflight.drain()
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(total: int | None) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a nicety; burst mode still logs its totals
        return None
    return tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr, smoothing=0.1, mininterval=0.5)
