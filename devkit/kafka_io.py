"""Kafka for tests and benchmark passes: topics of their own, offsets, the two producers — `produce` (records in
order, one `send()` each, idempotent) and `produce_burst` (records appended straight into per-partition batches,
`telemetrypulse.simulator.RecordBatches`) — and the one topic reader (`records`, from the start or the tail of each
partition up to the end offsets as they were when it began)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from tqdm import tqdm

from telemetrypulse.simulator import RecordBatches

BURST_BATCH_BYTES = 512 * 1024  # under the broker's 1 MiB message.max.bytes
FETCH_BYTES = 8 * 1024 * 1024  # a changes record or a state snapshot may be large

# (key, value), or (key, value, partition) where the partition is forced (poison at a partition's head).
Message = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, int | None]


# --------------------------------------------------------------------------------------------- topics and offsets


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int, timeout_s: float = 30) -> None:
    """Create the topics and wait for a leader on every partition (creation is asynchronous)."""
    async with admin_client(bootstrap) as admin:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            described = await admin.describe_topics(list(names))
            if all(
                t.get("error_code") == 0
                and len(t.get("partitions") or ()) == partitions
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"topics {list(names)} not ready after {timeout_s:.0f} s")


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Best effort: names are unique per test or pass, so a leftover harms nobody."""
    with contextlib.suppress(Exception):
        async with admin_client(bootstrap) as admin:
            existing = set(await admin.list_topics())
            doomed = [n for n in names if n in existing]
            if doomed:
                await admin.delete_topics(doomed)


async def topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    async with admin_client(bootstrap) as admin:
        return sorted(n for n in await admin.list_topics() if n.startswith(prefix))


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    async with admin_client(bootstrap) as admin:
        described = await admin.describe_topics([topic])
    return sorted(p["partition"] for t in described for p in t.get("partitions") or ())


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    partitions = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The group's committed offset per partition (0 where it committed none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions}
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------------------------- producing


class OrderedProducer:
    """An idempotent producer (acks=all): each record reaches the topic once, and per key (one partition per key)
    or per forced partition in the order sent — also when a send spans a broker restart shorter than the request
    timeout (aiokafka retries, the broker drops the repeat). What the pipeline's models assume of a topic."""

    def __init__(self, bootstrap: str, **options) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **{"acks": "all", "enable_idempotence": True, "linger_ms": 5, **options},
        )

    async def __aenter__(self) -> OrderedProducer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.producer.stop()

    async def send_all(self, topic: str, messages: Iterable[Message]) -> None:
        """Send in order and wait until the broker has acknowledged every one."""
        futures = []
        for key, value, *partition in messages:
            p = partition[0] if partition else None
            futures.append(await self.producer.send(topic, key=key, value=value, partition=p))
        await asyncio.gather(*futures)


async def produce(bootstrap: str, topic: str, messages: Iterable[Message], **options) -> None:
    async with OrderedProducer(bootstrap, **options) as producer:
        await producer.send_all(topic, messages)


async def produce_burst(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    count: int,
    *,
    on_value: Callable[[bytes], None] | None = None,
    desc: str = "produce",
) -> float:
    """Produce `count` (key, value) messages as fast as the broker takes them, each in the partition `send()` would
    pick and per key in order; `on_value` sees each value (to compute what a dataset must give). Returns events/s."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=BURST_BATCH_BYTES,
    )
    await producer.start()
    began = time.monotonic()
    sent = 0
    try:
        batches = await RecordBatches.for_topic(producer, topic)
        futures: list[asyncio.Future] = []
        with tqdm(total=count, desc=desc, unit="ev", unit_scale=True, leave=False, mininterval=0.5) as bar:
            it = iter(messages)
            while sent < count:
                chunk = 0
                for key, value in it:
                    if on_value is not None:
                        on_value(value)
                    full = batches.append(key, value)
                    if full is not None:
                        futures.append(await batches.send_full(full, key, value))
                    chunk += 1
                    if chunk == 5000 or sent + chunk == count:
                        break
                if chunk == 0:
                    break
                sent += chunk
                bar.update(chunk)
                await asyncio.sleep(0)
            futures += await batches.send_all()
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    if sent != count:
        raise RuntimeError(f"the generator ran dry after {sent} of {count} messages")
    return sent / (time.monotonic() - began)


# --------------------------------------------------------------------------------------------- reading


async def records(
    bootstrap: str, topic: str, *, tail: int | None = None, timeout_s: float = 5.0
) -> AsyncIterator[list[ConsumerRecord]]:
    """The topic's records, batch by batch, from the beginning of each partition (or its last `tail` records) up to
    the end offsets as they are when reading starts. Gives up quietly after `timeout_s` plus 1 s per 20,000
    records: what was read so far is what the caller gets."""
    ends = await end_offsets(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
    if not tps:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=FETCH_BYTES
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        if tail is None:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp.partition] - tail))
        deadline = time.monotonic() + timeout_s + sum(ends.values()) / 20000
        while time.monotonic() < deadline:
            # Positions, not the last offset seen: compaction gaps and transaction markers hold no record.
            if all([await consumer.position(tp) >= ends[tp.partition] for tp in tps]):
                return
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                yield items
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 5.0, *, tail: int | None = None) -> list:
    """Every record of `records(…)` in one list."""
    found: list[ConsumerRecord] = []
    async for batch in records(bootstrap, topic, tail=tail, timeout_s=timeout_s):
        found.extend(batch)
    return found


async def latest_per_key(
    bootstrap: str, topic: str, *, tail: int | None = None, timeout_s: float = 60.0
) -> tuple[dict[bytes, bytes], int, int]:
    """The last value per key of a (changelog) topic — a tombstone removes its key — with the number of records and
    of value bytes read."""
    latest: dict[bytes, bytes] = {}
    count = size = 0
    async for batch in records(bootstrap, topic, tail=tail, timeout_s=timeout_s):
        for r in batch:
            count += 1
            size += len(r.value or b"")
            if r.value is None:
                latest.pop(r.key, None)
            else:
                latest[r.key] = r.value
    return latest, count, size


def json_values(found: Iterable[ConsumerRecord]) -> list[dict]:
    return [orjson.loads(r.value) for r in found]
