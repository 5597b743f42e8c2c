"""Topics and tables of the stream worker, and their creation.

Names derive from settings: public topics from TOPIC_*, internal ones from APP_ID, so two
deployments can share a cluster.
"""

from __future__ import annotations

from telemetrypulse.app import app, settings
from telemetrypulse.recovery import FencedTable
from telemetrypulse.state import fence_of

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}

events_topic = app.topic(settings.topic_events, partitions=settings.topic_partitions, **RAW)
alerts_topic = app.topic(settings.topic_alerts, partitions=settings.topic_partitions, **RAW)
dlq_topic = app.topic(settings.topic_dlq, partitions=settings.topic_partitions, **RAW)
# Per batch and source partition, everything the PostgreSQL sink writes (state.BatchOutput).
changes_topic = app.topic(
    f"{settings.app_id}-changes", partitions=settings.topic_partitions, internal=True, **RAW
)

# Tables take their serializers from the app (raw bytes: the records are orjson of our own). Both are
# FencedTables: a restore keeps per key the record with the highest fence (see recovery.py).
TABLE = {"key_type": bytes, "value_type": bytes, "beacon": app.tables.beacon}
# RocksDB sizes per partition database (Faust opens one per table partition, standbys included). Faust's
# defaults — three 64 MiB memtables and a 2 GiB block cache each — let a worker with 6 partitions grow past
# 1.4 GiB while rewriting device records (bench soak); these bound it to tens of MiB a database.
DEVICE_STATE_ROCKSDB = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 0,
}
FENCE_ROCKSDB = {
    "write_buffer_size": 512 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 1024 * 1024,
    "block_cache_compressed_size": 0,
}
# `options=dict(…)`: Faust pops keys from the mapping it is given, so each table gets its own copy.
# One record per device: fence, watermark, dedup ids, open windows, latest values, open alerts.
device_state_table = app.tables.add(
    FencedTable(
        app,
        name="device-state",
        partitions=settings.topic_partitions,
        default=None,
        fence=fence_of,
        options=dict(DEVICE_STATE_ROCKSDB),
        **TABLE,
    )
)
# Per source partition: the last offset whose side outputs (DLQ, re-keying) were published.
partition_fence_table = app.tables.add(
    FencedTable(
        app,
        name="partition-fence",
        partitions=settings.topic_partitions,
        default=None,
        fence=int,
        options=dict(FENCE_ROCKSDB),
        **TABLE,
    )
)


async def ensure_pipeline_topics(settings_=settings) -> None:
    from telemetrypulse.topics import ensure_topics

    await ensure_topics(
        settings_,
        [settings_.topic_events, settings_.topic_alerts, settings_.topic_dlq, f"{settings_.app_id}-changes"],
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

    from telemetrypulse.settings import aiokafka_options
    from telemetrypulse.topics import _wait_visible

    tables = [device_state_table, partition_fence_table]
    for table in tables:
        await table.changelog_topic.maybe_declare()
    admin = AIOKafkaAdminClient(**aiokafka_options(settings_), client_id=f"{settings_.app_id}-admin")
    await admin.start()
    try:
        await _wait_visible(admin, [table.changelog_topic_name for table in tables], timeout_s)
    finally:
        await admin.close()
