"""The process agent: validate, route bad input to the DLQ, and apply each device's events to its state.

Per batch, in this order (the exactly-once effect rests on it):
1. compute everything from the current state (pure: models.validate_event, state.apply_events);
2. publish the outputs — DLQ records, re-keyed events, alerts, the changes for the sink — and wait
   until Kafka has them;
3. only then write the new state records (one per device, one changelog message each).
A crash before 3 leaves the old state: the replayed events recompute the same outputs, which are
deterministic (alert ids, window versions) and idempotent downstream. A crash after 3 leaves state
whose fences skip the replayed events. State is never ahead of the outputs it implies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import defaultdict

import faust
import orjson
from faust.streams import _current_event  # the context var Faust's tables use to pick a partition

from telemetrypulse import metrics
from telemetrypulse.app import app, settings
from telemetrypulse.models import Event, Invalid, dlq_record, now_us, validate_event
from telemetrypulse.state import BatchOutput, DeviceState, Source, apply_events
from telemetrypulse.topology import (
    alerts_topic,
    changes_topic,
    device_state_table,
    dlq_topic,
    events_topic,
    partition_fence_table,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def as_current_event(event: faust.types.EventT):
    """Make table reads and writes use `event`'s partition.

    Faust picks the RocksDB partition and the changelog partition from the *current event*; inside
    a `take_events()` batch that is simply the last event buffered, which may belong to another
    partition. Each device's record must live in its own source partition, so set it explicitly.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@app.agent(events_topic)
async def process_events(stream: faust.StreamT) -> None:
    async for batch in stream.take_events(settings.worker_batch_max, within=settings.worker_batch_within_s):
        started = time.perf_counter()
        await handle_batch(batch)
        metrics.PROCESS_BATCH_SECONDS.observe(time.perf_counter() - started)


def _partition_fence(event: faust.types.EventT) -> int:
    with as_current_event(event):
        raw = partition_fence_table.get(b"fence")
    return int(raw) if raw else -1


async def handle_batch(batch: list[faust.types.EventT]) -> None:
    received = now_us()
    by_partition: dict[int, list[faust.types.EventT]] = defaultdict(list)
    for event in batch:
        by_partition[event.message.partition].append(event)

    sends: list[tuple[faust.types.TopicT, bytes | None, bytes, int | None]] = []
    state_writes: list[tuple[faust.types.EventT, bytes, bytes]] = []
    fence_writes: list[tuple[faust.types.EventT, bytes]] = []
    total = BatchOutput()
    invalid_count = rekeyed_count = 0

    for partition, events in by_partition.items():
        fence = _partition_fence(events[0])
        per_device: dict[str, list[tuple[Event, Source]]] = defaultdict(list)
        last_event_of_device: dict[str, faust.types.EventT] = {}
        side_outputs = False
        for event in events:
            message = event.message
            payload = message.value
            try:
                result = (
                    validate_event(payload, received)
                    if payload is not None
                    else Invalid("invalid_json", "empty message value (tombstone)")
                )
            except Exception as e:  # the worker never dies on data
                log.exception("validator failed on %s:%s", partition, message.offset)
                result = Invalid("processing_error", f"{type(e).__name__}: {e}")
            if isinstance(result, Invalid) or message.key != result.device_id.encode():
                # Side outputs are fenced per partition: a replayed offset was already published.
                if message.offset <= fence:
                    continue
                side_outputs = True
                if isinstance(result, Invalid):
                    invalid_count += 1
                    metrics.EVENTS.labels(result.error).inc()
                    record = dlq_record(
                        result,
                        source_topic=message.topic,
                        source_partition=partition,
                        source_offset=message.offset,
                        key=message.key,
                        payload=payload,
                        received_at_us=received,
                    )
                    sends.append((dlq_topic, message.key, record, None))
                else:
                    # Keyed by something other than device_id, so on a partition that does not own
                    # the device's state: re-publish it keyed right; the copy is processed there
                    # (and a second copy is a duplicate by event_id).
                    rekeyed_count += 1
                    sends.append((events_topic, result.device_id.encode(), payload, None))
                continue
            ingest_us = int(message.timestamp * 1_000_000) if message.timestamp else received
            per_device[result.device_id].append((result, Source(partition, message.offset, ingest_us)))
            last_event_of_device[result.device_id] = event
        if side_outputs:
            fence_writes.append((events[-1], str(events[-1].message.offset).encode()))

        partition_output = BatchOutput()
        for device_id, device_events in per_device.items():
            anchor = last_event_of_device[device_id]
            key = device_id.encode()
            with as_current_event(anchor):
                state = DeviceState.from_bytes(device_state_table.get(key))
            before = state.offset
            try:
                apply_events(state, device_events, settings.window_grace_s, partition_output)
            except Exception:  # pragma: no cover - a bug, not data: keep the partition moving
                log.exception("applying events of device %s failed; state left unchanged", device_id)
                continue
            if state.offset != before:
                state_writes.append((anchor, key, state.to_bytes()))
        total.merge(partition_output)
        for chunk in partition_output.changes_messages():
            sends.append((changes_topic, None, chunk, partition))
        for message in partition_output.alert_messages:
            sends.append((alerts_topic, message["device_id"].encode(), orjson.dumps(message), None))

    await _publish(sends)

    for anchor, key, value in state_writes:
        with as_current_event(anchor):
            device_state_table[key] = value
    for anchor, value in fence_writes:
        with as_current_event(anchor):
            partition_fence_table[b"fence"] = value

    metrics.EVENTS.labels("accepted").inc(total.accepted)
    metrics.EVENTS.labels("duplicate").inc(total.duplicates)
    metrics.EVENTS.labels("late").inc(total.late)
    metrics.EVENTS.labels("replayed").inc(total.replayed)
    metrics.EVENTS.labels("rekeyed").inc(rekeyed_count)
    metrics.ALERTS.labels("open").inc(total.alerts_opened)
    metrics.ALERTS.labels("resolved").inc(total.alerts_resolved)


async def _publish(sends: list[tuple[faust.types.TopicT, bytes | None, bytes, int | None]]) -> None:
    """Send and wait for every acknowledgement; retry until Kafka has them all.

    Raising here would lose the batch (`take_events` acks in `finally`), so a broker outage is waited out.
    """
    delay = 0.5
    while True:
        try:
            futures = [
                await topic.send(key=key, value=value, partition=partition)
                for topic, key, value, partition in sends
            ]
            await asyncio.gather(*futures)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            metrics.PUBLISH_RETRIES.inc()
            log.warning("publishing %d messages failed (%s); retrying in %.1fs", len(sends), e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


@app.timer(interval=5.0)
async def report_consumer_lag() -> None:
    """Lag of the events topic per assigned partition: end offset minus the committed offset."""
    consumer = app.consumer
    for tp in consumer.assignment():
        if tp.topic != settings.topic_events:
            continue
        end = consumer.highwater(tp)
        # Faust keeps its committed offsets privately; there is no public accessor.
        committed = consumer._committed_offset.get(tp)
        if end is not None:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - (committed or 0)))
