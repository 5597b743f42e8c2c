"""INTERIM (to be replaced by the vectorized state.PartitionState): the PartitionState interface over the old
per-device JSON state, so the Faust side of the batch engine can be built and tested meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import orjson

from telemetrypulse import changes
from telemetrypulse.changes import SENSOR_CODES, SENSORS, AlertRow
from telemetrypulse.decode import DecodedBatch
from telemetrypulse.models import Event
from telemetrypulse.state import BatchOutput, DeviceState, Source, apply_events

PARTITION_KEY = b"\x00partition"


def record_fence(value: bytes) -> int:
    if value[:1] == b"P":
        return int(value[1:])
    return orjson.loads(value)["o"]


@dataclass
class BatchResult:
    dims: list[tuple[str, str, str]] = field(default_factory=list)
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0, changes.RAW_ROW))
    windows: np.ndarray = field(default_factory=lambda: np.zeros(0, changes.WINDOW_ROW))
    latest: np.ndarray = field(default_factory=lambda: np.zeros(0, changes.LATEST_ROW))
    alert_messages: list[dict] = field(default_factory=list)
    alert_rows: list[AlertRow] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    replayed: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0


class PartitionState:
    def __init__(self, partition: int, grace_s: int) -> None:
        self.partition = partition
        self.grace_s = grace_s
        self.snapshot_offset = -1
        self.last_offset = -1
        self.devices: dict[str, DeviceState] = {}
        self.dirty: set[str] = set()

    def device_count(self) -> int:
        return len(self.devices)

    def load(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            if key == PARTITION_KEY:
                self.snapshot_offset = self.last_offset = int(value[1:])
            else:
                self.devices[key.decode()] = DeviceState.from_bytes(value)

    def snapshot(self) -> list[tuple[bytes, bytes]]:
        records = [(d.encode(), self.devices[d].to_bytes()) for d in sorted(self.dirty)]
        self.dirty.clear()
        self.snapshot_offset = self.last_offset
        records.append((PARTITION_KEY, b"P%d" % self.last_offset))
        return records

    def apply(
        self,
        batch: DecodedBatch,
        offsets: np.ndarray,
        ingest_us: np.ndarray,
        *,
        last_offset: int,
        emit: bool = True,
    ) -> BatchResult:
        per_device: dict[str, list[tuple[Event, Source]]] = {}
        for i in range(len(batch)):
            device, site, zone = batch.dims[batch.dim[i]]
            event = Event(
                str(uuid.UUID(bytes=batch.event_id[i].tobytes())),
                device,
                site,
                zone,
                SENSORS[batch.sensor[i]],
                float(batch.value[i]),
                int(batch.ts_us[i]),
                SENSOR_UNITS[SENSORS[batch.sensor[i]]] if batch.unit_given[i] else None,
            )
            per_device.setdefault(device, []).append(
                (event, Source(self.partition, int(offsets[i]), int(ingest_us[i])))
            )
        out = BatchOutput()
        for device, events in per_device.items():
            state = self.devices.setdefault(device, DeviceState())
            apply_events(state, events, self.grace_s, out)
            self.dirty.add(device)
        self.last_offset = max(self.last_offset, last_offset)
        result = BatchResult(
            accepted=out.accepted,
            duplicates=out.duplicates,
            late=out.late,
            replayed=out.replayed,
            alerts_opened=out.alerts_opened,
            alerts_resolved=out.alerts_resolved,
        )
        if not emit:
            return result
        dims: dict[tuple[str, str, str], int] = {}
        raw = np.zeros(len(out.stored), changes.RAW_ROW)
        for i, (eid, dev, site, zone, sensor, value, ts, unit, ingest, late) in enumerate(out.stored):
            raw[i] = (
                dims.setdefault((dev, site, zone), len(dims)),
                uuid.UUID(eid).bytes,
                SENSOR_CODES[sensor],
                late,
                unit is not None,
                value,
                ts,
                ingest,
            )
        windows = np.zeros(len(out.windows), changes.WINDOW_ROW)
        for i, (
            size,
            dev,
            sensor,
            start,
            site,
            zone,
            count,
            total,
            low,
            high,
            first,
            last,
            version,
        ) in enumerate(out.windows.values()):
            windows[i] = (
                dims.setdefault((dev, site, zone), len(dims)),
                SENSOR_CODES[sensor],
                size,
                start,
                count,
                total,
                low,
                high,
                0.0,
                first,
                last,
                version,
            )
        latest = np.zeros(len(out.latest), changes.LATEST_ROW)
        for i, (dev, sensor, site, zone, value, ts, eid, version) in enumerate(out.latest.values()):
            latest[i] = (
                dims.setdefault((dev, site, zone), len(dims)),
                SENSOR_CODES[sensor],
                value,
                ts,
                uuid.UUID(eid).bytes,
                version,
            )
        result.dims = list(dims)
        result.raw, result.windows, result.latest = raw, windows, latest
        result.alert_messages = out.alert_messages
        result.alert_rows = [
            AlertRow(**{k: v for k, v in a.items() if k in AlertRow.__struct_fields__})
            for a in out.alert_rows.values()
        ]
        return result


from telemetrypulse.models import SENSOR_UNITS  # noqa: E402
