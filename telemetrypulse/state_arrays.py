"""Vectorised numpy steps the partition state is built from: runs of equal keys, membership in a sorted array,
index ranges, and sums folded in order.

They exist so that a whole batch can be judged and folded with array operations instead of a Python loop per
event. `sequential_sums` is the one with a contract beyond speed: it adds values one at a time, left to right,
because float addition is not associative and a window's sum must not depend on where the stream was cut into
batches (state.py's module docstring).
"""

from __future__ import annotations

import numpy as np

# A group of more than this many values of one window in one batch has its sums folded on its own (np.add.accumulate
# is sequential); shorter groups are folded side by side, one position at a time.
_LONG_GROUP = 32


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.empty(0, np.int64)
    change = np.empty(len(sorted_keys), bool)
    change[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def in_sorted(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Membership of `values` in an ascending array."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), bool)
    pos = np.searchsorted(sorted_values, values)
    pos[pos == len(sorted_values)] = 0
    return sorted_values[pos] == values


def ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The indices of the ranges [starts[i], ends[i]), concatenated."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(total)


def sequential_sums(
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
        group_first = starts[by_length]
        running = total[by_length]
        # active[k]: how many groups (longest first) have a (k+1)-th value
        active = np.searchsorted(-group_lengths, -np.arange(1, int(group_lengths[0]) + 1), side="right")
        for k, count in enumerate(active.tolist()):
            running[:count] += values[group_first[:count] + k]
        total[by_length] = running
    return total
