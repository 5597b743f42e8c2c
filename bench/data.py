"""Benchmark datasets: simulator events pre-produced into a fresh topic as fast as the broker takes them, and the
outcome they must have (per-window counts, min, max), computed here independently of the worker so each phase
can check its counts exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from tqdm import tqdm

WINDOW_SIZES_S = (300, 900)
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
BURST_BATCH_BYTES = 512 * 1024  # under the broker's 1 MiB message.max.bytes


def ts_us(text: str) -> int:
    moment = datetime.fromisoformat(text)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class Expected:
    """What a dataset of valid, unique, in-order events must give: every event stored and in one window of each size."""

    events: int = 0
    windows: dict[tuple, list] = field(
        default_factory=dict
    )  # (size_s, device, sensor, start_us) -> [n, sum, min, max]
    devices: set[str] = field(default_factory=set)
    first_us: int | None = None
    last_us: int | None = None

    def add(self, value: bytes) -> None:
        event = orjson.loads(value)
        t = ts_us(event["ts_event"])
        v = float(event["value"])
        device, sensor = event["device_id"], event["sensor_type"]
        self.events += 1
        self.devices.add(device)
        self.first_us = t if self.first_us is None else min(self.first_us, t)
        self.last_us = t if self.last_us is None else max(self.last_us, t)
        for size in WINDOW_SIZES_S:
            size_us = size * 1_000_000
            key = (size, device, sensor, t // size_us * size_us)
            agg = self.windows.get(key)
            if agg is None:
                self.windows[key] = [1, v, v, v]
            else:
                agg[0] += 1
                agg[1] += v
                if v < agg[2]:
                    agg[2] = v
                if v > agg[3]:
                    agg[3] = v


async def burst_produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    count: int,
    *,
    expected: Expected | None = None,
    desc: str = "produce",
) -> float:
    """Produce `count` (key, value) messages, keyed partitioning as `send()` would do it; returns events/s.

    Records are appended straight into per-partition batches (no per-message `send()`), which is what lets one
    Python process pre-produce a million events in seconds; ordering per key is kept (idempotent producer).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=BURST_BATCH_BYTES,
    )
    await producer.start()
    partitioner = DefaultPartitioner()
    began = time.monotonic()
    sent = 0
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partition_of: dict[bytes, int] = {}
        builders: dict[int, object] = {}
        futures: list[asyncio.Future] = []
        with tqdm(total=count, desc=desc, unit="ev", unit_scale=True, leave=False, mininterval=0.5) as bar:
            it = iter(messages)
            while sent < count:
                chunk = 0
                for key, value in it:
                    if expected is not None:
                        expected.add(value)
                    p = partition_of.get(key)
                    if p is None:
                        p = partition_of[key] = partitioner(key, partitions, partitions)
                    builder = builders.get(p)
                    if builder is None:
                        builder = builders[p] = producer.create_batch()
                    if builder.append(timestamp=None, key=key, value=value) is None:
                        futures.append(await producer.send_batch(builder, topic, partition=p))
                        builder = builders[p] = producer.create_batch()
                        builder.append(timestamp=None, key=key, value=value)
                    chunk += 1
                    if chunk == 5000 or sent + chunk == count:
                        break
                if chunk == 0:
                    break
                sent += chunk
                bar.update(chunk)
                await asyncio.sleep(0)
            for p, builder in builders.items():
                if builder.record_count():
                    futures.append(await producer.send_batch(builder, topic, partition=p))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    if sent != count:
        raise RuntimeError(f"the generator ran dry after {sent} of {count} messages")
    return sent / (time.monotonic() - began)
