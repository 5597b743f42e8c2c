"""The worker overrides private code of faust-streaming and relies on private behaviour of aiokafka
(telemetrypulse/transport.py, recovery.py, agents/process.py, app.py). The versions are pinned in pyproject.toml;
this test fails loudly when the code we replaced or rely on is not the code we read, so that an upgrade re-reads it
instead of silently losing events."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import version

import pytest

PINNED_VERSIONS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

# What each override replaces or relies on, and the sha256 (first 16 hex digits) of its source as read.
READ_SOURCES = {
    # transport.PipelineConsumer._drain_messages is this loop with the batch topics handed over by slice.
    "faust.transport.consumer:Consumer._drain_messages": "44a2500309e83c63",
    # ... and its flow-stopped / generation / paused-partition handling mirrors getmany's.
    "faust.transport.consumer:Consumer.getmany": "4b168d84882a70d6",
    "faust.transport.consumer:Consumer._wait_next_records": "6218e1969a636b3f",
    # Commit bookkeeping: PipelineConsumer answers _new_offset and _filter_tps_with_pending_acks for batch topics.
    "faust.transport.consumer:Consumer._new_offset": "1d2c7ea89a7ad4f1",
    "faust.transport.consumer:Consumer._filter_tps_with_pending_acks": "f6f9239774234e7e",
    "faust.transport.consumer:Consumer._filter_committable_offsets": "dc5e9baf5d994485",
    "faust.transport.consumer:Consumer._should_commit": "5ce941793947ad42",
    # perform_seek calls seek_to_committed (ours) and records the committed offsets the processor reads.
    "faust.transport.consumer:Consumer.perform_seek": "0e8c130ff4b0afd8",
    "faust.transport.consumer:Consumer.on_partitions_revoked": "d04b7ae72c6fc206",
    "faust.transport.consumer:Consumer.on_partitions_assigned": "29ce96596f05a18c",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._fetch_records": "39a2c6c79fc1455a",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.seek_to_committed": "775ab0adc4b052ab",
    "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread": "0870ec53dea75083",
    # recovery.PipelineTableManager.on_start is this method without its one-second sleep.
    "faust.tables.manager:TableManager.on_start": "365dd25fbc0e0684",
    # recovery.SeekFirstRecovery.on_recovery_completed is this method with the seek before the resume.
    "faust.tables.recovery:Recovery.on_recovery_completed": "6ef567acf072e46d",
    # recovery.FencedTable.write_records sends changelog records straight to the producer and then does what
    # the table's send callback does (remember the persisted offset).
    "faust.tables.base:Collection.send_changelog": "3dd3884e1b5fc0e1",
    "faust.tables.base:Collection._on_changelog_sent": "60122c86a120d82c",
    "faust.transport.drivers.aiokafka:Producer.send": "0b5bd08f52e5e2a9",
    "faust.stores.rocksdb:Store.set_persisted_offset": "b4c811926678346e",
    # transport.PipelineConsumerThread._create_worker_consumer sets the fetch wait and minimum that
    # AIOKafkaConsumer.start() hands to its Fetcher.
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer": "c2701bfc3e6f6cad",
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start": "2f1ba70443327538",
    "faust.stores.rocksdb:Store.apply_changelog_batch": "ea3344d369fc4ab5",
    # app.PipelineApp._stop_consumer snapshots before this runs; agents.process relies on the revoked signal.
    "faust.app.base:App._stop_consumer": "55854a5de12c3f52",
    "faust.app.base:App._on_partitions_revoked": "d5c895bbe57dc73a",
    # Seeks only partitions with a committed offset > 0; an empty partition set means every partition.
    "aiokafka.consumer.consumer:AIOKafkaConsumer.seek_to_committed": "f6cd85c8b70a4ccf",
    "aiokafka.consumer.fetcher:Fetcher.fetched_records": "be4348896b9b66af",
}


@pytest.mark.parametrize("package", sorted(PINNED_VERSIONS))
def test_pinned_version_is_installed(package):
    assert version(package) == PINNED_VERSIONS[package], (
        f"{package} {version(package)} is installed; the worker was written against {PINNED_VERSIONS[package]}"
    )


@pytest.mark.parametrize("name", sorted(READ_SOURCES))
def test_overridden_code_is_what_we_read(name):
    module_name, _, attribute = name.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    digest = hashlib.sha256(inspect.getsource(target).encode()).hexdigest()[:16]
    assert digest == READ_SOURCES[name], (
        f"{name} changed upstream: re-read it against telemetrypulse/transport.py, recovery.py and "
        "agents/process.py before updating the digest"
    )
