"""How a partition's stream state is stored: the record formats of the worker's partition-state table.

One msgpack array per device (key: the device_id, `DeviceRecord`) and one per partition (key: `PARTITION_KEY`,
`PartitionRecord`), with the numpy row formats of the open windows and latest values a device record packs. Both
records start with (format, fence), so the table's restore (recovery.py) and its changelog topic (topology.py) can
tell which of two versions of a key is the newer without decoding the rest. The bytes are the on-disk format:
changing a field here changes what a restart can read (bump RECORD_FORMAT and keep loading the older ones).
state_snapshot.py turns a PartitionState into these records and back.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import numpy as np

PARTITION_KEY = b"\x00partition"  # a device_id never starts with a NUL byte (SPEC §3: [A-Za-z0-9._-])
# 2: run-time rules — episodes of both directions, pending ones and stale ones; the place of each latest value, the
# stale episodes raised; per partition its newest record time and rule revision. Format 1 records load as before.
RECORD_FORMAT = 2

# One open window in a device record. first/last are µs after window start (< 900 s, so 32 bits).
RECORD_WINDOW = np.dtype(
    [
        ("sensor", "u1"),
        ("size_s", "<u2"),
        ("start_us", "<i8"),
        ("count", "<u4"),
        ("sum", "<f8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("sum_sq", "<f8"),
        ("first_after_us", "<u4"),
        ("last_after_us", "<u4"),
        ("version", "<i8"),
    ]
)
# The latest accepted reading of one sensor in a device record. site/zone are not kept: a row is only emitted when
# an event of the batch sets it, and then the row takes that event's.
RECORD_LATEST = np.dtype(
    [("sensor", "u1"), ("value", "<f8"), ("ts_us", "<i8"), ("event_id", "V16"), ("version", "<i8")]
)


class DeviceRecord(msgspec.Struct, array_like=True):
    """A device's whole state as stored. Ids are ascending by their bytes; `id_age` holds watermark − ts_event per
    id (µs, <u4 when the grace fits in 32 bits, else <u8; the width is len(id_age) / count)."""

    format: int
    fence: int
    watermark: int | None
    ids: bytes  # accepted event ids not yet forgotten, 16 bytes each
    id_age: bytes
    windows: bytes  # RECORD_WINDOW rows: the windows not yet final
    latest: bytes  # RECORD_LATEST rows
    episodes: list[dict]  # alert episodes (open, pending, stale), as alerts.py keeps them
    # Trailing fields (format 2), absent from format 1 records. (site_id, zone_id) of each latest row, in order.
    latest_places: list[tuple[str, str]] = []
    stale_raised: int = 0  # bit s: a stale episode was raised for sensor s's current latest reading

    def id_list(self) -> list[bytes]:
        return [self.ids[i : i + 16] for i in range(0, len(self.ids), 16)]

    def id_ts(self) -> np.ndarray:
        count = len(self.ids) // 16
        if count == 0:
            return np.empty(0, np.int64)
        width = len(self.id_age) // count
        ages = np.frombuffer(self.id_age, "<u4" if width == 4 else "<u8").astype(np.int64)
        return self.watermark - ages

    def window_rows(self) -> np.ndarray:
        return np.frombuffer(self.windows, RECORD_WINDOW)

    def latest_rows(self) -> np.ndarray:
        return np.frombuffer(self.latest, RECORD_LATEST)


class PartitionRecord(msgspec.Struct, array_like=True):
    """The partition's own record, stored after its device records: a snapshot is complete up to
    `snapshot_offset` only once this is written."""

    format: int
    snapshot_offset: int
    record_max: int | None = None  # the newest Kafka record time of an accepted event (stale.py)
    rules_revision: int = 0  # the rules the events after snapshot_offset are judged by (0: the defaults)


class _Fenced(msgspec.Struct, array_like=True):
    """The first two fields of either record: what a changelog restore needs to keep the newest (recovery.py)."""

    format: int
    fence: int


_encoder = msgspec.msgpack.Encoder()
_device_decoder = msgspec.msgpack.Decoder(DeviceRecord)
_partition_decoder = msgspec.msgpack.Decoder(PartitionRecord)
_fenced_decoder = msgspec.msgpack.Decoder(_Fenced)


def encode_record(record: DeviceRecord | PartitionRecord) -> bytes:
    return _encoder.encode(record)


def decode_device_record(value: bytes) -> DeviceRecord:
    return _device_decoder.decode(value)


def decode_partition_record(value: bytes) -> PartitionRecord:
    return _partition_decoder.decode(value)


def record_fence(value: bytes) -> int:
    """The fence of a stored device record, or the snapshot offset of a partition record: of two versions of one
    key, the one with the higher value is the newer."""
    return _fenced_decoder.decode(value).fence


def stored_rules_revision(records: Iterable[tuple[bytes, bytes]]) -> int:
    """The rule revision a stored partition state is judged by (0 without a partition record)."""
    for key, value in records:
        if key == PARTITION_KEY:
            return _partition_decoder.decode(value).rules_revision
    return 0
