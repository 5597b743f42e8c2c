"""Faust's table recovery, corrected where the exactly-once design depends on it (found by tests/faults).

Seek before resume. Faust's `Recovery.on_recovery_completed` resumes the input partitions and *then* seeks them
to the committed offsets, while the flow is already running (it was resumed to read the changelogs). The
fetcher delivers records in between; the seek then moves Faust's read offset back below what was delivered,
and the consumer's gap bookkeeping (`Consumer._add_gap`, meant for compacted topics) re-adds offsets that
were already acked, so `_acked` holds duplicates. From then on the committed offset of that partition moves
one offset per commit interval (or not at all) — V5 fails, and a later restart replays everything since —
and records fetched around the seek can be skipped without being processed until that restart
(faust-streaming/faust#596 describes the same race). Seeking while the partitions are still paused removes
the window: the first record delivered is the one at the committed offset.

Restore keeps the highest fence. A worker frozen past the session timeout (a zombie: GC pause, suspended VM,
SIGSTOP) resumes in the middle of a batch and writes that batch's state record before it learns that its
partitions moved; by then the new owner has written newer records for the same devices. The zombie's record
is last in the changelog, so a plain restore (standby replica, a rejoin, a worker with an empty DATA_DIR)
brings the older state back, and later events are applied to it: windows count low, ids seen are forgotten.
Every record carries its fence (the source offset of the last event applied), and events of one key come from
one partition in order, so a restore keeps per key the record with the highest fence: exactly the state of the
owner that went furthest. Not covered: if log compaction removes the newer record while the zombie's is still
the last one of its key — only when the device sends nothing more from the zombie moment until its changelog
segment is compacted (days, by default).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, EventT
from rocksdict import WriteBatch

log = logging.getLogger(__name__)


class SeekFirstRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """`Recovery.on_recovery_completed` of faust-streaming 0.15, with the seek moved before the resume."""
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}"
            )
            return
        processor = getattr(self.app, "events_processor", None)
        if processor is not None:
            # Each events partition's state from its snapshot; the seek below starts where that snapshot ends.
            await processor.prepare(assignment)
        if assignment:
            self.log.info("Seek stream partitions to their start positions (before resuming them).")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            if processor is not None:
                processor.positioned(dict(consumer._committed_offset))
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        self.app.flow_control.resume()
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class PipelineTableManager(TableManager):
    """Faust's TableManager with `SeekFirstRecovery` (selected by the app's `TableManager` setting), started
    without Faust's one-second pause."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery

    async def on_start(self) -> None:
        # Faust's on_start sleeps one second first, for tables declared while the app starts. Ours are declared at
        # import (topology.py), before the worker starts: the pause only delayed every start and restart by 1 s.
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class FencedTable(faust.Table):
    """A table whose values carry a fence (`fence(value) -> int`, the source offset of the last event applied);
    applying its changelog — restore and standby replicas alike — never replaces a value by one with a lower
    fence."""

    def __init__(self, *args, fence: Callable[[bytes], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fence = fence

    def records(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of one partition as stored locally (after recovery: as the changelog has it)."""
        offset_key = self.data.offset_key
        for key, value in self.data._db_for_partition(partition).items():
            if key != offset_key:
                yield key, value

    async def write_records(self, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        """Store `records` in one partition, locally (one RocksDB write batch) and in the changelog, and return
        once Kafka has them. Faust's own `table[key] = value` takes the partition from the current stream event;
        the batch engine writes outside any event, a whole partition at a time.

        The changelog records go straight to the app's producer rather than through `send_changelog`: Faust's path
        (a buffered send, a future and a callback per record) cost ~150 µs of CPU per record, two CPU seconds per
        snapshot of 12,500 devices. What its callback did — remember in RocksDB the changelog offset the local
        data covers, so that a restart reads the changelog only from there — is done here once per write."""
        if not records:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            batch.put(key, value)
        self.data._db_for_partition(partition).write(batch)
        producer = self.app.producer
        topic = self.changelog_topic.get_topic_name()
        futures = [await producer.send(topic, key, value, partition, None, None) for key, value in records]
        sent = await asyncio.gather(*futures)
        self.data.set_persisted_offset(TP(topic, partition), max(metadata.offset for metadata in sent))

    def _stored(self, partition: int, key: bytes) -> bytes | None:
        store = self.data
        if hasattr(store, "_db_for_partition"):  # RocksDB: one database per partition
            return store._db_for_partition(partition).get(key)
        return store.data.get(key)  # the memory store (tests)

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        kept: list[EventT] = []
        fences: dict[tuple[int, bytes], int] = {}
        highest: dict[TP, int] = {}
        skipped = 0
        for event in batch:
            message = event.message
            tp = message.tp
            highest[tp] = max(highest.get(tp, -1), message.offset)
            if message.value is not None:
                slot = (message.partition, message.key)
                if slot not in fences:
                    stored = self._stored(message.partition, message.key)
                    fences[slot] = -1 if stored is None else self._fence(stored)
                fence = self._fence(message.value)
                if fence < fences[slot]:
                    skipped += 1
                    continue
                fences[slot] = fence
            kept.append(event)
        super().apply_changelog_batch(kept)
        if skipped:
            log.warning(
                "changelog of %s: kept the newer state of %d record(s) written after it with a lower fence "
                "(a zombie worker's late writes)",
                self.name,
                skipped,
            )
            # The skipped records may have been the last of the batch: record the offset read anyway, so the
            # next recovery starts after them.
            if hasattr(self.data, "set_persisted_offset"):
                for tp, offset in highest.items():
                    self.data.set_persisted_offset(tp, offset)
