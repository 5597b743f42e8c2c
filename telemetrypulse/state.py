"""The stream state of one source partition, and how one decoded batch of its events changes it (SPEC §3–§5).

`PartitionState` keeps, in memory and as numpy columns, everything the devices of one partition carry from batch to
batch: per device the fence (source offset of the last event applied) and the watermark; the accepted event ids
still inside the grace horizon; the open windows; the latest value per sensor; the alert episodes (threshold
episodes per direction, open or pending, and stale ones). Per partition: its watermark and newest record time
(stale.py), and the rule revision its events are judged by. `apply` runs a whole batch at once; `snapshot` gives
the records to store (one per device changed since the last snapshot, then one for the partition) and `load`
rebuilds the state from such records.

Exactness rests on three invariants:
- Per device, events are judged in source-offset order against the state left by the events before them, so the
  result does not depend on where the stream is cut into batches. The checks are vectorized where no event of a
  device can affect the verdict on another (the common case), and walked event by event for a device that has a
  possible duplicate in the batch (rare).
- Float sums are folded one value at a time in offset order, like the model: float addition is not associative, and
  a different grouping would make a window's sum depend on the batch cuts (and differ after a replay).
- What a snapshot stores is a function of the events applied, not of how or when they were applied: forgotten ids
  and final windows, which may linger in memory until the next compaction, are never written.
- The rules in force change only at a snapshot (`snapshot(next_rules=…)`), and the snapshot records their revision:
  a restart replays the events after a snapshot with the rules the first run used for them, so a rule change can
  never make a replay disagree with what was published.

Pure logic: numpy, msgspec and the project's pure modules; no Faust, Kafka or database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from telemetrypulse import alerts, stale
from telemetrypulse.alerts import ABOVE, BELOW, KINDS, STALE, Reading
from telemetrypulse.changes import LATEST_ROW, RAW_ROW, SENSORS, WINDOW_ROW, AlertRow
from telemetrypulse.decode import DecodedBatch
from telemetrypulse.rules import RuleSet, default_rules
from telemetrypulse.windows import WINDOW_SIZES_S

PARTITION_KEY = b"\x00partition"  # a device_id never starts with a NUL byte (SPEC §3: [A-Za-z0-9._-])
# 2: run-time rules — episodes of both directions, pending ones and stale ones; the place of each latest value, the
# stale episodes raised; per partition its newest record time and rule revision. Format 1 records load as before.
RECORD_FORMAT = 2

US = 1_000_000
NONE_TS = stale.NONE_TS  # "no watermark" / "no latest value": below every representable ts_event
NO_FLOOR = np.iinfo(np.int64).max
SENSOR_COUNT = len(SENSORS)

# Event statuses, per event of a batch.
REPLAYED, DUPLICATE, LATE, ACCEPTED = 0, 1, 2, 3

# Id keys: device index in the high bits, 40 bits of a hash of the 16-byte id below. Equal keys only say "maybe the
# same id": a match sends the device down the exact per-event path, which compares whole ids.
_ID_HASH_BITS = 40
_MAX_DEVICES = 1 << (63 - _ID_HASH_BITS)  # keys stay non-negative int64 (8,388,608 devices per partition)
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX3 = np.uint64(0x165667B19E3779F9)

# Window keys: (device, sensor, size) above a 32-bit window number, so that one device's windows are contiguous in
# key order and one window is one int64. Window numbers of every datetime (years 1–9999) fit in ±2^31.
_WN_BIAS = 1 << 31
_WINDOW_DEVICE_SHIFT = 35  # 32 bits of window number, 1 of size, 2 of sensor
_SIZE_BIT = {size_s: bit for bit, size_s in enumerate(WINDOW_SIZES_S)}
_SIZE_OF_BIT = np.array(WINDOW_SIZES_S, np.int64)

# A group of more than this many values of one window in one batch has its sums folded on its own (np.add.accumulate
# is sequential); shorter groups are folded side by side, one position at a time.
_LONG_GROUP = 32


# ---------------------------------------------------------------------------------------------------------------
# Stored records: one per device (key device_id) and one per partition (key PARTITION_KEY), msgpack arrays.

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


class _PartitionRecord(msgspec.Struct, array_like=True):
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
_partition_decoder = msgspec.msgpack.Decoder(_PartitionRecord)
_fenced_decoder = msgspec.msgpack.Decoder(_Fenced)


def decode_device_record(value: bytes) -> DeviceRecord:
    return _device_decoder.decode(value)


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


# ---------------------------------------------------------------------------------------------------------------
# Output of a batch.


@dataclass(slots=True)
class BatchResult:
    """What one batch of one partition produced: rows for the changes topic (changes.py dtypes; `dim` indexes
    `dims`), alert messages for telemetry.alerts in source order, the latest state of each alert changed, counts."""

    dims: list[tuple[str, str, str]] = field(default_factory=list)
    raw: np.ndarray = field(default_factory=lambda: np.empty(0, RAW_ROW))
    windows: np.ndarray = field(default_factory=lambda: np.empty(0, WINDOW_ROW))
    latest: np.ndarray = field(default_factory=lambda: np.empty(0, LATEST_ROW))
    alert_messages: list[dict] = field(default_factory=list)
    alert_rows: list[AlertRow] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    replayed: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Small numpy helpers.


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.empty(0, np.int64)
    change = np.empty(len(sorted_keys), bool)
    change[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def _in_sorted(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Membership of `values` in an ascending array."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), bool)
    pos = np.searchsorted(sorted_values, values)
    pos[pos == len(sorted_values)] = 0
    return sorted_values[pos] == values


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The indices of the ranges [starts[i], ends[i]), concatenated."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(total)


def _id_keys(devices: np.ndarray, ids: np.ndarray) -> np.ndarray:
    halves = np.ascontiguousarray(ids).view("<u8").reshape(-1, 2)
    h = (halves[:, 0] * _MIX1) ^ (halves[:, 1] * _MIX2)
    h ^= h >> np.uint64(29)
    h *= _MIX3
    return (devices.astype(np.int64) << _ID_HASH_BITS) | (h >> np.uint64(64 - _ID_HASH_BITS)).astype(np.int64)


def _window_keys(
    devices: np.ndarray, sensors: np.ndarray, size_bit: int, window_number: np.ndarray
) -> np.ndarray:
    head = (devices.astype(np.int64) << 3) | (sensors.astype(np.int64) << 1) | size_bit
    return (head << 32) | (window_number + _WN_BIAS)


def _sequential_sums(
    initial: np.ndarray, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Per group g, initial[g] + values[starts[g]] + values[starts[g] + 1] + …, added one value at a time, left to
    right (bit for bit what a per-event fold gives). `values` and `initial` have one column per running sum."""
    if len(starts) == 0 or lengths.max() == 1:  # one value per group (small live batches): one addition each
        return initial + values[starts]
    total = initial.copy()
    long_groups = np.flatnonzero(lengths > _LONG_GROUP)
    for g in long_groups.tolist():
        start, length = int(starts[g]), int(lengths[g])
        chain = np.concatenate([total[g : g + 1], values[start : start + length]])
        total[g] = np.add.accumulate(chain, axis=0)[-1]
    short = np.flatnonzero(lengths <= _LONG_GROUP)
    if len(short):
        by_length = short[np.argsort(-lengths[short], kind="stable")]
        group_lengths = lengths[by_length]
        group_starts = starts[by_length]
        running = total[by_length]
        # active[k]: how many groups (longest first) have a (k+1)-th value
        active = np.searchsorted(-group_lengths, -np.arange(1, int(group_lengths[0]) + 1), side="right")
        for k, count in enumerate(active.tolist()):
            running[:count] += values[group_starts[:count] + k]
        total[by_length] = running
    return total


# ---------------------------------------------------------------------------------------------------------------
# The accepted ids still inside the grace horizon.


class _IdStore:
    """Accepted event ids with their ts_event, looked up by id key (device, hash).

    Two sorted levels, a large one and a small recent one, so that adding a batch's ids costs in proportion to the
    recent level, not to everything kept: the levels merge (dropping forgotten ids) once the recent one outgrows a
    quarter of the large one. A forgotten id (ts_event < watermark − grace) may stay until that merge; the exact
    check compares ts_event with the current watermark, so lingering changes no verdict.
    """

    def __init__(self) -> None:
        self.levels = [self._empty(), self._empty()]  # [large, recent]: (keys, ids, ts)

    @staticmethod
    def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.empty(0, np.int64), np.empty(0, "V16"), np.empty(0, np.int64)

    def __len__(self) -> int:
        return sum(len(level[0]) for level in self.levels)

    def maybe_contains(self, keys: np.ndarray) -> np.ndarray:
        found = _in_sorted(self.levels[0][0], keys)
        found |= _in_sorted(self.levels[1][0], keys)
        return found

    def add(
        self, keys: np.ndarray, ids: np.ndarray, ts: np.ndarray, watermark: np.ndarray, grace_us: int
    ) -> None:
        added = len(keys)
        if added == 0:
            return
        rk, ri, rt = self.levels[1]
        keys, ids, ts = np.concatenate([rk, keys]), np.concatenate([ri, ids]), np.concatenate([rt, ts])
        order = np.argsort(keys, kind="stable")
        self.levels[1] = keys[order], ids[order], ts[order]
        # Each batch copies the recent level, each merge the large one: merging once the recent level passes
        # sqrt(2 · large · added) keeps the sum of both per batch near its minimum.
        if len(self.levels[1][0]) > max(4096, math.isqrt(2 * len(self.levels[0][0]) * added)):
            self.merge(watermark, grace_us)

    def merge(self, watermark: np.ndarray, grace_us: int) -> None:
        (lk, li, lt), (rk, ri, rt) = self.levels
        keys, ids, ts = np.concatenate([lk, rk]), np.concatenate([li, ri]), np.concatenate([lt, rt])
        keep = ts >= watermark[keys >> _ID_HASH_BITS] - grace_us
        keys, ids, ts = keys[keep], ids[keep], ts[keep]
        order = np.argsort(keys, kind="stable")  # two sorted runs: a linear merge
        self.levels = [(keys[order], ids[order], ts[order]), self._empty()]

    def of_device(self, device: int) -> dict[bytes, int]:
        """All ids kept for one device (forgotten ones included) -> their ts_event."""
        low, high = device << _ID_HASH_BITS, (device + 1) << _ID_HASH_BITS
        seen: dict[bytes, int] = {}
        for keys, ids, ts in self.levels:
            a, b = np.searchsorted(keys, [low, high])
            for event_id, t in zip(ids[a:b].tolist(), ts[a:b].tolist(), strict=True):
                # An id forgotten and accepted again is kept twice until the next merge: the newer counts.
                if t > seen.get(event_id, NONE_TS):
                    seen[event_id] = t
        return seen

    def live_of(self, devices: np.ndarray, watermark: np.ndarray, grace_us: int):
        """(device, id, ts) of the ids not forgotten of `devices` (ascending), in id key order, equal keys by id
        bytes: a canonical order, so that a record's bytes depend only on the ids it holds."""
        parts = []
        for keys, ids, ts in self.levels:
            index = _ranges(
                np.searchsorted(keys, devices << _ID_HASH_BITS),
                np.searchsorted(keys, (devices + 1) << _ID_HASH_BITS),
            )
            k, t = keys[index], ts[index]
            keep = t >= watermark[k >> _ID_HASH_BITS] - grace_us
            parts.append((k[keep], ids[index[keep]], t[keep]))
        keys = np.concatenate([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        ts = np.concatenate([p[2] for p in parts])
        order = np.argsort(keys, kind="stable")  # two sorted runs: a linear merge
        keys = keys[order]
        if (keys[1:] == keys[:-1]).any():  # two ids of a device share their 40-bit hash: rare
            halves = ids[order].view(">u8").reshape(-1, 2)
            order = order[np.lexsort((halves[:, 1], halves[:, 0], keys))]  # keys stay sorted
        return keys >> _ID_HASH_BITS, ids[order], ts[order]

    def replace(self, keys: np.ndarray, ids: np.ndarray, ts: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.levels = [(keys[order], ids[order], ts[order]), self._empty()]


# ---------------------------------------------------------------------------------------------------------------
# Open windows.

_WINDOW_COLUMNS = ("key", "deadline", "count", "sum", "sum_sq", "min", "max", "first", "last", "version")


class _WindowStore:
    """Open windows as columns sorted by window key. `deadline` = window end + grace: the window is final once its
    device's watermark reaches it. Final windows stay until the store has grown by a quarter (no accepted event
    can fall into one, so they change nothing) and are never written to a snapshot."""

    def __init__(self) -> None:
        self.key = np.empty(0, np.int64)
        self.deadline = np.empty(0, np.int64)
        self.count = np.empty(0, np.int64)
        self.sum = np.empty(0, np.float64)
        self.sum_sq = np.empty(0, np.float64)
        self.min = np.empty(0, np.float64)
        self.max = np.empty(0, np.float64)
        self.first = np.empty(0, np.int64)
        self.last = np.empty(0, np.int64)
        self.version = np.empty(0, np.int64)
        self.size_after_compaction = 0

    def __len__(self) -> int:
        return len(self.key)

    def _take(self, index: np.ndarray) -> None:
        for name in _WINDOW_COLUMNS:
            setattr(self, name, getattr(self, name)[index])

    def _append(self, columns: dict[str, np.ndarray]) -> None:
        for name in _WINDOW_COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), columns[name]]))
        self._take(np.argsort(self.key, kind="stable"))

    def fold(self, dev, sensor, ts, value, offset, grace_us: int):
        """Fold accepted events (in device, offset order) into their 5 and 15 minute windows. Returns per window
        touched: (key, index of its last event, position in the store after the fold)."""
        m = len(dev)
        keys = np.empty(2 * m, np.int64)
        for size_s, bit in _SIZE_BIT.items():
            keys[bit * m : (bit + 1) * m] = _window_keys(dev, sensor, bit, ts // (size_s * US))
        event = np.concatenate([np.arange(m), np.arange(m)])
        order = np.argsort(keys, kind="stable")  # keeps offset order within a window
        keys, event = keys[order], event[order]
        starts = _group_starts(keys)
        lengths = np.diff(np.append(starts, 2 * m))
        group_key = keys[starts]
        last_event = event[starts + lengths - 1]
        v = value[event]
        t = ts[event]
        v_min = np.minimum.reduceat(v, starts)
        v_max = np.maximum.reduceat(v, starts)
        t_min = np.minimum.reduceat(t, starts)
        t_max = np.maximum.reduceat(t, starts)

        pos = np.searchsorted(self.key, group_key)
        found = np.zeros(len(group_key), bool)
        inside = pos < len(self.key)
        found[inside] = self.key[pos[inside]] == group_key[inside]
        old = pos[found]
        initial = np.zeros((len(group_key), 2))  # a new window's sums start at 0.0, as the model's do
        initial[found, 0] = self.sum[old]
        initial[found, 1] = self.sum_sq[old]
        sums = _sequential_sums(initial, np.column_stack([v, v * v]), starts, lengths)

        self.count[old] += lengths[found]
        self.sum[old] = sums[found, 0]
        self.sum_sq[old] = sums[found, 1]
        self.min[old] = np.minimum(self.min[old], v_min[found])
        self.max[old] = np.maximum(self.max[old], v_max[found])
        self.first[old] = np.minimum(self.first[old], t_min[found])
        self.last[old] = np.maximum(self.last[old], t_max[found])
        self.version[old] = offset[last_event[found]]

        new = ~found
        if new.any():
            new_key = group_key[new]
            size_us = _SIZE_OF_BIT[(new_key >> 32) & 1] * US
            start = ((new_key & 0xFFFFFFFF) - _WN_BIAS) * size_us
            self._append(
                {
                    "key": new_key,
                    "deadline": start + size_us + grace_us,
                    "count": lengths[new].astype(np.int64),
                    "sum": sums[new, 0],
                    "sum_sq": sums[new, 1],
                    "min": v_min[new],
                    "max": v_max[new],
                    "first": t_min[new],
                    "last": t_max[new],
                    "version": offset[last_event[new]],
                }
            )
            pos = np.searchsorted(self.key, group_key)
        return group_key, last_event, pos

    def maybe_compact(self, watermark: np.ndarray) -> None:
        if len(self.key) > self.size_after_compaction * 5 // 4 + 1024:
            self._take(np.flatnonzero(self.deadline > watermark[self.key >> _WINDOW_DEVICE_SHIFT]))
            self.size_after_compaction = len(self.key)

    def rows(self, index: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """The windows at `index` as rows of `dtype` (changes.WINDOW_ROW, or RECORD_WINDOW with first and last
        relative to the window start), and their devices."""
        dev, sensor, size_s, start = _split_window_keys(self.key[index])
        rows = np.empty(len(index), dtype)
        rows["sensor"] = sensor
        rows["size_s"] = size_s
        rows["start_us"] = start
        for name in ("count", "sum", "min", "max", "sum_sq", "version"):
            rows[name] = getattr(self, name)[index]
        if "first_us" in dtype.names:
            rows["first_us"] = self.first[index]
            rows["last_us"] = self.last[index]
        else:
            rows["first_after_us"] = self.first[index] - start
            rows["last_after_us"] = self.last[index] - start
        return rows, dev

    def open_of(self, devices_mask: np.ndarray, watermark: np.ndarray) -> np.ndarray:
        """Indices of the windows, not final, of the devices in the mask (ascending key: by device)."""
        dev = self.key >> _WINDOW_DEVICE_SHIFT
        return np.flatnonzero(devices_mask[dev] & (self.deadline > watermark[dev]))


def _split_window_keys(keys: np.ndarray):
    """(device, sensor code, size_s, start_us) of window keys."""
    size_s = _SIZE_OF_BIT[(keys >> 32) & 1]
    start = ((keys & 0xFFFFFFFF) - _WN_BIAS) * size_s * US
    return keys >> _WINDOW_DEVICE_SHIFT, (keys >> 33) & 3, size_s, start


# ---------------------------------------------------------------------------------------------------------------
# The partition state.


@dataclass(slots=True)
class _Accepted:
    """The accepted events of a batch, by device then offset: what windows, latest values and alerts see."""

    dev: np.ndarray  # device index in the partition state
    offset: np.ndarray
    position: np.ndarray  # position in the batch
    ts: np.ndarray
    ids: np.ndarray
    sensor: np.ndarray  # int64 sensor code
    value: np.ndarray
    record: np.ndarray  # Kafka record time (µs)


class _Outputs:
    """Alert messages and rows of one batch, each with a sort key (source offset, step, sequence): they are
    published in the order the events that caused them were applied, whatever order they were computed in."""

    BEFORE, AT, AFTER = 0, 1, 2  # a stale check before an event, the event itself, the check after it

    def __init__(self) -> None:
        self.messages: list[tuple[tuple, dict]] = []
        self.rows: list[tuple[tuple, dict]] = []
        self.opened = 0
        self.resolved = 0

    def message(self, key: tuple, message: dict) -> None:
        if message["status"] == "open":
            self.opened += 1
        else:
            self.resolved += 1
        self.messages.append((key, message))
        self.rows.append((key, message))

    def row(self, key: tuple, row: dict) -> None:
        self.rows.append((key, row))

    def into(self, result: BatchResult, emit: bool) -> None:
        result.alerts_opened += self.opened
        result.alerts_resolved += self.resolved
        if not emit:
            return
        self.messages.sort(key=lambda item: item[0])
        self.rows.sort(key=lambda item: item[0])
        result.alert_messages.extend(m for _, m in self.messages)
        latest_state: dict[str, dict] = {}
        for _, row in self.rows:
            latest_state[row["alert_id"]] = row
        result.alert_rows.extend(AlertRow(**row) for row in latest_state.values())


class PartitionState:
    """Everything the devices of one source partition carry from batch to batch (see the module docstring).

    `rules`: the rule set the events are judged by (default: the three default rules); `stale_after_s` > 0 turns
    on stale sensors (SPEC §9)."""

    def __init__(
        self, partition: int, grace_s: int, *, rules: RuleSet | None = None, stale_after_s: int = 0
    ) -> None:
        self.partition = partition
        self.grace_us = int(grace_s) * US
        self.rules = rules if rules is not None else default_rules()
        self.stale_after_s = int(stale_after_s)
        self.stale_us = self.stale_after_s * US
        # A partition is live while its data reaches Kafka within the grace of its event time (stale.py).
        self.live_lag_us = self.grace_us
        self.snapshot_offset = -1  # the source offset up to which the stored snapshot is complete
        self.last_offset = -1  # highest source offset applied (valid, invalid or skipped alike)
        self._reset()

    @property
    def rules_revision(self) -> int:
        return self.rules.revision

    def _reset(self) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._fence = np.empty(0, np.int64)
        self._watermark = np.empty(0, np.int64)
        self._dirty = np.empty(0, bool)
        self._latest_ts = np.empty((0, SENSOR_COUNT), np.int64)
        self._latest_value = np.empty((0, SENSOR_COUNT), np.float64)
        self._latest_id = np.empty((0, SENSOR_COUNT), "V16")
        self._latest_version = np.empty((0, SENSOR_COUNT), np.int64)
        # (device_id, site_id, zone_id) of the reading that set each latest value (a stale alert names its place).
        self._latest_dims = np.empty((0, SENSOR_COUNT), object)
        # Threshold episodes open or pending, per direction: the batch engine walks only where one is, or may start.
        self._episode_active = np.empty((0, SENSOR_COUNT, 2), bool)
        self._stale_raised = np.empty((0, SENSOR_COUNT), bool)  # raised for the current latest reading
        self._stale_open = np.empty((0, SENSOR_COUNT), bool)
        self._episodes: dict[tuple[int, int, int], dict] = {}  # (device, sensor, kind) -> episode
        self._ids = _IdStore()
        self._windows = _WindowStore()
        self.partition_watermark = NONE_TS  # greatest ts_event accepted in the partition
        self.record_max = NONE_TS  # newest Kafka record time of an accepted event
        # A lower bound of the ts of every latest value with no stale episode raised yet: while the watermark
        # stays within stale_after of it, nothing can turn stale and the whole arrays need not be looked at.
        self._stale_floor = NO_FLOOR
        self._floor_stale = False  # a look at every sensor raised episodes: compute the floor anew

    def device_count(self) -> int:
        return len(self._names)

    def held(self) -> dict[str, int]:
        """What the state holds in memory, for gauges: devices, ids and windows (forgotten ids and final windows
        not yet compacted away included)."""
        return {"devices": len(self._names), "ids": len(self._ids), "windows": len(self._windows)}

    # -- devices ---------------------------------------------------------------------------------------------

    def _device_indices(self, names: Iterable[str]) -> np.ndarray:
        index = self._index
        out = []
        for name in names:
            i = index.get(name)
            if i is None:
                i = index[name] = len(self._names)
                self._names.append(name)
            out.append(i)
        self._ensure_capacity(len(self._names))
        return np.array(out, np.int64)

    def _ensure_capacity(self, count: int) -> None:
        capacity = len(self._fence)
        if count <= capacity:
            return
        if count > _MAX_DEVICES:
            raise ValueError(f"more than {_MAX_DEVICES} devices in one partition")
        grow = max(count, 2 * capacity, 64) - capacity

        def extend(array: np.ndarray, fill) -> np.ndarray:
            extra = np.full((grow, *array.shape[1:]), fill, array.dtype)
            return np.concatenate([array, extra])

        self._fence = extend(self._fence, -1)
        self._watermark = extend(self._watermark, NONE_TS)
        self._dirty = extend(self._dirty, False)
        self._latest_ts = extend(self._latest_ts, NONE_TS)
        self._latest_value = extend(self._latest_value, 0.0)
        self._latest_id = extend(self._latest_id, b"\x00" * 16)
        self._latest_version = extend(self._latest_version, -1)
        self._latest_dims = extend(self._latest_dims, None)
        self._episode_active = extend(self._episode_active, False)
        self._stale_raised = extend(self._stale_raised, False)
        self._stale_open = extend(self._stale_open, False)

    # -- one batch -------------------------------------------------------------------------------------------
    def apply(
        self,
        batch: DecodedBatch,
        offsets: np.ndarray,
        ingest_us: np.ndarray,
        *,
        last_offset: int,
        emit: bool = True,
    ) -> BatchResult:
        """Apply the valid events of one fetched slice of this partition.

        `offsets` and `ingest_us` (Kafka record time) have one value per valid event, offsets strictly ascending;
        `last_offset` is the slice's last offset, invalid inputs included. Events at or below their device's fence
        are counted as replayed and change nothing, so any stretch may be applied again.
        emit=False: a replay of events whose outputs were already published; the state changes exactly as with
        emit=True, but no rows or messages are built (the counts are still given).
        An exception (a bug, never data) may leave the state part-applied: reload it from the table.
        """
        self.last_offset = max(self.last_offset, int(last_offset))
        n = len(batch)
        result = BatchResult()
        if n == 0:
            return result
        offsets = np.asarray(offsets, np.int64)
        if len(offsets) != n or len(ingest_us) != n:
            raise ValueError("offsets and ingest_us need one value per valid event")
        if n > 1 and not (offsets[1:] > offsets[:-1]).all():
            raise ValueError("offsets must be strictly ascending")

        # Sorted by device, offsets ascending within each device.
        device = self._device_indices(batch.devices)[batch.device]
        order = np.argsort(device, kind="stable")
        dev = device[order]
        off = offsets[order]

        # 1. The fence: events at or below it were applied before; every other one moves it.
        live = off > self._fence[dev]
        starts = _group_starts(dev)
        last_of_device = np.append(starts[1:], n) - 1
        group_dev = dev[starts]
        self._fence[group_dev] = np.maximum(self._fence[group_dev], off[last_of_device])
        position = order[live]  # position in the batch of each live event, by device and offset
        result.replayed = n - len(position)
        if len(position) == 0:
            return result
        dev = dev[live]
        off = off[live]
        self._dirty[dev] = True
        ts = batch.ts_us[position]
        ids = batch.event_id[position]
        id_key = _id_keys(dev, ids)

        # 2–4. Duplicate, too late or accepted.
        status = self._judge(dev, ts, ids, id_key)
        counts = np.bincount(status, minlength=4)
        result.duplicates, result.late, result.accepted = int(counts[1]), int(counts[2]), int(counts[3])

        accepted = status == ACCEPTED
        acc = _Accepted(
            dev=dev[accepted],
            offset=off[accepted],
            position=position[accepted],
            ts=ts[accepted],
            ids=ids[accepted],
            sensor=batch.sensor[position[accepted]].astype(np.int64),
            value=batch.value[position[accepted]],
            record=np.asarray(ingest_us, np.int64)[position[accepted]],
        )
        windows = latest = None
        if len(acc.dev):
            group = _group_starts(acc.dev)
            touched = acc.dev[group]
            self._watermark[touched] = np.maximum(
                self._watermark[touched], np.maximum.reduceat(acc.ts, group)
            )
            self._ids.add(id_key[accepted], acc.ids, acc.ts, self._watermark, self.grace_us)
            windows = self._windows.fold(acc.dev, acc.sensor, acc.ts, acc.value, acc.offset, self.grace_us)
            outputs = _Outputs()
            self._step_alerts(batch, acc, outputs)
            # Stale episodes are judged against the latest values as they were before the batch: first.
            walked = self._step_stale(batch, acc, outputs) if self.stale_us else None
            latest = self._update_latest(batch, acc)
            if walked is not None:
                self._settle_stale(acc, latest, walked)
            self.partition_watermark = max(self.partition_watermark, int(acc.ts.max()))
            self.record_max = max(self.record_max, int(acc.record.max()))
            outputs.into(result, emit)
        if emit:
            self._emit_rows(batch, result, position, status, ingest_us, acc, windows, latest)
        # Only now: a compaction moves the windows whose positions the rows above were read from.
        self._windows.maybe_compact(self._watermark)
        return result

    def _judge(self, dev: np.ndarray, ts: np.ndarray, ids: np.ndarray, id_key: np.ndarray) -> np.ndarray:
        """Status (DUPLICATE, LATE, ACCEPTED) of each live event, in device and offset order."""
        status = np.full(len(dev), ACCEPTED, np.int64)
        # A duplicate needs an id equal to one kept or to an earlier one of the batch: devices with neither can be
        # judged all at once; the others are walked event by event (their id keys may also merely collide).
        maybe = self._ids.maybe_contains(id_key)
        sorted_keys = np.sort(id_key)
        repeated = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
        if len(repeated):
            maybe |= np.isin(id_key, repeated)
        if maybe.any():
            slow_devices = np.unique(dev[maybe])
            fast = ~np.isin(dev, slow_devices)
            fast_index = np.flatnonzero(fast)
            status[fast_index[self._late_without_duplicates(dev[fast], ts[fast])]] = LATE
            starts = _group_starts(dev)
            ends = np.append(starts[1:], len(dev))
            slow_groups = np.searchsorted(dev[starts], slow_devices)
            for g in slow_groups.tolist():
                a, b = int(starts[g]), int(ends[g])
                status[a:b] = self._walk_device(int(dev[a]), ts[a:b], ids[a:b])
        else:
            status[self._late_without_duplicates(dev, ts)] = LATE
        return status

    def _late_without_duplicates(self, dev: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Too-late flags of events (device, offset order) none of which is a duplicate.

        The watermark an event meets is the device's stored one raised by every earlier event of the batch: a too-
        late event cannot raise it (its ts is below it by more than the grace), so the running maximum of all ts
        before it is exact, and no event's verdict depends on another's.
        """
        m = len(dev)
        if m == 0:
            return np.zeros(0, bool)
        first = np.zeros(m, bool)
        first[_group_starts(dev)] = True
        before = np.empty(m, np.int64)  # the greatest ts before each event of its device in the batch
        if m == 1 or (first[1:] | (ts[1:] >= ts[:-1])).all():
            before[1:] = ts[:-1]  # in time order per device (the usual case): the previous event's
        else:
            # A running maximum that restarts per device: ranks of ts, lifted by a per-device step no rank reaches.
            group = np.cumsum(first) - 1
            distinct, rank = np.unique(ts, return_inverse=True)
            step = len(distinct)
            running = np.maximum.accumulate(group * step + rank) - group * step
            before[1:] = distinct[running[:-1]]
        stored = self._watermark[dev]
        watermark = np.where(first, stored, np.maximum(before, stored))
        has = watermark != NONE_TS
        return has & (np.where(has, watermark, ts) - ts > self.grace_us)

    def _walk_device(self, device: int, ts: np.ndarray, ids: np.ndarray) -> list[int]:
        """SPEC §3–§4 event by event, for a device with a possible duplicate in the batch."""
        seen = self._ids.of_device(device)
        grace = self.grace_us
        stored = int(self._watermark[device])
        watermark = None if stored == NONE_TS else stored
        out = []
        for event_id, t in zip(ids.tolist(), ts.tolist(), strict=True):
            accepted_ts = seen.get(event_id)
            # An accepted id counts while its ts_event is within the grace of the watermark (SPEC §3).
            if accepted_ts is not None and watermark is not None and accepted_ts >= watermark - grace:
                out.append(DUPLICATE)
            elif watermark is not None and watermark - t > grace:
                out.append(LATE)
            else:
                out.append(ACCEPTED)
                seen[event_id] = t
                if watermark is None or t > watermark:
                    watermark = t
        return out

    def _update_latest(self, batch: DecodedBatch, acc: _Accepted) -> np.ndarray:
        """Latest value per (device, sensor): greatest ts_event, a tie to the later offset. Returns the indices (into
        the accepted events) of the events that became latest."""
        group_key = acc.dev * SENSOR_COUNT + acc.sensor
        order = np.lexsort((acc.offset, acc.ts, group_key))
        best = order[np.append(_group_starts(group_key[order])[1:], len(order)) - 1]
        d, s = acc.dev[best], acc.sensor[best]
        take = acc.ts[best] >= self._latest_ts[d, s]  # NONE_TS: no latest value yet
        best, d, s = best[take], d[take], s[take]
        self._latest_ts[d, s] = acc.ts[best]
        self._latest_value[d, s] = acc.value[best]
        self._latest_id[d, s] = acc.ids[best]
        self._latest_version[d, s] = acc.offset[best]
        self._latest_dims[d, s] = _dims_array(batch)[batch.dim[acc.position[best]]]
        return best

    def _step_alerts(self, batch: DecodedBatch, acc: _Accepted, outputs: _Outputs) -> None:
        """Threshold episodes (alerts.step) under the rules in force, walked only over the (device, sensor) groups
        and directions where an episode is open or pending, or a reading could violate some enabled rule."""
        rules = self.rules
        dev, sensor, value = acc.dev, acc.sensor, acc.value
        up = self._episode_active[dev, sensor, ABOVE] | (value > rules.open_above_bound[sensor])
        down = self._episode_active[dev, sensor, BELOW] | (value < rules.open_below_bound[sensor])
        if not (up.any() or down.any()):
            return
        group_key = dev * SENSOR_COUNT + sensor
        up_groups, down_groups = np.unique(group_key[up]), np.unique(group_key[down])
        walk = np.flatnonzero(np.isin(group_key, np.union1d(up_groups, down_groups)))
        walk = walk[
            np.argsort(group_key[walk], kind="stable")
        ]  # by device and offset already: offsets stay in order
        directions = {}
        for kind, groups in ((ABOVE, up_groups), (BELOW, down_groups)):
            for g in groups.tolist():
                directions[g] = (*directions.get(g, ()), kind)
        dims, dim = batch.dims, batch.dim
        columns = (group_key[walk], acc.position[walk], value[walk], acc.ts[walk], acc.offset[walk])
        for i, g, p, v, t, o in zip(walk.tolist(), *(c.tolist() for c in columns), strict=True):
            d, s = divmod(g, SENSOR_COUNT)
            device_id, site_id, zone_id = dims[dim[p]]
            reading = Reading(_uuid_text(acc.ids[i]), device_id, site_id, zone_id, SENSORS[s], v, t)
            for kind in directions[g]:
                above = kind == ABOVE
                rule = rules.applicable(device_id, site_id, zone_id, s, above, t)
                key = (d, s, kind)
                episode, message, peak_moved = alerts.step(self._episodes.get(key), reading, rule, above)
                if episode is None:
                    self._episodes.pop(key, None)
                else:
                    self._episodes[key] = episode
                self._episode_active[d, s, kind] = episode is not None
                if message is not None:
                    outputs.message((o, _Outputs.AT, kind), message)
                elif peak_moved:
                    outputs.row((o, _Outputs.AT, kind), dict(episode))

    # -- stale sensors (stale.py) ----------------------------------------------------------------------------

    def _step_stale(
        self, batch: DecodedBatch, acc: _Accepted, outputs: _Outputs
    ) -> dict[tuple[int, int], bool]:
        """Stale episodes opened and resolved by the batch, judged at every check point in offset order (stale.py)
        against the latest values as they were before the batch. Returns, per (device, sensor) followed here, whether
        a stale episode is raised for its latest value after the batch.

        Bounds first: after an event, the latest value of its sensor is at least as new as the event, and no check
        point before the sensor's next event exceeds the watermark there plus the batch's largest silence advance;
        a sensor without events in the batch needs a look only when the batch's highest check point passes the
        floor. Only the sensors these bounds cannot clear are followed one event at a time."""
        n = len(acc.dev)
        stale_us = self.stale_us
        order = np.argsort(acc.position, kind="stable")  # offset order
        ts = acc.ts[order]
        after, before, gap_max = stale.check_points(
            ts, acc.record[order], self.partition_watermark, self.record_max, self.live_lag_us
        )
        group = (acc.dev * SENSOR_COUNT + acc.sensor)[order]
        by_group = np.argsort(group, kind="stable")
        grouped = group[by_group]
        starts = _group_starts(grouped)
        ends = np.append(starts[1:], n)
        following = np.full(n, n, np.int64)  # the next event of the same (device, sensor), in offset order
        same = grouped[1:] == grouped[:-1]
        following[by_group[:-1][same]] = by_group[1:][same]
        may_turn = after[following - 1] + gap_max > ts + stale_us
        first = by_group[starts]
        g_dev, g_sensor = grouped[starts] // SENSOR_COUNT, grouped[starts] % SENSOR_COUNT
        before_first = (
            np.where(first > 0, after[np.maximum(first - 1, 0)], self.partition_watermark) + gap_max
        )
        old = self._latest_ts[g_dev, g_sensor]
        old_may_turn = (
            (old != NONE_TS) & ~self._stale_raised[g_dev, g_sensor] & (before_first > old + stale_us)
        )
        follow = (
            old_may_turn
            | self._stale_open[g_dev, g_sensor]
            | np.logical_or.reduceat(may_turn[by_group], starts)
        )

        walked: dict[tuple[int, int], bool] = {}
        offsets = acc.offset[order]
        highest = max(int(after[-1]), int(before.max()))
        if highest > self._stale_floor + stale_us:
            count = len(self._names)
            latest_ts = self._latest_ts[:count]
            candidates = (
                (latest_ts != NONE_TS) & ~self._stale_raised[:count] & (latest_ts + stale_us < highest)
            )
            candidates[g_dev, g_sensor] = False  # sensors with events in the batch are judged below
            for d, s in zip(*(a.tolist() for a in np.nonzero(candidates)), strict=True):
                threshold = int(self._latest_ts[d, s]) + stale_us
                index, when = stale.first_exceeding(after, before, -1, n, threshold)
                self._raise_stale(d, s, outputs, (int(offsets[index]), when, self._names[d], s))
                walked[(d, s)] = True
            self._floor_stale = True

        for g in np.flatnonzero(follow).tolist():
            d, s = int(g_dev[g]), int(g_sensor[g])
            walked[(d, s)] = self._walk_stale(
                batch, acc, order, after, before, by_group[starts[g] : ends[g]], d, s, outputs
            )
        return walked

    def _walk_stale(
        self, batch, acc, order, after, before, events: np.ndarray, d: int, s: int, outputs
    ) -> bool:
        """SPEC §9 event by event for one (device, sensor) of the batch; returns whether a stale episode is raised for
        its latest value at the end."""
        n = len(order)
        stale_us = self.stale_us
        has_old = self._latest_ts[d, s] != NONE_TS
        latest_ts = int(self._latest_ts[d, s]) if has_old else None
        latest_at = None  # the batch's accepted event (index) that is the latest value; None: the stored one
        raised = bool(self._stale_raised[d, s])
        episode = self._episodes.get((d, s, STALE))
        since = -1
        for k in [*events.tolist(), n]:  # n: the end of the batch, after the sensor's last event
            if latest_ts is not None and not raised:
                hit = stale.first_exceeding(after, before, since, k, latest_ts + stale_us)
                if hit is not None:
                    key = (int(acc.offset[order[hit[0]]]), hit[1], self._names[d], s)
                    episode = self._raise_stale(d, s, outputs, key, batch, acc, latest_at)
                    raised = True
            if k == n:
                break
            a = int(order[k])
            ts = int(acc.ts[a])
            if episode is not None:
                resolved = alerts.stale_resolved(episode, ts, _uuid_text(acc.ids[a]))
                outputs.message((int(acc.offset[a]), _Outputs.AT, STALE), resolved)
                episode = None
            if latest_ts is None or ts >= latest_ts:
                latest_ts, latest_at, raised = ts, a, False
            since = k
        if episode is None:
            self._episodes.pop((d, s, STALE), None)
        else:
            self._episodes[(d, s, STALE)] = episode
        self._stale_open[d, s] = episode is not None
        return raised

    def _raise_stale(
        self, d: int, s: int, outputs: _Outputs, key: tuple, batch=None, acc=None, at=None
    ) -> dict:
        """Open the stale episode of (device d, sensor s) for its latest value: the stored one, or the batch's
        accepted event `at`."""
        if at is None:
            place = self._latest_dims[d, s]
            device_id, site_id, zone_id = place if place is not None else (self._names[d], "", "")
            value, ts = float(self._latest_value[d, s]), int(self._latest_ts[d, s])
            event_id = _uuid_text(self._latest_id[d, s])
        else:
            device_id, site_id, zone_id = batch.dims[batch.dim[acc.position[at]]]
            value, ts, event_id = float(acc.value[at]), int(acc.ts[at]), _uuid_text(acc.ids[at])
        episode = alerts.stale_opened(
            device_id, site_id, zone_id, SENSORS[s], value, ts, event_id, self.stale_after_s
        )
        outputs.message(key, dict(episode))
        self._episodes[(d, s, STALE)] = episode
        self._stale_open[d, s] = True
        self._stale_raised[d, s] = True
        self._dirty[d] = True
        return episode

    def _settle_stale(self, acc: _Accepted, latest: np.ndarray, walked: dict[tuple[int, int], bool]) -> None:
        """After the latest values moved: a new latest value has no stale episode raised, except where the walk
        followed the sensor and says so; the floor takes the batch's new latest values in."""
        self._stale_raised[acc.dev[latest], acc.sensor[latest]] = False
        for (d, s), raised in walked.items():
            self._stale_raised[d, s] = raised
        if self._floor_stale:
            self._recompute_stale_floor()
        else:
            self._stale_floor = min(self._stale_floor, int(acc.ts.min()))

    def _recompute_stale_floor(self) -> None:
        count = len(self._names)
        waiting = self._latest_ts[:count][(self._latest_ts[:count] != NONE_TS) & ~self._stale_raised[:count]]
        self._stale_floor = int(waiting.min()) if len(waiting) else NO_FLOOR
        self._floor_stale = False

    def stale_by_clock(self, now_us: int) -> BatchResult:
        """Stale episodes of a silent partition by the worker's clock (stale.py): for a live partition with nothing
        to read, the watermark advanced by the time since its newest record. Changes only stale episodes."""
        result = BatchResult()
        if not self.stale_us:
            return result
        watermark = stale.clock_watermark(self.partition_watermark, self.record_max, now_us, self.live_lag_us)
        if watermark == NONE_TS or watermark <= self._stale_floor + self.stale_us:
            return result
        count = len(self._names)
        latest_ts = self._latest_ts[:count]
        due = (latest_ts != NONE_TS) & ~self._stale_raised[:count] & (latest_ts + self.stale_us < watermark)
        outputs = _Outputs()
        for d, s in zip(*(a.tolist() for a in np.nonzero(due)), strict=True):
            self._raise_stale(d, s, outputs, (self.last_offset, _Outputs.AFTER, self._names[d], s))
        self._recompute_stale_floor()
        outputs.into(result, emit=True)
        return result

    def _emit_rows(self, batch, result, position, status, ingest_us, acc: _Accepted, windows, latest) -> None:
        """The changes rows of the batch (changes.py): raw, windows and latest values."""
        # Raw rows: accepted and too-late events, in source order.
        by_position = np.full(len(batch), REPLAYED, np.int64)
        by_position[position] = status
        stored = np.flatnonzero(by_position >= LATE)
        raw = np.empty(len(stored), RAW_ROW)
        raw["dim"] = batch.dim[stored]
        raw["event_id"] = batch.event_id[stored]
        raw["sensor"] = batch.sensor[stored]
        raw["late"] = by_position[stored] == LATE
        raw["unit_given"] = batch.unit_given[stored]
        raw["value"] = batch.value[stored]
        raw["ts_us"] = batch.ts_us[stored]
        raw["ingest_us"] = np.asarray(ingest_us, np.int64)[stored]

        # Each window the batch touched, whole, as it is after the batch.
        window_rows = np.empty(0, WINDOW_ROW)
        if windows is not None:
            _, last_event, at = windows
            window_rows, _ = self._windows.rows(at, WINDOW_ROW)
            window_rows["dim"] = batch.dim[acc.position[last_event]]  # site/zone of the last event folded

        # Each latest value the batch replaced.
        latest_rows = np.empty(0, LATEST_ROW)
        if latest is not None and len(latest):
            p = acc.position[latest]
            latest_rows = np.empty(len(p), LATEST_ROW)
            latest_rows["dim"] = batch.dim[p]
            latest_rows["sensor"] = batch.sensor[p]
            latest_rows["value"] = batch.value[p]
            latest_rows["ts_us"] = batch.ts_us[p]
            latest_rows["event_id"] = batch.event_id[p]
            latest_rows["version"] = acc.offset[latest]

        # Only the dims some row refers to (a device whose events were all duplicates or replays has none).
        used = None
        if result.duplicates or result.replayed:
            used = np.unique(np.concatenate([raw["dim"], window_rows["dim"], latest_rows["dim"]]))
        if used is not None and len(used) < len(batch.dims):
            remap = np.zeros(len(batch.dims), np.uint32)
            remap[used] = np.arange(len(used), dtype=np.uint32)
            for rows in (raw, window_rows, latest_rows):
                rows["dim"] = remap[rows["dim"]]
            result.dims = [batch.dims[i] for i in used.tolist()]
        else:
            result.dims = list(batch.dims)
        result.raw, result.windows, result.latest = raw, window_rows, latest_rows

    # -- snapshots -------------------------------------------------------------------------------------------

    def snapshot(self, next_rules: RuleSet | None = None) -> list[tuple[bytes, bytes]]:
        """The records to store now: each device changed since the last snapshot, then the partition record (its
        snapshot_offset = last_offset; last, so a partly stored snapshot never claims to be complete).

        `next_rules`: the rules the events after this snapshot are judged by, from now on (the only moment they
        change; the partition record keeps their revision).
        The changed set is cleared here: if the records cannot all be stored, this state no longer knows what the
        table lacks, and must be reloaded from the table (replaying from its snapshot offset) before going on.
        """
        count = len(self._names)
        dirty_mask = self._dirty[:count].copy()
        dirty = np.flatnonzero(dirty_mask)
        records: list[tuple[bytes, bytes]] = []
        if len(dirty):
            mask = np.zeros(len(self._fence), bool)
            mask[dirty] = True
            records = self._device_records(dirty, mask)
        self.snapshot_offset = self.last_offset
        if next_rules is not None:
            self.rules = next_rules
        partition = _PartitionRecord(
            RECORD_FORMAT,
            self.snapshot_offset,
            None if self.record_max == NONE_TS else self.record_max,
            self.rules.revision,
        )
        records.append((PARTITION_KEY, _encoder.encode(partition)))
        self._dirty[:] = False
        return records

    def _device_records(self, dirty: np.ndarray, mask: np.ndarray) -> list[tuple[bytes, bytes]]:
        watermark = self._watermark
        grace = self.grace_us
        id_dev, id_bytes, id_ts = self._ids.live_of(dirty, watermark, grace)
        age_dtype = "<u4" if grace < 1 << 32 else "<u8"
        id_age = (watermark[id_dev] - id_ts).astype(age_dtype)
        id_bounds = np.searchsorted(id_dev, np.append(dirty, dirty[-1] + 1)).tolist()

        rows, w_dev = self._windows.rows(self._windows.open_of(mask, watermark), RECORD_WINDOW)
        window_bounds = np.searchsorted(w_dev, np.append(dirty, dirty[-1] + 1)).tolist()

        has_latest = self._latest_ts[dirty] != NONE_TS
        latest_dev, latest_sensor = np.nonzero(has_latest)
        latest_dev_index = dirty[latest_dev]
        latest = np.empty(len(latest_dev), RECORD_LATEST)
        latest["sensor"] = latest_sensor
        latest["value"] = self._latest_value[latest_dev_index, latest_sensor]
        latest["ts_us"] = self._latest_ts[latest_dev_index, latest_sensor]
        latest["event_id"] = self._latest_id[latest_dev_index, latest_sensor]
        latest["version"] = self._latest_version[latest_dev_index, latest_sensor]
        latest_bounds = np.searchsorted(latest_dev, np.arange(len(dirty) + 1)).tolist()
        places = [
            ("", "") if p is None else (p[1], p[2])
            for p in self._latest_dims[latest_dev_index, latest_sensor]
        ]
        raised_bits = (self._stale_raised[dirty] << np.arange(SENSOR_COUNT)).sum(axis=1).tolist()

        fences = self._fence[dirty].tolist()
        watermarks = watermark[dirty].tolist()
        episodes_of = self._episodes
        records = []
        for i, d in enumerate(dirty.tolist()):
            wm = watermarks[i]
            episodes = [
                episodes_of[(d, s, kind)]
                for s in range(SENSOR_COUNT)
                for kind in range(KINDS)
                if (d, s, kind) in episodes_of
            ]
            record = DeviceRecord(
                RECORD_FORMAT,
                fences[i],
                None if wm == NONE_TS else wm,
                id_bytes[id_bounds[i] : id_bounds[i + 1]].tobytes(),
                id_age[id_bounds[i] : id_bounds[i + 1]].tobytes(),
                rows[window_bounds[i] : window_bounds[i + 1]].tobytes(),
                latest[latest_bounds[i] : latest_bounds[i + 1]].tobytes(),
                episodes,
                places[latest_bounds[i] : latest_bounds[i + 1]],
                raised_bits[i],
            )
            records.append((self._names[d].encode(), _encoder.encode(record)))
        return records

    def load(
        self, records: Iterable[tuple[bytes, bytes]], rules_at: Callable[[int], RuleSet] | None = None
    ) -> None:
        """Replace the state by the one stored in `records` (a table partition as `snapshot` wrote it).

        `rules_at(revision)` gives the rule set of the revision the snapshot names (without it, only revision 0,
        the defaults, can be loaded)."""
        self._reset()
        self.snapshot_offset = -1
        revision = 0
        names: list[str] = []
        device_records: list[DeviceRecord] = []
        for key, value in records:
            if key == PARTITION_KEY:
                partition = _partition_decoder.decode(value)
                self.snapshot_offset = partition.snapshot_offset
                self.record_max = NONE_TS if partition.record_max is None else partition.record_max
                revision = partition.rules_revision
            else:
                names.append(key.decode())
                device_records.append(_device_decoder.decode(value))
        if rules_at is not None:
            self.rules = rules_at(revision)
        elif revision != self.rules.revision:
            raise ValueError(f"the stored state is judged by rule revision {revision}: pass rules_at")
        self.last_offset = self.snapshot_offset
        if not names:
            return
        devices = self._device_indices(names)
        decoded = list(zip(devices.tolist(), device_records, strict=True))
        self._fence[devices] = [r.fence for _, r in decoded]
        self._watermark[devices] = [NONE_TS if r.watermark is None else r.watermark for _, r in decoded]

        id_dev, id_list, id_ts = [], [], []
        win_dev, win_rows = [], []
        for d, record in decoded:
            ids = np.frombuffer(record.ids, "V16")
            id_dev.append(np.full(len(ids), d, np.int64))
            id_list.append(ids)
            id_ts.append(record.id_ts())
            rows = record.window_rows()
            win_dev.append(np.full(len(rows), d, np.int64))
            win_rows.append(rows)
            places = record.latest_places
            for j, row in enumerate(record.latest_rows().tolist()):
                sensor, value, ts, event_id, version = row
                self._latest_ts[d, sensor] = ts
                self._latest_value[d, sensor] = value
                self._latest_id[d, sensor] = event_id
                self._latest_version[d, sensor] = version
                if j < len(places):
                    self._latest_dims[d, sensor] = (self._names[d], *places[j])
            for episode in record.episodes:
                sensor = SENSORS.index(episode["sensor_type"])
                kind = alerts.kind_of(episode)
                self._episodes[(d, sensor, kind)] = episode
                if kind == STALE:
                    self._stale_open[d, sensor] = True
                else:
                    self._episode_active[d, sensor, kind] = True
            for sensor in range(SENSOR_COUNT):
                self._stale_raised[d, sensor] = bool(record.stale_raised >> sensor & 1)
        dev = np.concatenate(id_dev)
        ids = np.concatenate(id_list) if dev.size else np.empty(0, "V16")
        self._ids.replace(_id_keys(dev, ids), ids, np.concatenate(id_ts))

        dev = np.concatenate(win_dev)
        rows = np.concatenate(win_rows) if dev.size else np.empty(0, RECORD_WINDOW)
        size_s = rows["size_s"].astype(np.int64)
        start = rows["start_us"]
        bits = (size_s == WINDOW_SIZES_S[1]).astype(np.int64)
        w = self._windows
        w.key = _window_keys(dev, rows["sensor"], bits, start // (size_s * US))
        w.deadline = start + size_s * US + self.grace_us
        w.count = rows["count"].astype(np.int64)
        w.sum = rows["sum"].copy()
        w.sum_sq = rows["sum_sq"].copy()
        w.min = rows["min"].copy()
        w.max = rows["max"].copy()
        w.first = start + rows["first_after_us"]
        w.last = start + rows["last_after_us"]
        w.version = rows["version"].copy()
        w._take(np.argsort(w.key, kind="stable"))
        w.size_after_compaction = len(w)

        known = self._watermark[: len(self._names)]
        self.partition_watermark = int(known.max()) if len(known) else NONE_TS
        self._recompute_stale_floor()


def _dims_array(batch: DecodedBatch) -> np.ndarray:
    """The batch's (device_id, site_id, zone_id) triples as a numpy object array (indexable by `batch.dim`)."""
    out = np.empty(len(batch.dims), object)
    for i, dims in enumerate(batch.dims):
        out[i] = dims
    return out


def _uuid_text(event_id: np.void) -> str:
    h = event_id.tobytes().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
