"""The accepted event ids a partition still remembers, so that a second delivery of an event is a duplicate (SPEC §3).

An id counts while its ts_event is within the grace of its device's watermark. Ids are looked up by an int64 *id
key*: the device index in the high bits and a short hash of the 16-byte id below, so that a whole batch can be
checked against everything kept with one sorted search. Equal keys only say "maybe the same id": state.py sends
such a device down its exact per-event path, which compares whole ids — a hash collision costs time, never a
wrong verdict (tests/unit/test_state.py shrinks the hash to 1 bit to prove it).
"""

from __future__ import annotations

import math

import numpy as np

from telemetrypulse.stale import NONE_TS
from telemetrypulse.state_arrays import in_sorted, ranges

# Id keys: device index in the high bits, 40 bits of a hash of the 16-byte id below.
_ID_HASH_BITS = 40
MAX_DEVICES = 1 << (63 - _ID_HASH_BITS)  # keys stay non-negative int64 (8,388,608 devices per partition)
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX3 = np.uint64(0x165667B19E3779F9)


def id_keys(devices: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The id key of each (device index, 16-byte id)."""
    halves = np.ascontiguousarray(ids).view("<u8").reshape(-1, 2)
    h = (halves[:, 0] * _MIX1) ^ (halves[:, 1] * _MIX2)
    h ^= h >> np.uint64(29)
    h *= _MIX3
    return (devices.astype(np.int64) << _ID_HASH_BITS) | (h >> np.uint64(64 - _ID_HASH_BITS)).astype(np.int64)


class IdStore:
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
        found = in_sorted(self.levels[0][0], keys)
        found |= in_sorted(self.levels[1][0], keys)
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
            index = ranges(
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
