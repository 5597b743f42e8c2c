"""The API's side of the alert rules (SPEC §9): writing a rule version, and PostgreSQL's readable history of them.

A new version goes to the rules topic first (rule_feed.py: what every worker follows; its offset + 1 is the version's
revision), then into `alert_rule_versions` (what `GET /rules…` reads). A background copy reads the topic from the
beginning when the API starts and keeps following it, inserting whatever the table lacks (ON CONFLICT DO NOTHING):
a version whose insert failed after Kafka had it, or one another process wrote, shows up in the history too — the
table converges to the topic, which is the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from telemetrypulse.api.data_access import Reader, Writer
from telemetrypulse.api.errors import DATABASE_DOWN, KafkaUnavailable, ServiceUnavailable
from telemetrypulse.api.kafka import EventPublisher
from telemetrypulse.models import from_us
from telemetrypulse.rule_feed import ensure_rules_topic, rules_consumer
from telemetrypulse.rules import RuleError, RuleVersion, decode_version, encode_version, parse_effective_from
from telemetrypulse.settings import Settings

log = logging.getLogger(__name__)

VERSION_FIELDS = (
    "version_id", "revision", "rule_id", "sensor_type", "direction", "open_at", "resolve_at", "site_id", "zone_id",
    "device_id", "for_s", "severity", "enabled", "effective_from", "created_at", "created_by",
)  # fmt: skip
INSERT_VERSIONS = f"""
INSERT INTO alert_rule_versions ({", ".join(VERSION_FIELDS)})
SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[],
                     $8::text[], $9::text[], $10::text[], $11::float8[], $12::text[], $13::bool[],
                     $14::timestamptz[], $15::timestamptz[], $16::text[])
ON CONFLICT (version_id) DO NOTHING
"""
# Every version of the rules asked for, with its number within its rule (1 = the first), oldest first.
SELECT_VERSIONS = f"""
SELECT {", ".join(VERSION_FIELDS)},
       row_number() OVER (PARTITION BY rule_id ORDER BY revision, version_id) AS version
FROM alert_rule_versions
"""


def _row(revision: int, version: RuleVersion) -> tuple:
    created = version.created_at or version.effective_from
    return (
        version.version_id, revision, version.rule_id, version.sensor_type, version.direction,
        float(version.open_at), float(version.resolve_at), version.site_id, version.zone_id, version.device_id,
        float(version.for_s), version.severity, version.enabled,
        from_us(parse_effective_from(version.effective_from)), datetime.fromisoformat(created), version.created_by,
    )  # fmt: skip


class RuleHistory:
    def __init__(
        self,
        settings: Settings,
        reader: Reader,
        writer: Writer,
        publisher: EventPublisher,
        retry_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.publisher = publisher
        self.topic = settings.topic_rules
        self.retry_s = retry_s
        self._topic_ready = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._copy_loop(), name="rule-history-copy")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- reading ---------------------------------------------------------------------------------------------

    async def versions(self, rule_id: str | None = None) -> list[dict]:
        """Every version (of one rule, or of all), by rule and then oldest first."""
        if rule_id is None:
            rows = await self.reader.fetch(f"{SELECT_VERSIONS} ORDER BY rule_id, revision, version_id")
        else:
            rows = await self.reader.fetch(
                f"{SELECT_VERSIONS} WHERE rule_id = $1 ORDER BY revision, version_id", rule_id
            )
        return [dict(r) for r in rows]

    # -- writing ---------------------------------------------------------------------------------------------

    async def write(self, version: RuleVersion) -> int:
        """The version into the rules topic (then it applies), then into the history; its revision."""
        if not self._topic_ready:
            try:
                await ensure_rules_topic(self.settings)
            except (KafkaError, OSError, TimeoutError) as e:
                raise KafkaUnavailable(f"cannot reach the rules topic: {type(e).__name__}: {e}") from e
            self._topic_ready = True
        (offset,) = await self.publisher.publish_to(self.topic, [(version.key(), encode_version(version))])
        revision = offset + 1
        try:
            await self.store([(revision, version)])
        except ServiceUnavailable as e:
            raise ServiceUnavailable(
                f"rule version {version.version_id} is written (revision {revision}) and applies, but PostgreSQL's "
                f"history does not show it yet ({e}); it will once PostgreSQL is back"
            ) from e
        return revision

    async def store(self, items: list[tuple[int, RuleVersion]]) -> None:
        if not items:
            return
        rows = [_row(revision, version) for revision, version in items]
        await self.writer.fetch(INSERT_VERSIONS, *(list(column) for column in zip(*rows, strict=True)))

    # -- the copy from the topic -----------------------------------------------------------------------------

    async def _copy_loop(self) -> None:
        """Read the topic from its beginning, storing every version (already stored ones change nothing); follow.
        Hundreds of versions a year at most: reading them all at each start is cheap, and it repairs any gap."""
        while True:
            consumer: AIOKafkaConsumer | None = None
            try:
                consumer = rules_consumer(self.settings, self.settings.names.client_id("api-rules"))
                await consumer.start()
                # The first worker or the first PUT creates the topic; a reading API waits for it.
                while self.topic not in await consumer.topics():
                    await asyncio.sleep(self.retry_s)
                tp = TopicPartition(self.topic, 0)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                while True:
                    batch = (await consumer.getmany(tp, timeout_ms=5000)).get(tp, [])
                    items = []
                    for record in batch:
                        try:
                            items.append((record.offset + 1, decode_version(record.value)))
                        except RuleError as e:
                            log.warning("rules topic offset %d is not a rule version: %s", record.offset, e)
                    await self._store_until_done(items)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as e:
                log.warning(
                    "rule history: reading %s failed (%s); retrying in %.0fs", self.topic, e, self.retry_s
                )
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(consumer.stop(), 10)
            await asyncio.sleep(self.retry_s)

    async def _store_until_done(self, items: list[tuple[int, RuleVersion]]) -> None:
        while True:
            try:
                await self.store(items)
                return
            except (ServiceUnavailable, *DATABASE_DOWN) as e:
                log.warning("rule history: PostgreSQL unavailable (%s); retrying in %.0fs", e, self.retry_s)
                await asyncio.sleep(self.retry_s)
