"""The 5 and 15 minute windows of a partition that are not final yet, and how a batch's accepted events fold into
them (SPEC §5; windows.py has the rules, this module the columns).

Each window is one int64 *window key* — (device, sensor, size) above a 32-bit window number — so that one device's
windows are contiguous in key order and a whole batch can be matched against the open windows with one sorted
search. Sums are folded one value at a time in offset order (state_arrays.sequential_sums), so a window's sum does
not depend on how the stream was cut into batches.
"""

from __future__ import annotations

import numpy as np

from telemetrypulse.state_arrays import group_starts, sequential_sums
from telemetrypulse.windows import WINDOW_SIZES_S

US = 1_000_000

# Window numbers of every datetime (years 1–9999) fit in ±2^31.
_WN_BIAS = 1 << 31
_WINDOW_DEVICE_SHIFT = 35  # 32 bits of window number, 1 of size, 2 of sensor
_SIZE_BIT = {size_s: bit for bit, size_s in enumerate(WINDOW_SIZES_S)}
_SIZE_OF_BIT = np.array(WINDOW_SIZES_S, np.int64)

_WINDOW_COLUMNS = ("key", "deadline", "count", "sum", "sum_sq", "min", "max", "first", "last", "version")


def _window_keys(
    devices: np.ndarray, sensors: np.ndarray, size_bit: int, window_number: np.ndarray
) -> np.ndarray:
    head = (devices.astype(np.int64) << 3) | (sensors.astype(np.int64) << 1) | size_bit
    return (head << 32) | (window_number + _WN_BIAS)


def _split_window_keys(keys: np.ndarray):
    """(device, sensor code, size_s, start_us) of window keys."""
    size_s = _SIZE_OF_BIT[(keys >> 32) & 1]
    start = ((keys & 0xFFFFFFFF) - _WN_BIAS) * size_s * US
    return keys >> _WINDOW_DEVICE_SHIFT, (keys >> 33) & 3, size_s, start


class OpenWindows:
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
        starts = group_starts(keys)
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
        sums = sequential_sums(initial, np.column_stack([v, v * v]), starts, lengths)

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

    def restore(self, dev: np.ndarray, rows: np.ndarray, grace_us: int) -> None:
        """Replace the windows by stored ones: RECORD_WINDOW `rows`, of the device indices `dev`."""
        size_s = rows["size_s"].astype(np.int64)
        start = rows["start_us"]
        bits = (size_s == WINDOW_SIZES_S[1]).astype(np.int64)
        self.key = _window_keys(dev, rows["sensor"], bits, start // (size_s * US))
        self.deadline = start + size_s * US + grace_us
        self.count = rows["count"].astype(np.int64)
        self.sum = rows["sum"].copy()
        self.sum_sq = rows["sum_sq"].copy()
        self.min = rows["min"].copy()
        self.max = rows["max"].copy()
        self.first = start + rows["first_after_us"]
        self.last = start + rows["last_after_us"]
        self.version = rows["version"].copy()
        self._take(np.argsort(self.key, kind="stable"))
        self.size_after_compaction = len(self)
