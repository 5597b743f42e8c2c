"""The rules topic as the worker follows it: every rule version, in topic order, into a `rules.RuleBook`.

`<APP_ID>-rules` (settings.topic_rules) has one partition — one order of versions that every worker shares, so
revision n means the same rule set everywhere — and is compacted with one key per version: compaction never removes
a version, and no time-based retention applies (a deleting topic would lose the rules after `retention.ms`). The API
produces to it (`PUT`/`DELETE /rules…`); PostgreSQL keeps a readable copy for `GET /rules`, but the worker never
asks the database: a database outage does not stop alerting, and a worker restarted during one knows every rule.

At start the feed reads the topic from the beginning up to its end offset *before* the worker processes any event
(`start`); then it keeps following it (`getmany` long-polls, so a new version is in the book within about a second).
A partition's state switches to a newer revision at its next snapshot (agents/process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from telemetrypulse import metrics
from telemetrypulse.kafka_admin import ensure_topics
from telemetrypulse.rules import RuleBook, RuleError, decode_version
from telemetrypulse.settings import Settings, aiokafka_options

log = logging.getLogger(__name__)

# Compacted, never deleted by age; one key per version, so compaction keeps them all.
RULES_TOPIC_CONFIG = {"cleanup.policy": "compact"}


async def ensure_rules_topic(settings: Settings) -> None:
    await ensure_topics(settings, [settings.topic_rules], 1, configs=RULES_TOPIC_CONFIG)


def rules_consumer(settings: Settings, client_id: str) -> AIOKafkaConsumer:
    """A reader of the whole rules topic: no group (every reader reads every version), nothing committed."""
    return AIOKafkaConsumer(
        **aiokafka_options(settings),
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


class RuleFeed:
    """Follows the rules topic into `book` (partitions poll `book.revision` between slices and every second)."""

    def __init__(self, settings: Settings, book: RuleBook | None = None) -> None:
        self.settings = settings
        self.book = book or RuleBook()
        self._tp = TopicPartition(settings.topic_rules, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        """Create the topic if missing, read it to its current end, then follow it in the background."""
        await ensure_rules_topic(self.settings)
        consumer = rules_consumer(self.settings, self.settings.names.client_id("rules"))
        await consumer.start()
        self._consumer = consumer
        consumer.assign([self._tp])
        await consumer.seek_to_beginning(self._tp)
        end = (await consumer.end_offsets([self._tp]))[self._tp]
        while await consumer.position(self._tp) < end:
            await self._read(timeout_ms=1000)
        log.info("rules: %d messages read, revision %d", end, self.book.revision)
        metrics.RULES_REVISION.set(self.book.revision)
        self._task = asyncio.create_task(self._follow(), name="rule-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 10)
            self._consumer = None

    async def wait_for(self, revision: int) -> None:
        """Until the book has read `revision` (a snapshot written by a worker that read further than this one)."""
        if self.book.revision >= revision:
            return
        log.info("rules: waiting for revision %d (at %d)", revision, self.book.revision)
        async with self._changed:
            await self._changed.wait_for(lambda: self.book.revision >= revision)

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._read(timeout_ms=1000)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as e:
                log.warning("rules: reading %s failed (%s); retrying in %.1fs", self._tp.topic, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _read(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(self._tp, timeout_ms=timeout_ms)
        added = False
        for record in batches.get(self._tp, ()):
            try:
                version = decode_version(record.value)
            except RuleError as e:
                # Not from the API (it validates first): skipped, and still a revision, so every worker agrees.
                log.warning("rules: offset %d skipped, not a valid rule version: %s", record.offset, e)
                metrics.RULE_VERSIONS_SKIPPED.inc()
                version = None
            if self.book.add(record.offset, version) and version is not None:
                log.info(
                    "rules: revision %d: %s %s (enabled %s, effective from %s)",
                    self.book.revision,
                    version.rule_id,
                    version.version_id,
                    version.enabled,
                    version.effective_from,
                )
            added = True
        if added:
            metrics.RULES_REVISION.set(self.book.revision)
            async with self._changed:
                self._changed.notify_all()
