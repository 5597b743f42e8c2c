"""The threshold-alert step of a partition's state (SPEC §9): which threshold episodes a batch's accepted events
open, move (peak) and resolve, under the rules in force.

alerts.py holds the episode rules for one reading (`alerts.step`); this module picks the (device, sensor) groups and
directions where anything can happen — an episode open or pending, or a reading past some enabled rule's opening
bound — and walks only those, each in offset order. A plain function of the state rather than a method only to
keep state.py to one step per module; only state.py calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from telemetrypulse import alerts
from telemetrypulse.alerts import ABOVE, BELOW, Reading
from telemetrypulse.batch_result import AcceptedEvents, AlertOutputs, uuid_text
from telemetrypulse.changes import SENSORS
from telemetrypulse.decode import DecodedBatch

if TYPE_CHECKING:
    from telemetrypulse.state import PartitionState

SENSOR_COUNT = len(SENSORS)


def step(state: PartitionState, batch: DecodedBatch, acc: AcceptedEvents, outputs: AlertOutputs) -> None:
    """Threshold episodes (alerts.step) under the rules in force, walked only over the (device, sensor) groups
    and directions where an episode is open or pending, or a reading could violate some enabled rule."""
    rules = state.rules
    dev, sensor, value = acc.dev, acc.sensor, acc.value
    up = state._episode_active[dev, sensor, ABOVE] | (value > rules.open_above_bound[sensor])
    down = state._episode_active[dev, sensor, BELOW] | (value < rules.open_below_bound[sensor])
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
        reading = Reading(uuid_text(acc.ids[i]), device_id, site_id, zone_id, SENSORS[s], v, t)
        for kind in directions[g]:
            above = kind == ABOVE
            rule = rules.applicable(device_id, site_id, zone_id, s, above, t)
            key = (d, s, kind)
            episode, message, peak_moved = alerts.step(state._episodes.get(key), reading, rule, above)
            if episode is None:
                state._episodes.pop(key, None)
            else:
                state._episodes[key] = episode
            state._episode_active[d, s, kind] = episode is not None
            if message is not None:
                outputs.message((o, AlertOutputs.AT, kind), message)
            elif peak_moved:
                outputs.row((o, AlertOutputs.AT, kind), dict(episode))
