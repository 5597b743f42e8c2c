"""The Kafka transport of the worker: Faust's aiokafka driver, with whole-batch delivery of the events topic and
two corrections exactness depends on.

Whole batches. Faust hands every fetched message through its conductor, a stream buffer and a per-message ack
(~65 µs of CPU per event before any work of ours). For the topics the app names in `App.batch_handlers` (the events
topic) this consumer passes each fetched slice of a partition, as aiokafka's records, to the handler in one call,
inline in the fetch loop, and tracks one commit offset per partition instead of per-message acks (`mark_done`);
the handler returns only when the slice's outputs are durable, so a commit never passes an effect that is not.
Changelog and every other topic keep Faust's own path: table recovery, standbys and rebalancing stay Faust's.
This overrides private methods of faust-streaming (`_drain_messages`, `_new_offset`,
`_filter_tps_with_pending_acks`, `_create_worker_consumer`); the version is pinned in pyproject.toml and tests/unit/test_faust_pins.py fails
when the code we replaced changes upstream.

Where a partition starts. aiokafka's `seek_to_committed` only seeks partitions that have a committed offset
(`if offset and offset > 0`); a partition without one keeps whatever position the fetcher reached. Faust's fetch loop
drops records of partitions that are not active at that moment (paused for recovery) *after* aiokafka has advanced
past them, counting on the seek to the committed offsets that ends every recovery to bring them back. For a
partition with no committed offset nothing brought them back: they were skipped for good (issue 10). Here every
stream partition without a committed offset is sought to its beginning (what `consumer_auto_offset_reset="earliest"`
promises), a batch partition to where its state must be replayed from if that is earlier (`App.replay_starts`), and
each start position is logged.

Never fetch with an empty set. Faust hands aiokafka the *live* set of active partitions; aiokafka's
`fetched_records` reads an empty set as "every partition", and it re-reads the set each time it wakes while
waiting. A fetch still waiting when recovery pauses the last active partition therefore drained every buffered
record of every partition — the records Faust then dropped. The fetch works on a snapshot and returns nothing when it
is empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping, Set
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)


# How long the broker may hold a fetch that has nothing new. Faust hard-codes 1,500 ms, and aiokafka keeps one fetch
# in flight per broker: a fetch sent while the events partitions still had records buffered names only partitions
# with no traffic (changelogs), and the broker parks it for the whole wait while events pile up behind it. At
# 5,000 events/s every other fetch waited ~1.3 s that way (a p99 produce→PostgreSQL of 3.8 s). An idle worker
# asks again four times a second instead — an empty fetch is a few hundred bytes. The broker answers early once it
# has FETCH_MIN_BYTES (~4,000 events, a burst): under live load a slice holds up to 250 ms of events rather than the
# few that arrived since the last fetch, because each slice has a fixed cost (Kafka round trips, numpy calls, a
# change record, ~3 ms): at 100 ms the keep-up phase's worker took 23 s of CPU instead of 16 s, for a produce→alert
# p50 of 184 ms instead of ~250 ms and no better p99.
FETCH_MAX_WAIT_MS = 250
FETCH_MIN_BYTES = 1024 * 1024


class PipelineConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        # Both read by AIOKafkaConsumer.start() for its Fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer

    async def _fetch_records(
        self,
        consumer,
        active_partitions: Set[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ):
        if active_partitions is not None:
            active_partitions = frozenset(active_partitions)
            if not active_partitions:
                return {}
        return await super()._fetch_records(consumer, active_partitions, timeout, max_records)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_start_positions)

    async def _seek_to_start_positions(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        replay_starts: Mapping[TP, int] = getattr(self.app, "replay_starts", {})
        # Changelog partitions are positioned by the recovery itself (and are never committed).
        streams = sorted(
            (tp for tp in committed if tp.topic not in changelogs), key=lambda tp: (tp.topic, tp.partition)
        )
        unset = [tp for tp in streams if not committed[tp]]
        beginnings = await consumer.beginning_offsets(unset) if unset else {}
        lines = []
        for tp in streams:
            offset = committed[tp]
            replay = replay_starts.get(TP(tp.topic, tp.partition))
            if replay is not None and (not offset or replay < offset):
                consumer.seek(tp, replay)
                lines.append(f"{tp.topic}[{tp.partition}] at {replay} to replay state (committed {offset})")
            elif not offset:
                # To the log start read above: aiokafka's seek_to_beginning waits for its fetcher to reset (seconds).
                consumer.seek(tp, beginnings.get(tp, 0))
                lines.append(
                    f"{tp.topic}[{tp.partition}] no committed offset: from the beginning ({beginnings.get(tp, 0)})"
                )
            else:
                lines.append(f"{tp.topic}[{tp.partition}] at committed offset {offset}")
        if lines:
            log.info("start positions: %s", "; ".join(lines))
        return committed


class PipelineConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per batch-delivered partition, the next offset to commit: every offset below it has its effects durable.
        self._batch_commit: dict[TP, int] = {}

    def _new_consumer_thread(self) -> PipelineConsumerThread:
        return PipelineConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def batch_handlers(self) -> Mapping[str, Any]:
        return getattr(self.app, "batch_handlers", {})

    def mark_done(self, tp: TP, next_offset: int) -> None:
        """Every offset of `tp` below `next_offset` is handled and its effects durable: it may be committed."""
        if next_offset > self._batch_commit.get(tp, -1):
            self._batch_commit[tp] = next_offset

    def _filter_tps_with_pending_acks(self, topics: Iterable | None = None) -> Iterator[TP]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp in list(self._batch_commit):
            if topics is None or tp in topics or tp.topic in topics:
                yield tp

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.batch_handlers:
            return self._batch_commit.get(tp)
        return super()._new_offset(tp)

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        for tp in revoked:
            self._batch_commit.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Set[TP], generation_id: int = 0) -> None:
        # A slice finished during the rebalance may have marked a partition that is not ours any more.
        self._batch_commit = {tp: offset for tp, offset in self._batch_commit.items() if tp in assigned}
        await super().on_partitions_assigned(assigned, generation_id)

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - exercised by every worker test
        """Faust's fetch loop (faust-streaming 0.15.3 `Consumer._drain_messages`), with the batch topics' records
        handed to their handler one fetched partition slice at a time."""
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        acks_enabled_for = self.app.topics.acks_enabled_for
        handlers = self.batch_handlers
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(faust_consumer.CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    # As Faust's getmany: records fetched while the flow is stopped are dropped, and the positions
                    # go back (the start positions above) so that they are fetched again.
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        self.log.warning(f"exception performing seek when flow not active {exc}")
                    continue
                generation = self.app.consumer_generation_id
                for tp, batch in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue  # paused meanwhile: sought back at the end of the recovery
                    if not batch:
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    handler = handlers.get(tp.topic)
                    if handler is not None:
                        await handler(tp, batch, generation)
                        continue
                    for record in batch:
                        message = self._to_message(tp, record)
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                unset_flag(faust_consumer.CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(faust_consumer.CONSUMER_FETCHING)


class PipelineTransport(faust_aiokafka.Transport):
    Consumer = PipelineConsumer
