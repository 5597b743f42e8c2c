"""The process agent: each fetched slice of an events partition is validated, routed and folded into that
partition's state as one batch, and its outputs published.

Per slice, in this order (the exactly-once effect rests on it):
1. decode and validate the whole slice (decode.decode_batch); apply its valid events to the partition's in-memory
   state (state.PartitionState.apply: fences, dedup, lateness, windows, latest values, alert episodes);
2. publish the outputs — dead letters, re-keyed events, alerts, the change records for the PostgreSQL sink — and
   wait until Kafka has them all;
3. only then mark the slice done, so that Faust may commit its offsets.
The state is written to the partition-state table (RocksDB + changelog) as snapshots: every SNAPSHOT_INTERVAL_S, when
the partition is revoked and at shutdown, always between slices, so a snapshot never holds an event whose outputs are
not published.

Rules (SPEC §9). A partition's events are judged by the rule revision its state names; it moves to the newest
revision the rule feed has read (rule_feed.py) only at a snapshot — taken within a second of a new revision — so a
replay after a crash uses the revision the first run used. A partition just taken over moves only once it has read
past the end offset it had at assignment: the previous owner may have published outputs for everything before it,
under the old revision. A partition taken with no stored state records its starting revision at once.

Silent partitions (stale.py). Each second, a live partition that has read everything there is gets its stale sensors
judged by the clock; what that raises is published, then snapshotted. After a crash the partition's state is the last snapshot, and the events since (from snapshot_offset
+ 1) are read again: those the group had committed are only re-applied to the state (their outputs were published
before the commit), the rest are processed as new. Fences in the state skip what a snapshot already holds, and every
output is deterministic (window versions, alert ids), so a repeat is harmless downstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import faust
import numpy as np
import orjson
from faust.types import TP

from telemetrypulse import changes, metrics
from telemetrypulse.app import app, settings
from telemetrypulse.batch_result import BatchResult
from telemetrypulse.decode import DecodedBatch, decode_batch
from telemetrypulse.models import dlq_record, now_us
from telemetrypulse.state import PartitionState
from telemetrypulse.state_records import PARTITION_KEY, stored_rules_revision
from telemetrypulse.topology import (
    alerts_topic,
    changes_topic,
    dlq_topic,
    events_topic,
    partition_state_table,
)

log = logging.getLogger(__name__)

Send = tuple[faust.types.TopicT, bytes | None, bytes, int | None]


def take(batch: DecodedBatch, keep: np.ndarray) -> DecodedBatch:
    """The valid events of `batch` where `keep` (a mask over them) is true; identifiers tables shared."""
    return DecodedBatch(
        valid=batch.valid[keep],
        event_id=batch.event_id[keep],
        device=batch.device[keep],
        devices=batch.devices,
        dim=batch.dim[keep],
        dims=batch.dims,
        sensor=batch.sensor[keep],
        value=batch.value[keep],
        ts_us=batch.ts_us[keep],
        unit_given=batch.unit_given[keep],
        invalid=[],
    )


class EventsProcessor:
    """Owns the in-memory state of the assigned events partitions and handles each fetched slice.

    One lock: a slice is handled, a snapshot taken and a partition loaded or dropped one at a time, so a snapshot
    always sits between slices.
    """

    def __init__(self) -> None:
        self.states: dict[int, PartitionState] = {}
        # Per partition: outputs of offsets at or below it are already published (by us or a previous owner).
        self.published: dict[int, int] = {}
        self.snapshot_due: dict[int, float] = {}
        # Per partition: its end offset when assigned; it adopts a newer rule revision only once read past it.
        self.switch_after: dict[int, int] = {}
        self.lock = asyncio.Lock()
        self.closed = False

    # lifecycle -------------------------------------------------------------------------------------------------
    async def prepare(self, assignment: Sequence[TP]) -> None:
        """After table recovery, before the stream partitions are positioned: load each assigned events
        partition's state from its snapshot, and ask the consumer to start where that snapshot ends."""
        async with self.lock:
            starts: dict[TP, int] = {}
            events_tps = [tp for tp in assignment if tp.topic == settings.topic_events]
            ends = await app.consumer.highwaters(*events_tps) if events_tps else {}
            feed = app.rule_feed
            for index, tp in enumerate(events_tps):
                records = list(partition_state_table.records(tp.partition))
                # A snapshot may name a revision this worker has not read yet (written by one that read further).
                await feed.wait_for(stored_rules_revision(records))
                state = PartitionState(
                    tp.partition,
                    settings.window_grace_s,
                    rules=feed.book.at(),
                    stale_after_s=settings.stale_after_s,
                )
                stored = any(key == PARTITION_KEY for key, _ in records)
                if stored:
                    state.load(records, rules_at=feed.book.at)
                self.states[tp.partition] = state
                self.published[tp.partition] = state.snapshot_offset
                self.switch_after[tp.partition] = ends.get(tp) or 0
                starts[tp] = state.snapshot_offset + 1
                if not stored:
                    await self._snapshot(tp.partition)  # the revision its first events are judged by
                # Staggered: partitions snapshot one after another through the interval, not all at once (a
                # snapshot holds the lock until Kafka has it; 12,500 devices at once stalled processing ~3 s).
                stagger = (index + 1) / len(events_tps)
                self.snapshot_due[tp.partition] = time.monotonic() + settings.snapshot_interval_s * stagger
                metrics.PARTITION_RULES_REVISION.labels(str(tp.partition)).set(state.rules_revision)
                log.info(
                    "partition %d: state of %d devices, snapshot up to offset %d, rule revision %d",
                    tp.partition,
                    state.device_count(),
                    state.snapshot_offset,
                    state.rules_revision,
                )
            app.replay_starts = starts

    def positioned(self, committed: dict[TP, int | None]) -> None:
        """The committed offsets are known: what lies below them was published by whoever committed it."""
        for tp, offset in committed.items():
            if tp.topic == settings.topic_events and tp.partition in self.published and offset:
                self.published[tp.partition] = max(self.published[tp.partition], offset - 1)
        # A snapshot holds only events whose outputs were published, so everything it covers may be committed. Without
        # this, a worker killed after a snapshot but before its first commit left the group's offset behind for good
        # when nothing more arrived in that partition (no slice left to mark done).
        for partition, state in self.states.items():
            tp = TP(settings.topic_events, partition)
            if state.snapshot_offset >= 0 and (committed.get(tp) or 0) < state.snapshot_offset + 1:
                app.consumer.mark_done(tp, state.snapshot_offset + 1)

    async def release(self, partitions: Sequence[int]) -> None:
        """Partitions revoked, or the worker stopping: snapshot what is ours (between slices), then forget it."""
        async with self.lock:
            for partition in partitions:
                if partition in self.states:
                    await self._snapshot(partition)
                    del self.states[partition]
                self.published.pop(partition, None)
                self.snapshot_due.pop(partition, None)
                self.switch_after.pop(partition, None)

    async def close(self) -> None:
        await self.release(list(self.states))
        self.closed = True

    # the slice -------------------------------------------------------------------------------------------------
    async def handle(self, tp: TP, records: list, generation: int) -> None:
        async with self.lock:
            state = self.states.get(tp.partition)
            if self.closed or state is None or generation != app.consumer_generation_id:
                return  # stale: not marked done, read again from the committed offset by the next owner
            started = time.perf_counter()
            if self._rules_behind(tp.partition, state):
                await self._snapshot(tp.partition)  # adopts the newer revision, before this slice
            await self._handle(tp, state, records)
            if generation == app.consumer_generation_id:
                app.consumer.mark_done(tp, records[-1].offset + 1)
            if time.monotonic() >= self.snapshot_due[tp.partition]:
                await self._snapshot(tp.partition)
            metrics.PROCESS_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _handle(self, tp: TP, state: PartitionState, records: list) -> None:
        partition = tp.partition
        published = self.published[partition]
        received = now_us()
        decoded = decode_batch([r.value for r in records], received)
        offsets = np.fromiter((r.offset for r in records), np.int64, len(records))
        ingest_us = np.fromiter(
            (received if r.timestamp is None else r.timestamp * 1000 for r in records), np.int64, len(records)
        )
        sends: list[Send] = []
        for position, invalid in decoded.invalid:
            record = records[position]
            metrics.EVENTS.labels(invalid.error).inc()
            if record.offset > published:
                sends.append(
                    (
                        dlq_topic,
                        record.key,
                        dlq_record(
                            invalid,
                            source_topic=tp.topic,
                            source_partition=partition,
                            source_offset=record.offset,
                            key=record.key,
                            payload=record.value,
                            received_at_us=received,
                        ),
                        None,
                    )
                )
        # A valid event keyed by something other than its device_id sits in a partition that does not own the
        # device's state: re-publish it keyed right; the copy is processed there (a second copy is a duplicate).
        device_keys = [device.encode() for device in decoded.devices]
        keyed = np.fromiter(
            (
                records[p].key == device_keys[d]
                for p, d in zip(decoded.valid.tolist(), decoded.device.tolist(), strict=True)
            ),
            np.bool_,
            len(decoded),
        )
        if not keyed.all():
            for p, d in zip(decoded.valid[~keyed].tolist(), decoded.device[~keyed].tolist(), strict=True):
                metrics.EVENTS.labels("rekeyed").inc()
                if records[p].offset > published:
                    sends.append((events_topic, device_keys[d], records[p].value, None))
            decoded = take(decoded, keyed)
        event_offsets = offsets[decoded.valid]
        event_ingest = ingest_us[decoded.valid]
        last_offset = records[-1].offset
        # Events at or below `published` only rebuild the state (a replay after a restart); the rest emit.
        split = int(np.searchsorted(event_offsets, published, side="right"))
        if split:
            replayed = take(decoded, np.arange(len(decoded)) < split)
            state.apply(
                replayed,
                event_offsets[:split],
                event_ingest[:split],
                last_offset=min(last_offset, published),
                emit=False,
            )
        if split < len(decoded) or last_offset > published:
            fresh = take(decoded, np.arange(len(decoded)) >= split) if split else decoded
            result = state.apply(fresh, event_offsets[split:], event_ingest[split:], last_offset=last_offset)
            self._count(result)
            sends.extend(self._alert_sends(partition, records[0].offset, last_offset, result))
        await publish(sends)
        self.published[partition] = max(published, last_offset)

    @staticmethod
    def _count(result) -> None:
        metrics.EVENTS.labels("accepted").inc(result.accepted)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        metrics.EVENTS.labels("late").inc(result.late)
        metrics.EVENTS.labels("replayed").inc(result.replayed)
        metrics.ALERTS.labels("open").inc(result.alerts_opened)
        metrics.ALERTS.labels("resolved").inc(result.alerts_resolved)

    def _rules_behind(self, partition: int, state: PartitionState) -> bool:
        """A newer rule revision is read, and the partition may adopt it (module docstring)."""
        return (
            app.rule_feed.book.revision > state.rules_revision
            and state.last_offset + 1 >= self.switch_after.get(partition, 0)
        )

    async def snapshot_due_partitions(self) -> None:
        now = time.monotonic()
        due = [
            p
            for p, state in self.states.items()
            if (now >= self.snapshot_due[p] and state.last_offset > state.snapshot_offset)
            or self._rules_behind(p, state)
        ]
        if due:
            async with self.lock:
                for partition in due:
                    if partition in self.states:
                        await self._snapshot(partition)

    async def stale_by_clock(self) -> None:
        """Stale sensors of silent live partitions by the clock (stale.py), for partitions with nothing left to read:
        publish what is raised, then snapshot it."""
        if not settings.stale_after_s:
            return
        async with self.lock:
            now = now_us()
            for partition, state in list(self.states.items()):
                highwater = app.consumer.highwater(TP(settings.topic_events, partition))
                if highwater is None or highwater > state.last_offset + 1:
                    continue  # events are waiting: they move the watermark themselves
                result = state.stale_by_clock(now)
                if not result.alert_messages:
                    continue
                metrics.STALE_BY_CLOCK.inc(result.alerts_opened)
                self._count(result)
                await publish(self._alert_sends(partition, state.last_offset, state.last_offset, result))
                await self._snapshot(partition)

    @staticmethod
    def _alert_sends(partition: int, first_offset: int, last_offset: int, result: BatchResult) -> list[Send]:
        sends: list[Send] = []
        if len(result.raw) or len(result.windows) or len(result.latest) or result.alert_rows:
            for value in changes.encode(
                partition=partition,
                first_offset=first_offset,
                last_offset=last_offset,
                dims=result.dims,
                raw=result.raw,
                windows=result.windows,
                latest=result.latest,
                alerts=result.alert_rows,
            ):
                sends.append((changes_topic, None, value, partition))
        for message in result.alert_messages:
            sends.append((alerts_topic, message["device_id"].encode(), orjson.dumps(message), None))
        return sends

    async def _snapshot(self, partition: int) -> None:
        state = self.states[partition]
        # The only moment a partition's rules change: the snapshot records the revision used from here on.
        switch = self._rules_behind(partition, state)
        records = state.snapshot(next_rules=app.rule_feed.book.at() if switch else None)
        if switch:
            log.info("partition %d: judged by rule revision %d from offset %d on", partition, state.rules_revision,
                     state.last_offset + 1)  # fmt: skip
            metrics.PARTITION_RULES_REVISION.labels(str(partition)).set(state.rules_revision)
        started = time.perf_counter()
        await partition_state_table.write_records(partition, records)
        self.snapshot_due[partition] = time.monotonic() + settings.snapshot_interval_s
        metrics.SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
        metrics.SNAPSHOT_RECORDS.inc(len(records))


async def publish(sends: list[Send]) -> None:
    """Send and wait for every acknowledgement; retry until Kafka has them all.

    Marking the slice done before they are durable would let a commit pass an effect that is not: a broker outage is
    waited out instead (the repeats of a retried send are identical, and idempotent downstream).
    """
    if not sends:
        return
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


processor = EventsProcessor()
app.batch_handlers[settings.topic_events] = processor.handle
app.events_processor = processor


@app.on_partitions_revoked.connect
async def on_revoked(sender, revoked: set[TP], **kwargs) -> None:
    await processor.release([tp.partition for tp in revoked if tp.topic == settings.topic_events])


@app.timer(interval=1.0)
async def snapshot_idle_partitions() -> None:
    """A partition that stops receiving events still gets its snapshot (a restart then replays nothing), and a newer
    rule revision; a silent live one its stale sensors."""
    await processor.snapshot_due_partitions()
    await processor.stale_by_clock()


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
