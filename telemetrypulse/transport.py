"""The Kafka transport of the worker: Faust's aiokafka driver, corrected where exactness depends on it.

Where a partition starts. aiokafka's `seek_to_committed` only seeks partitions that have a committed offset
(`if offset and offset > 0`); a partition without one keeps whatever position the fetcher reached. Faust's
`getmany` drops records of partitions that are not active at that moment (paused for recovery) *after*
aiokafka has advanced past them, counting on the seek to the committed offsets that ends every recovery to
bring them back. For a partition with no committed offset nothing brought them back: they were skipped for
good (issue 10: a worker restarted while the sink had not yet committed the changes topic lost every row the
previous worker had published there). Here every stream partition without a committed offset is sought to its
beginning (what `consumer_auto_offset_reset="earliest"` promises), and each start position is logged.

Never fetch with an empty set. Faust hands aiokafka the *live* set of active partitions; aiokafka's
`fetched_records` reads an empty set as "every partition", and it re-reads the set each time it wakes while
waiting. A fetch still waiting when recovery pauses the last active partition therefore drained every buffered
record of every partition — the records Faust then dropped. The fetch now works on a snapshot and returns
nothing when it is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)


class PipelineConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
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
        return await self.call_thread(self._seek_to_committed_or_beginning)

    async def _seek_to_committed_or_beginning(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        # Changelog partitions are positioned by the recovery itself (and are never committed).
        unset = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if unset:
            await consumer.seek_to_beginning(*unset)
        starts = await consumer.beginning_offsets(unset) if unset else {}
        lines = []
        for tp in sorted(committed, key=lambda tp: (tp.topic, tp.partition)):
            if tp.topic in changelogs:
                continue
            offset = committed[tp]
            lines.append(
                f"{tp.topic}[{tp.partition}] at committed offset {offset}"
                if offset
                else f"{tp.topic}[{tp.partition}] no committed offset: from the beginning ({starts.get(tp, 0)})"
            )
        if lines:
            log.info("start positions: %s", "; ".join(lines))
        return committed


class PipelineConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> PipelineConsumerThread:
        return PipelineConsumerThread(self, loop=self.loop, beacon=self.beacon)


class PipelineTransport(faust_aiokafka.Transport):
    Consumer = PipelineConsumer
