"""A partition's state to stored records and back: what PartitionState.snapshot writes and PartitionState.load
reads (the formats are state_records.py's).

What a snapshot stores is a function of the events applied, not of how or when they were applied: forgotten ids and
final windows, which may linger in memory until the next compaction, are never written, and ids are written in a
canonical order. So a replay from an older snapshot stores the same bytes the first run did. Plain functions of the
state rather than methods only to keep state.py to one step per module; only state.py calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from telemetrypulse import alerts, stale, state_stale
from telemetrypulse.alerts import KINDS, STALE
from telemetrypulse.changes import SENSORS
from telemetrypulse.dedup_ids import id_keys
from telemetrypulse.rules import RuleSet
from telemetrypulse.state_records import (
    PARTITION_KEY,
    RECORD_FORMAT,
    RECORD_LATEST,
    RECORD_WINDOW,
    DeviceRecord,
    PartitionRecord,
    decode_device_record,
    decode_partition_record,
    encode_record,
)

if TYPE_CHECKING:
    from telemetrypulse.state import PartitionState

NONE_TS = stale.NONE_TS
SENSOR_COUNT = len(SENSORS)


def snapshot(state: PartitionState, next_rules: RuleSet | None) -> list[tuple[bytes, bytes]]:
    """PartitionState.snapshot: each device changed since the last snapshot, then the partition record."""
    count = len(state._names)
    dirty_mask = state._dirty[:count].copy()
    dirty = np.flatnonzero(dirty_mask)
    records: list[tuple[bytes, bytes]] = []
    if len(dirty):
        mask = np.zeros(len(state._fence), bool)
        mask[dirty] = True
        records = _device_records(state, dirty, mask)
    state.snapshot_offset = state.last_offset
    if next_rules is not None:
        state.rules = next_rules
    partition = PartitionRecord(
        RECORD_FORMAT,
        state.snapshot_offset,
        None if state.record_max == NONE_TS else state.record_max,
        state.rules.revision,
    )
    records.append((PARTITION_KEY, encode_record(partition)))
    state._dirty[:] = False
    return records


def _device_records(state: PartitionState, dirty: np.ndarray, mask: np.ndarray) -> list[tuple[bytes, bytes]]:
    watermark = state._watermark
    grace = state.grace_us
    id_dev, id_bytes, id_ts = state._ids.live_of(dirty, watermark, grace)
    age_dtype = "<u4" if grace < 1 << 32 else "<u8"
    id_age = (watermark[id_dev] - id_ts).astype(age_dtype)
    id_bounds = np.searchsorted(id_dev, np.append(dirty, dirty[-1] + 1)).tolist()

    rows, w_dev = state._windows.rows(state._windows.open_of(mask, watermark), RECORD_WINDOW)
    window_bounds = np.searchsorted(w_dev, np.append(dirty, dirty[-1] + 1)).tolist()

    has_latest = state._latest_ts[dirty] != NONE_TS
    latest_dev, latest_sensor = np.nonzero(has_latest)
    latest_dev_index = dirty[latest_dev]
    latest = np.empty(len(latest_dev), RECORD_LATEST)
    latest["sensor"] = latest_sensor
    latest["value"] = state._latest_value[latest_dev_index, latest_sensor]
    latest["ts_us"] = state._latest_ts[latest_dev_index, latest_sensor]
    latest["event_id"] = state._latest_id[latest_dev_index, latest_sensor]
    latest["version"] = state._latest_version[latest_dev_index, latest_sensor]
    latest_bounds = np.searchsorted(latest_dev, np.arange(len(dirty) + 1)).tolist()
    places = [
        ("", "") if p is None else (p[1], p[2]) for p in state._latest_dims[latest_dev_index, latest_sensor]
    ]
    raised_bits = (state._stale_raised[dirty] << np.arange(SENSOR_COUNT)).sum(axis=1).tolist()

    fences = state._fence[dirty].tolist()
    watermarks = watermark[dirty].tolist()
    episodes_of = state._episodes
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
        records.append((state._names[d].encode(), encode_record(record)))
    return records


def load(
    state: PartitionState,
    records: Iterable[tuple[bytes, bytes]],
    rules_at: Callable[[int], RuleSet] | None,
) -> None:
    """PartitionState.load: replace the state by the one stored in `records`."""
    state._reset()
    state.snapshot_offset = -1
    revision = 0
    names: list[str] = []
    device_records: list[DeviceRecord] = []
    for key, value in records:
        if key == PARTITION_KEY:
            partition = decode_partition_record(value)
            state.snapshot_offset = partition.snapshot_offset
            state.record_max = NONE_TS if partition.record_max is None else partition.record_max
            revision = partition.rules_revision
        else:
            names.append(key.decode())
            device_records.append(decode_device_record(value))
    if rules_at is not None:
        state.rules = rules_at(revision)
    elif revision != state.rules.revision:
        raise ValueError(f"the stored state is judged by rule revision {revision}: pass rules_at")
    state.last_offset = state.snapshot_offset
    if not names:
        return
    devices = state._device_indices(names)
    decoded = list(zip(devices.tolist(), device_records, strict=True))
    state._fence[devices] = [r.fence for _, r in decoded]
    state._watermark[devices] = [NONE_TS if r.watermark is None else r.watermark for _, r in decoded]

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
            state._latest_ts[d, sensor] = ts
            state._latest_value[d, sensor] = value
            state._latest_id[d, sensor] = event_id
            state._latest_version[d, sensor] = version
            if j < len(places):
                state._latest_dims[d, sensor] = (state._names[d], *places[j])
        for episode in record.episodes:
            sensor = SENSORS.index(episode["sensor_type"])
            kind = alerts.kind_of(episode)
            state._episodes[(d, sensor, kind)] = episode
            if kind == STALE:
                state._stale_open[d, sensor] = True
            else:
                state._episode_active[d, sensor, kind] = True
        for sensor in range(SENSOR_COUNT):
            state._stale_raised[d, sensor] = bool(record.stale_raised >> sensor & 1)
    dev = np.concatenate(id_dev)
    ids = np.concatenate(id_list) if dev.size else np.empty(0, "V16")
    state._ids.replace(id_keys(dev, ids), ids, np.concatenate(id_ts))

    dev = np.concatenate(win_dev)
    rows = np.concatenate(win_rows) if dev.size else np.empty(0, RECORD_WINDOW)
    state._windows.restore(dev, rows, state.grace_us)

    known = state._watermark[: len(state._names)]
    state.partition_watermark = int(known.max()) if len(known) else NONE_TS
    state_stale.recompute_floor(state)
