"""The stale-sensor step of a partition's state (SPEC §9): which stale episodes a batch, or the worker's clock on a
silent partition, opens and resolves.

stale.py says when a sensor is stale (check points, pure numpy); this module applies it to a PartitionState: it
reads the latest values and writes the stale episodes, the per-sensor raised/open flags and the *stale floor* — a
lower bound of the ts of every latest value with no stale episode raised yet, so that while the watermark stays
within STALE_AFTER_S of it no sensor can turn stale and the whole arrays need not be looked at. These are plain
functions of the state rather than methods only to keep state.py to one step per module; they touch the state's
arrays exactly as its own methods do, and only state.py calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from telemetrypulse import alerts, stale
from telemetrypulse.alerts import STALE
from telemetrypulse.batch_result import AcceptedEvents, AlertOutputs, BatchResult, uuid_text
from telemetrypulse.changes import SENSORS
from telemetrypulse.decode import DecodedBatch
from telemetrypulse.state_arrays import group_starts

if TYPE_CHECKING:
    from telemetrypulse.state import PartitionState

NONE_TS = stale.NONE_TS
NO_FLOOR = np.iinfo(np.int64).max  # no latest value waits to turn stale
SENSOR_COUNT = len(SENSORS)


def step(
    state: PartitionState, batch: DecodedBatch, acc: AcceptedEvents, outputs: AlertOutputs
) -> dict[tuple[int, int], bool]:
    """Stale episodes opened and resolved by the batch, judged at every check point in offset order (stale.py)
    against the latest values as they were before the batch. Returns, per (device, sensor) followed here, whether
    a stale episode is raised for its latest value after the batch.

    Bounds first: after an event, the latest value of its sensor is at least as new as the event, and no check
    point before the sensor's next event exceeds the watermark there plus the batch's largest silence advance;
    a sensor without events in the batch needs a look only when the batch's highest check point passes the
    floor. Only the sensors these bounds cannot clear are followed one event at a time."""
    n = len(acc.dev)
    stale_us = state.stale_us
    order = np.argsort(acc.position, kind="stable")  # offset order
    ts = acc.ts[order]
    after, before, gap_max = stale.check_points(
        ts, acc.record[order], state.partition_watermark, state.record_max, state.live_lag_us
    )
    group = (acc.dev * SENSOR_COUNT + acc.sensor)[order]
    by_group = np.argsort(group, kind="stable")
    grouped = group[by_group]
    starts = group_starts(grouped)
    ends = np.append(starts[1:], n)
    following = np.full(n, n, np.int64)  # the next event of the same (device, sensor), in offset order
    same = grouped[1:] == grouped[:-1]
    following[by_group[:-1][same]] = by_group[1:][same]
    may_turn = after[following - 1] + gap_max > ts + stale_us
    first = by_group[starts]
    g_dev, g_sensor = grouped[starts] // SENSOR_COUNT, grouped[starts] % SENSOR_COUNT
    before_first = np.where(first > 0, after[np.maximum(first - 1, 0)], state.partition_watermark) + gap_max
    old = state._latest_ts[g_dev, g_sensor]
    old_may_turn = (old != NONE_TS) & ~state._stale_raised[g_dev, g_sensor] & (before_first > old + stale_us)
    follow = (
        old_may_turn | state._stale_open[g_dev, g_sensor] | np.logical_or.reduceat(may_turn[by_group], starts)
    )

    walked: dict[tuple[int, int], bool] = {}
    offsets = acc.offset[order]
    highest = max(int(after[-1]), int(before.max()))
    if highest > state._stale_floor + stale_us:
        count = len(state._names)
        latest_ts = state._latest_ts[:count]
        candidates = (latest_ts != NONE_TS) & ~state._stale_raised[:count] & (latest_ts + stale_us < highest)
        candidates[g_dev, g_sensor] = False  # sensors with events in the batch are judged below
        for d, s in zip(*(a.tolist() for a in np.nonzero(candidates)), strict=True):
            threshold = int(state._latest_ts[d, s]) + stale_us
            index, when = stale.first_exceeding(after, before, -1, n, threshold)
            _raise(state, d, s, outputs, (int(offsets[index]), when, state._names[d], s))
            walked[(d, s)] = True
        state._floor_stale = True

    for g in np.flatnonzero(follow).tolist():
        d, s = int(g_dev[g]), int(g_sensor[g])
        walked[(d, s)] = _walk(
            state, batch, acc, order, after, before, by_group[starts[g] : ends[g]], d, s, outputs
        )
    return walked


def _walk(
    state: PartitionState, batch, acc, order, after, before, events: np.ndarray, d: int, s: int, outputs
) -> bool:
    """SPEC §9 event by event for one (device, sensor) of the batch; returns whether a stale episode is raised for
    its latest value at the end."""
    n = len(order)
    stale_us = state.stale_us
    has_old = state._latest_ts[d, s] != NONE_TS
    latest_ts = int(state._latest_ts[d, s]) if has_old else None
    latest_at = None  # the batch's accepted event (index) that is the latest value; None: the stored one
    raised = bool(state._stale_raised[d, s])
    episode = state._episodes.get((d, s, STALE))
    since = -1
    for k in [*events.tolist(), n]:  # n: the end of the batch, after the sensor's last event
        if latest_ts is not None and not raised:
            hit = stale.first_exceeding(after, before, since, k, latest_ts + stale_us)
            if hit is not None:
                key = (int(acc.offset[order[hit[0]]]), hit[1], state._names[d], s)
                episode = _raise(state, d, s, outputs, key, batch, acc, latest_at)
                raised = True
        if k == n:
            break
        a = int(order[k])
        ts = int(acc.ts[a])
        if episode is not None:
            resolved = alerts.stale_resolved(episode, ts, uuid_text(acc.ids[a]))
            outputs.message((int(acc.offset[a]), AlertOutputs.AT, STALE), resolved)
            episode = None
        if latest_ts is None or ts >= latest_ts:
            latest_ts, latest_at, raised = ts, a, False
        since = k
    if episode is None:
        state._episodes.pop((d, s, STALE), None)
    else:
        state._episodes[(d, s, STALE)] = episode
    state._stale_open[d, s] = episode is not None
    return raised


def _raise(
    state: PartitionState, d: int, s: int, outputs: AlertOutputs, key: tuple, batch=None, acc=None, at=None
) -> dict:
    """Open the stale episode of (device d, sensor s) for its latest value: the stored one, or the batch's
    accepted event `at`."""
    if at is None:
        place = state._latest_dims[d, s]
        device_id, site_id, zone_id = place if place is not None else (state._names[d], "", "")
        value, ts = float(state._latest_value[d, s]), int(state._latest_ts[d, s])
        event_id = uuid_text(state._latest_id[d, s])
    else:
        device_id, site_id, zone_id = batch.dims[batch.dim[acc.position[at]]]
        value, ts, event_id = float(acc.value[at]), int(acc.ts[at]), uuid_text(acc.ids[at])
    episode = alerts.stale_opened(
        device_id, site_id, zone_id, SENSORS[s], value, ts, event_id, state.stale_after_s
    )
    outputs.message(key, dict(episode))
    state._episodes[(d, s, STALE)] = episode
    state._stale_open[d, s] = True
    state._stale_raised[d, s] = True
    state._dirty[d] = True
    return episode


def settle(
    state: PartitionState, acc: AcceptedEvents, latest: np.ndarray, walked: dict[tuple[int, int], bool]
) -> None:
    """After the latest values moved: a new latest value has no stale episode raised, except where the walk
    followed the sensor and says so; the floor takes the batch's new latest values in."""
    state._stale_raised[acc.dev[latest], acc.sensor[latest]] = False
    for (d, s), raised in walked.items():
        state._stale_raised[d, s] = raised
    if state._floor_stale:
        recompute_floor(state)
    else:
        state._stale_floor = min(state._stale_floor, int(acc.ts.min()))


def recompute_floor(state: PartitionState) -> None:
    count = len(state._names)
    waiting = state._latest_ts[:count][(state._latest_ts[:count] != NONE_TS) & ~state._stale_raised[:count]]
    state._stale_floor = int(waiting.min()) if len(waiting) else NO_FLOOR
    state._floor_stale = False


def by_clock(state: PartitionState, now_us: int) -> BatchResult:
    """Stale episodes of a silent partition by the worker's clock (stale.py): for a live partition with nothing
    to read, the watermark advanced by the time since its newest record. Changes only stale episodes."""
    result = BatchResult()
    if not state.stale_us:
        return result
    watermark = stale.clock_watermark(state.partition_watermark, state.record_max, now_us, state.live_lag_us)
    if watermark == NONE_TS or watermark <= state._stale_floor + state.stale_us:
        return result
    count = len(state._names)
    latest_ts = state._latest_ts[:count]
    due = (latest_ts != NONE_TS) & ~state._stale_raised[:count] & (latest_ts + state.stale_us < watermark)
    outputs = AlertOutputs()
    for d, s in zip(*(a.tolist() for a in np.nonzero(due)), strict=True):
        _raise(state, d, s, outputs, (state.last_offset, AlertOutputs.AFTER, state._names[d], s))
    recompute_floor(state)
    outputs.into(result, emit=True)
    return result
