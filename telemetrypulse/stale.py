"""Stale sensors (SPEC §9): when a (device, sensor) is stale, judged against its partition's watermark.

The partition watermark is the greatest ts_event accepted in the partition. A (device, sensor) whose last accepted
reading — its latest value (SPEC §4: the greatest ts_event, a tie to the later one) — is more than STALE_AFTER_S
behind it is stale: exactly STALE_AFTER_S behind is not. One stale episode per latest reading: it opens once,
resolves at the sensor's next accepted reading, and is not raised again until a newer reading becomes the latest.

Checks happen in the partition's offset order, at *check points*: right after each accepted event (the watermark
it leaves) and right before each accepted event (see below). A sensor's own reading is applied before the check
after it, so a reading never makes its own sensor stale unless it is itself too old.

A silent partition. A live partition whose events all stop has no event-time progress, so nothing would ever be
stale. While a partition is *live* — the newest Kafka record time of its accepted events (I) is within
`live_lag_us` (the grace period) of its watermark (W) — event time is taken to advance with record time:
`W + (t − I)` at record time t. That value is checked right before each accepted event (t = the event's Kafka
record time: how long the partition was silent before it), and by the worker's clock (`by_clock`, t = now) while
the partition has nothing to read. Record times are in the log, so the check before an event gives the same answer
in every replay of the same topic, and whatever the clock check raised, the next event's check raises too (same
alert ids, same fields: they depend only on the last reading). A replay of historic data into other topics has
record times far from its event times, is never live, and raises only what its event times show.

Pure numpy; state.py owns the arrays and state_stale.py calls these.
"""

from __future__ import annotations

import numpy as np

NONE_TS = np.iinfo(np.int64).min


def check_points(
    ts: np.ndarray, record_us: np.ndarray, watermark: int, record_max: int, live_lag_us: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """For accepted events in offset order: the watermark after each (`after`), the value checked right before
    each (`before`: the watermark so far, advanced by the silence before it while live), and the largest such
    advance in the batch."""
    after = np.maximum.accumulate(np.maximum(ts, watermark))
    records = np.maximum.accumulate(np.maximum(record_us, record_max))
    prev_after = np.empty_like(after)
    prev_after[0] = watermark
    prev_after[1:] = after[:-1]
    prev_record = np.empty_like(records)
    prev_record[0] = record_max
    prev_record[1:] = records[:-1]
    known = (prev_after != NONE_TS) & (prev_record != NONE_TS)
    live = known & (prev_record - np.where(known, prev_after, 0) <= live_lag_us)
    gap = np.where(live, np.maximum(record_us - np.where(known, prev_record, 0), 0), 0)
    before = np.where(prev_after != NONE_TS, prev_after + gap, NONE_TS)
    return after, before, int(gap.max()) if len(gap) else 0


def is_live(watermark: int, record_max: int, live_lag_us: int) -> bool:
    return watermark != NONE_TS and record_max != NONE_TS and record_max - watermark <= live_lag_us


def clock_watermark(watermark: int, record_max: int, now_us: int, live_lag_us: int) -> int:
    """The watermark of a silent partition by the clock: advanced by the time since its newest record while live."""
    if not is_live(watermark, record_max, live_lag_us):
        return watermark
    return watermark + max(0, now_us - record_max)


def first_exceeding(
    after: np.ndarray, before: np.ndarray, since: int, until: int, threshold: int
) -> tuple[int, int] | None:
    """The first check point that passes `threshold` between the check after event `since` (-1: from the start of
    the batch) and the check before event `until` (len: to the end), as (event index, 0 before / 2 after)."""
    best: tuple[int, int] | None = None
    low = max(since, 0)
    if low < until and after[until - 1] > threshold:  # `after` ascends: a binary search
        best = (low + int(np.searchsorted(after[low:until], threshold, side="right")), 2)
    hi = min(until + 1, len(before))
    window = before[since + 1 : hi]
    if len(window):
        hits = np.flatnonzero(window > threshold)
        if len(hits):
            candidate = (since + 1 + int(hits[0]), 0)
            if best is None or candidate < best:
                best = candidate
    return best
