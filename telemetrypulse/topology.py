"""Topics and tables of the stream worker, and their creation.

Names derive from settings: public topics from TOPIC_*, internal ones from APP_ID, so two
deployments can share a cluster.
"""

from __future__ import annotations

from telemetrypulse.app import app, settings
from telemetrypulse.recovery import FencedTable
from telemetrypulse.state_records import record_fence

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}

events_topic = app.topic(settings.topic_events, partitions=settings.topic_partitions, **RAW)
alerts_topic = app.topic(settings.topic_alerts, partitions=settings.topic_partitions, **RAW)
dlq_topic = app.topic(settings.topic_dlq, partitions=settings.topic_partitions, **RAW)
# Per batch and source partition, everything the PostgreSQL sink writes (changes.ChangesRecord).
changes_topic = app.topic(
    settings.names.changes_topic, partitions=settings.topic_partitions, internal=True, **RAW
)

# The state of each events partition: one record per device and one for the partition (state.PartitionState),
# written as snapshots. Values are our own binary records; a restore keeps per key the record with the highest fence
# (recovery.FencedTable). RocksDB sizes per partition database (Faust opens one per table partition, standbys
# included): Faust's defaults — three 64 MiB memtables and a 2 GiB block cache each — let a worker with 6 partitions
# grow past 1.4 GiB (bench soak); these bound it to tens of MiB a database.
PARTITION_STATE_ROCKSDB = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 0,
}
partition_state_table = app.tables.add(
    FencedTable(
        app,
        name=settings.names.partition_state_table,
        partitions=settings.topic_partitions,
        default=None,
        fence=record_fence,
        # `dict(…)`: Faust pops keys from the mapping it is given.
        options=dict(PARTITION_STATE_ROCKSDB),
        key_type=bytes,
        value_type=bytes,
        beacon=app.tables.beacon,
    )
)
# Subscribing the events topic: the consumer hands its partitions to agents.process by batch, not to a stream.
app.topics.add(events_topic)


async def ensure_pipeline_topics(settings_=settings) -> None:
    from telemetrypulse.kafka_admin import ensure_topics

    await ensure_topics(
        settings_,
        [settings_.topic_events, settings_.topic_alerts, settings_.topic_dlq, settings_.names.changes_topic],
        settings_.topic_partitions,
    )


async def ensure_changelog_topics(settings_=settings, timeout_s: float = 30.0) -> None:
    """Declare the tables' changelog topics (Faust's own declaration: compacted) and wait until every partition
    has a leader, before any consumer or producer of this worker caches their metadata.

    Two workers starting at once both declare them; the one that lost the race cached the topic with 0
    partitions, and every write to its table then raised PartitionsMismatch — the agent crashed and restarted
    in a loop, each crash acking (losing) its batch (found by tests/faults F3/scale-out, two workers started
    together on a fresh deployment).
    """
    from aiokafka.admin import AIOKafkaAdminClient

    from telemetrypulse.kafka_admin import wait_until_visible
    from telemetrypulse.settings import aiokafka_options

    tables = [partition_state_table]
    for table in tables:
        await table.changelog_topic.maybe_declare()
    admin = AIOKafkaAdminClient(**aiokafka_options(settings_), client_id=settings_.names.client_id("admin"))
    await admin.start()
    try:
        await wait_until_visible(admin, [table.changelog_topic_name for table in tables], timeout_s)
    finally:
        await admin.close()
