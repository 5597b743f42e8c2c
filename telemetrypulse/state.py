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

This module owns the per-device columns, judges each event (fence, duplicate, too late: SPEC §3–§4), keeps the
latest values, and runs a batch through the other steps, which live in sibling modules, one each: dedup_ids.py
(the ids kept), open_windows.py (the windows), state_thresholds.py and state_stale.py (threshold and stale alert
episodes), batch_result.py (what a batch produces), state_snapshot.py with state_records.py (stored records and
their formats).

Pure logic: numpy, msgspec and the project's pure modules; no Faust, Kafka or database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from telemetrypulse import stale, state_snapshot, state_stale, state_thresholds
from telemetrypulse.batch_result import (
    ACCEPTED,
    DUPLICATE,
    LATE,
    AcceptedEvents,
    AlertOutputs,
    BatchResult,
    add_change_rows,
)
from telemetrypulse.changes import SENSORS
from telemetrypulse.decode import DecodedBatch
from telemetrypulse.dedup_ids import MAX_DEVICES, IdStore, id_keys
from telemetrypulse.open_windows import OpenWindows
from telemetrypulse.rules import RuleSet, default_rules
from telemetrypulse.state_arrays import group_starts

US = 1_000_000
NONE_TS = stale.NONE_TS  # "no watermark" / "no latest value": below every representable ts_event
SENSOR_COUNT = len(SENSORS)


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
        self._ids = IdStore()
        self._windows = OpenWindows()
        self.partition_watermark = NONE_TS  # greatest ts_event accepted in the partition
        self.record_max = NONE_TS  # newest Kafka record time of an accepted event
        # A lower bound of the ts of every latest value with no stale episode raised yet: while the watermark
        # stays within stale_after of it, nothing can turn stale and the whole arrays need not be looked at.
        self._stale_floor = state_stale.NO_FLOOR
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
        if count > MAX_DEVICES:
            raise ValueError(f"more than {MAX_DEVICES} devices in one partition")
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
        starts = group_starts(dev)
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
        id_key = id_keys(dev, ids)

        # 2–4. Duplicate, too late or accepted.
        status = self._judge(dev, ts, ids, id_key)
        counts = np.bincount(status, minlength=4)
        result.duplicates, result.late, result.accepted = int(counts[1]), int(counts[2]), int(counts[3])

        accepted = status == ACCEPTED
        acc = AcceptedEvents(
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
            group = group_starts(acc.dev)
            touched = acc.dev[group]
            self._watermark[touched] = np.maximum(
                self._watermark[touched], np.maximum.reduceat(acc.ts, group)
            )
            self._ids.add(id_key[accepted], acc.ids, acc.ts, self._watermark, self.grace_us)
            windows = self._windows.fold(acc.dev, acc.sensor, acc.ts, acc.value, acc.offset, self.grace_us)
            outputs = AlertOutputs()
            state_thresholds.step(self, batch, acc, outputs)
            # Stale episodes are judged against the latest values as they were before the batch: first.
            walked = state_stale.step(self, batch, acc, outputs) if self.stale_us else None
            latest = self._update_latest(batch, acc)
            if walked is not None:
                state_stale.settle(self, acc, latest, walked)
            self.partition_watermark = max(self.partition_watermark, int(acc.ts.max()))
            self.record_max = max(self.record_max, int(acc.record.max()))
            outputs.into(result, emit)
        if emit:
            add_change_rows(result, batch, position, status, ingest_us, acc, self._windows, windows, latest)
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
            starts = group_starts(dev)
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
        first[group_starts(dev)] = True
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

    def _update_latest(self, batch: DecodedBatch, acc: AcceptedEvents) -> np.ndarray:
        """Latest value per (device, sensor): greatest ts_event, a tie to the later offset. Returns the indices (into
        the accepted events) of the events that became latest."""
        group_key = acc.dev * SENSOR_COUNT + acc.sensor
        order = np.lexsort((acc.offset, acc.ts, group_key))
        best = order[np.append(group_starts(group_key[order])[1:], len(order)) - 1]
        d, s = acc.dev[best], acc.sensor[best]
        take = acc.ts[best] >= self._latest_ts[d, s]  # NONE_TS: no latest value yet
        best, d, s = best[take], d[take], s[take]
        self._latest_ts[d, s] = acc.ts[best]
        self._latest_value[d, s] = acc.value[best]
        self._latest_id[d, s] = acc.ids[best]
        self._latest_version[d, s] = acc.offset[best]
        self._latest_dims[d, s] = _dims_array(batch)[batch.dim[acc.position[best]]]
        return best

    # -- stale sensors (state_stale.py) ----------------------------------------------------------------------

    def stale_by_clock(self, now_us: int) -> BatchResult:
        """Stale episodes of a silent partition by the worker's clock (stale.py): for a live partition with nothing
        to read, the watermark advanced by the time since its newest record. Changes only stale episodes."""
        return state_stale.by_clock(self, now_us)

    # -- snapshots (state_snapshot.py) ----------------------------------------------------------------------

    def snapshot(self, next_rules: RuleSet | None = None) -> list[tuple[bytes, bytes]]:
        """The records to store now: each device changed since the last snapshot, then the partition record (its
        snapshot_offset = last_offset; last, so a partly stored snapshot never claims to be complete).

        `next_rules`: the rules the events after this snapshot are judged by, from now on (the only moment they
        change; the partition record keeps their revision).
        The changed set is cleared here: if the records cannot all be stored, this state no longer knows what the
        table lacks, and must be reloaded from the table (replaying from its snapshot offset) before going on.
        """
        return state_snapshot.snapshot(self, next_rules)

    def load(
        self, records: Iterable[tuple[bytes, bytes]], rules_at: Callable[[int], RuleSet] | None = None
    ) -> None:
        """Replace the state by the one stored in `records` (a table partition as `snapshot` wrote it).

        `rules_at(revision)` gives the rule set of the revision the snapshot names (without it, only revision 0,
        the defaults, can be loaded)."""
        state_snapshot.load(self, records, rules_at)


def _dims_array(batch: DecodedBatch) -> np.ndarray:
    """The batch's (device_id, site_id, zone_id) triples as a numpy object array (indexable by `batch.dim`)."""
    out = np.empty(len(batch.dims), object)
    for i, dims in enumerate(batch.dims):
        out[i] = dims
    return out
