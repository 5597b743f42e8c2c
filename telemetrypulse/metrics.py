"""Prometheus metrics of the stream worker (served by Faust's web server at /metrics; the retention job runs there
too) and of the sink process (`telemetrypulse sink`, on SINK_WEB_PORT)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "telemetrypulse_events_total",
    "Input messages by outcome: accepted, duplicate, late, replayed (skipped by a fence), rekeyed, or the DLQ reason",
    ["outcome"],
)
ALERTS = Counter("telemetrypulse_alerts_total", "Alert episodes opened and resolved", ["status"])
PROCESS_BATCH_SECONDS = Histogram("telemetrypulse_process_batch_seconds", "Time to process one input batch")
SNAPSHOT_SECONDS = Histogram(
    "telemetrypulse_snapshot_seconds", "Time to write one partition's state snapshot"
)
SNAPSHOT_RECORDS = Counter("telemetrypulse_snapshot_records_total", "State records written by snapshots")
PUBLISH_RETRIES = Counter(
    "telemetrypulse_publish_retries_total", "Output publishes retried after a Kafka error"
)
SINK_ROWS = Counter("telemetrypulse_sink_rows_total", "Rows sent to PostgreSQL by the sink", ["table"])
SINK_BATCH_SECONDS = Histogram(
    "telemetrypulse_sink_batch_seconds", "Time to write one sink batch to PostgreSQL"
)
SINK_RETRIES = Counter(
    "telemetrypulse_sink_retries_total", "Sink writes (and position reads) retried after a PostgreSQL error"
)
SINK_RECORDS = Counter(
    "telemetrypulse_sink_records_total", "Change records written to PostgreSQL by the sink"
)
SINK_UNDECODABLE = Counter(
    "telemetrypulse_sink_undecodable_records_total",
    "Change records the sink could not decode or check (skipped)",
)
CONSUMER_LAG = Gauge(
    "telemetrypulse_consumer_lag", "Messages between the committed offset and the end", ["topic", "partition"]
)
RULES_REVISION = Gauge(
    "telemetrypulse_rules_revision", "Rule revision the worker has read from the rules topic"
)
RULE_VERSIONS_SKIPPED = Counter(
    "telemetrypulse_rule_versions_skipped_total",
    "Messages of the rules topic that were not valid rule versions",
)
PARTITION_RULES_REVISION = Gauge(
    "telemetrypulse_partition_rules_revision",
    "Rule revision each events partition is judged by",
    ["partition"],
)
STALE_BY_CLOCK = Counter(
    "telemetrypulse_stale_by_clock_total", "Stale episodes raised by the clock for a silent live partition"
)
RETENTION_RUNS = Counter(
    "telemetrypulse_retention_runs_total",
    "Retention runs by outcome: done, failed (retried a minute later), skipped (another worker's run)",
    ["outcome"],
)
RETENTION_PARTITIONS_DROPPED = Counter(
    "telemetrypulse_retention_partitions_dropped_total",
    "Daily partitions of raw readings dropped by retention",
)
RETENTION_ROWS_DELETED = Counter(
    "telemetrypulse_retention_rows_deleted_total", "Window rows deleted by retention", ["table"]
)
