"""The product fixes the fault battery (tests/faults) led to, checked without services: a changelog restore
keeps the highest fence per key (F3, a zombie's late write), and a dead letter fits the DLQ topic (F7)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import faust
import numpy as np
import orjson
import pytest
from faust.types import TP

from telemetrypulse.decode import decode_batch
from telemetrypulse.models import DLQ_MAX_PAYLOAD_BYTES, Invalid, dlq_record
from telemetrypulse.names import internal_names
from telemetrypulse.recovery import FencedTable
from telemetrypulse.simulator import generate_events
from telemetrypulse.state import PartitionState
from telemetrypulse.state_records import PARTITION_KEY, record_fence

NAMES = internal_names("unit")
CHANGELOG = NAMES.partition_state_changelog


@dataclass
class FakeMessage:
    partition: int
    offset: int
    key: bytes
    value: bytes | None
    topic: str = CHANGELOG

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class FakeEvent:
    message: FakeMessage


def state(fence: int) -> bytes:
    """A real device record (state.PartitionState's encoding) whose fence is `fence`."""
    (_key, value), *_ = generate_events(1, seed=fence, start="2026-01-01T00:00:00Z")
    partition = PartitionState(1, grace_s=300)
    batch = decode_batch([value], now_us=2_000_000_000_000_000)
    offsets = np.array([fence], np.int64)
    partition.apply(batch, offsets, offsets, last_offset=fence)
    records = dict(partition.snapshot())
    records.pop(PARTITION_KEY)
    (record,) = records.values()
    assert record_fence(record) == fence
    return record


@pytest.fixture
def table(tmp_path):
    app = faust.App(NAMES.app_id, store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    return FencedTable(
        app,
        name=NAMES.partition_state_table,
        default=None,
        fence=record_fence,
        key_type=bytes,
        value_type=bytes,
        partitions=2,
    )


def restore(table: FencedTable, *records: tuple[int, bytes, bytes | None]) -> None:
    table.apply_changelog_batch([FakeEvent(FakeMessage(1, o, k, v)) for o, k, v in records])


def stored_fence(table: FencedTable, key: bytes) -> int | None:
    raw = table.data._db_for_partition(1).get(key)
    return None if raw is None else record_fence(raw)


def test_a_late_record_with_a_lower_fence_does_not_replace_the_newer_state(table):
    restore(table, (0, b"d1", state(10)), (1, b"d1", state(20)), (2, b"d1", state(15)), (3, b"d2", state(7)))
    assert stored_fence(table, b"d1") == 20
    assert stored_fence(table, b"d2") == 7
    # The offset read is recorded even though the batch ended with a skipped record.
    assert table.data.persisted_offset(TP(CHANGELOG, 1)) == 3


def test_the_comparison_spans_batches_and_newer_records_still_win(table):
    restore(table, (0, b"d1", state(20)))
    restore(table, (1, b"d1", state(12)))  # a zombie's write, read in a later batch (or by a standby)
    assert stored_fence(table, b"d1") == 20
    restore(table, (2, b"d1", state(25)))
    assert stored_fence(table, b"d1") == 25


def test_deletes_still_apply(table):
    restore(table, (0, b"d1", state(20)), (1, b"d1", None))
    assert stored_fence(table, b"d1") is None


def test_a_dead_letter_of_a_huge_message_is_cut_to_fit_and_says_so():
    huge = b"{" + b"x" * (2 * 1024 * 1024)
    record = orjson.loads(
        dlq_record(
            Invalid("invalid_json", "not JSON"),
            source_topic="telemetry.events",
            source_partition=2,
            source_offset=0,
            key=b"k" * 5000,
            payload=huge,
            received_at_us=0,
        )
    )
    assert base64.b64decode(record["payload"]) == huge[:DLQ_MAX_PAYLOAD_BYTES]
    assert record["truncated"] is True and record["payload_size"] == len(huge)
    assert len(record["key"]) == 1024
    assert len(orjson.dumps(record)) < 1_000_000  # Kafka's default message limit, with room to spare


def test_a_dead_letter_of_a_normal_message_is_whole():
    record = orjson.loads(
        dlq_record(
            Invalid("invalid_json", "not JSON"),
            source_topic="t",
            source_partition=0,
            source_offset=1,
            key=b"dev",
            payload=b"{oops",
            received_at_us=0,
        )
    )
    assert base64.b64decode(record["payload"]) == b"{oops"
    assert record["truncated"] is False and record["payload_size"] == 5
