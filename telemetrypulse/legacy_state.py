"""The per-device JSON state the worker runs today (one record per device, events applied one by one).

Superseded by `telemetrypulse.state.PartitionState` (issue 11, the batch engine); kept, unchanged, only while
agents/process.py, topology.py and recovery.py still use it. Delete this module when the worker has moved.

A device's whole stream state, and how one batch of its events changes it.

All state of one device — fence, watermark, recent event ids, open windows, latest values, open alert
episodes — is one record, written once per batch as one changelog message. One record means one
atomic write: after a crash the record is either wholly before or wholly after a batch, so the fence
(source partition and offset of the last event applied) tells exactly which replayed events to skip.

Pure logic: no Faust, no Kafka, no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from telemetrypulse import alerts, windows
from telemetrypulse.models import Event

# Rows per record of the changes topic: a row is at most ~600 bytes with 64-character identifiers.
MAX_ITEMS_PER_CHANGES_MESSAGE = 1500


@dataclass(slots=True)
class DeviceState:
    partition: int = -1
    offset: int = -1  # the fence: last source offset applied to this record
    watermark_us: int | None = None  # largest accepted ts_event
    seen: dict[str, int] = field(default_factory=dict)  # accepted event_id -> ts_event_us
    windows: dict[str, list] = field(default_factory=dict)  # window key -> aggregate (windows.py)
    latest: dict[str, list] = field(
        default_factory=dict
    )  # sensor -> [value, ts_us, event_id, site, zone, version]
    open_alerts: dict[str, dict] = field(default_factory=dict)  # sensor -> open episode

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "p": self.partition,
                "o": self.offset,
                "wm": self.watermark_us,
                "seen": self.seen,
                "win": self.windows,
                "latest": self.latest,
                "alerts": self.open_alerts,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> DeviceState:
        if not raw:
            return cls()
        d = orjson.loads(raw)
        return cls(d["p"], d["o"], d["wm"], d["seen"], d["win"], d["latest"], d["alerts"])

    def already_applied(self, partition: int, offset: int) -> bool:
        return partition == self.partition and offset <= self.offset


def fence_of(raw: bytes) -> int:
    """The fence (source offset of the last event applied) of a serialized DeviceState."""
    return orjson.loads(raw)["o"]


@dataclass(slots=True)
class Source:
    """Where an event came from, and when the pipeline received it (the Kafka record time)."""

    partition: int
    offset: int
    ingest_us: int


@dataclass(slots=True)
class BatchOutput:
    """Everything a batch produces; each part is idempotent to re-send (see the sinks)."""

    stored: list[tuple] = field(default_factory=list)  # raw rows: accepted and too-late events
    windows: dict[tuple, list] = field(default_factory=dict)  # (device, sensor, size, start) -> row
    latest: dict[tuple, list] = field(default_factory=dict)  # (device, sensor) -> row
    alert_messages: list[dict] = field(default_factory=list)  # open / resolved, for telemetry.alerts
    alert_rows: dict[str, dict] = field(default_factory=dict)  # alert_id -> row (peaks move while open)
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    replayed: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0

    def merge(self, other: BatchOutput) -> None:
        self.stored.extend(other.stored)
        self.windows.update(other.windows)
        self.latest.update(other.latest)
        self.alert_messages.extend(other.alert_messages)
        self.alert_rows.update(other.alert_rows)
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.late += other.late
        self.replayed += other.replayed
        self.alerts_opened += other.alerts_opened
        self.alerts_resolved += other.alerts_resolved

    def changes_messages(self, max_items: int = MAX_ITEMS_PER_CHANGES_MESSAGE) -> list[bytes]:
        """The records for the internal changes topic that the PostgreSQL sink reads.

        At most `max_items` rows a record, so that one stays under the 1 MB message limit of managed
        Kafka services even with identifiers at their longest. Every row is complete (a window carries
        its whole aggregate and version), so the sink may write them in any grouping; their order
        across records is kept, raw events first: PostgreSQL never shows a window counting an event
        whose raw row is not there yet.
        """
        rows = [
            *(("events", row) for row in self.stored),
            *(("windows", row) for row in self.windows.values()),
            *(("latest", row) for row in self.latest.values()),
            *(("alerts", row) for row in self.alert_rows.values()),
        ]
        records = []
        for i in range(0, len(rows), max_items):
            record: dict[str, list] = {"events": [], "windows": [], "latest": [], "alerts": []}
            for kind, row in rows[i : i + max_items]:
                record[kind].append(row)
            records.append(orjson.dumps(record))
        return records


def stored_row(event: Event, source: Source, late: bool) -> tuple:
    return (
        event.event_id,
        event.device_id,
        event.site_id,
        event.zone_id,
        event.sensor_type,
        event.value,
        event.ts_event_us,
        event.unit,
        source.ingest_us,
        late,
    )


def apply_events(
    state: DeviceState, events: list[tuple[Event, Source]], grace_s: int, output: BatchOutput | None = None
) -> BatchOutput:
    """Apply one device's events, in topic order, to its state (in place); return what to emit.

    The order of the checks is SPEC §3–§4: an event already applied (fence) is skipped; an event id
    already accepted is a duplicate; an event more than `grace` older than the watermark is too late
    (stored raw, nothing else); everything else is accepted.
    """
    out = output if output is not None else BatchOutput()
    grace_us = grace_s * 1_000_000
    touched_windows: set[str] = set()
    touched_latest: set[str] = set()
    for event, source in events:
        if state.already_applied(source.partition, source.offset):
            out.replayed += 1
            continue
        state.partition, state.offset = source.partition, source.offset
        if event.event_id in state.seen:
            out.duplicates += 1
            continue
        watermark = state.watermark_us
        if watermark is not None and watermark - event.ts_event_us > grace_us:
            out.late += 1
            out.stored.append(stored_row(event, source, late=True))
            continue
        out.accepted += 1
        out.stored.append(stored_row(event, source, late=False))
        if watermark is None or event.ts_event_us > watermark:
            state.watermark_us = event.ts_event_us
        state.seen[event.event_id] = event.ts_event_us
        _fold_windows(state, event, source.offset, touched_windows)
        _update_latest(state, event, source.offset, touched_latest)
        _step_alert(state, event, out)

    device_id = events[0][0].device_id if events else ""
    for key in touched_windows:
        aggregate = state.windows.get(key)
        if aggregate is not None:
            sensor, size_s, start_us = windows.parse_window_key(key)
            out.windows[(device_id, sensor, size_s, start_us)] = window_row(
                device_id, sensor, size_s, start_us, aggregate
            )
    for sensor in touched_latest:
        value, ts_us, event_id, site, zone, version = state.latest[sensor]
        out.latest[(device_id, sensor)] = [device_id, sensor, site, zone, value, ts_us, event_id, version]
    _expire(state, grace_us)
    return out


def window_row(device_id: str, sensor: str, size_s: int, start_us: int, aggregate: list) -> list:
    count, total, low, high, first_us, last_us, site, zone, version = aggregate
    return [
        size_s,
        device_id,
        sensor,
        start_us,
        site,
        zone,
        count,
        total,
        low,
        high,
        first_us,
        last_us,
        version,
    ]


def _fold_windows(state: DeviceState, event: Event, version: int, touched: set[str]) -> None:
    for size_s in windows.WINDOW_SIZES_S:
        start = windows.window_start_us(event.ts_event_us, size_s)
        key = windows.window_key(event.sensor_type, size_s, start)
        aggregate = state.windows.get(key)
        if aggregate is None:
            state.windows[key] = windows.new_aggregate(
                event.value, event.ts_event_us, event.site_id, event.zone_id, version
            )
        else:
            windows.fold(aggregate, event.value, event.ts_event_us, event.site_id, event.zone_id, version)
        touched.add(key)


def _update_latest(state: DeviceState, event: Event, version: int, touched: set[str]) -> None:
    current = state.latest.get(event.sensor_type)
    # `>=`: of two readings with the same ts_event the later one in topic order wins (SPEC §4).
    if current is None or event.ts_event_us >= current[1]:
        state.latest[event.sensor_type] = [
            event.value,
            event.ts_event_us,
            event.event_id,
            event.site_id,
            event.zone_id,
            version,
        ]
        touched.add(event.sensor_type)


def _step_alert(state: DeviceState, event: Event, out: BatchOutput) -> None:
    episode = state.open_alerts.get(event.sensor_type)
    episode, message, peak_moved = alerts.step(episode, event, event.site_id, event.zone_id)
    if episode is None:
        state.open_alerts.pop(event.sensor_type, None)
    else:
        state.open_alerts[event.sensor_type] = episode
    if message is not None:
        out.alert_messages.append(message)
        out.alert_rows[message["alert_id"]] = message
        if message["status"] == "open":
            out.alerts_opened += 1
        else:
            out.alerts_resolved += 1
    elif peak_moved and episode is not None:
        out.alert_rows[episode["alert_id"]] = dict(episode)


def _expire(state: DeviceState, grace_us: int) -> None:
    """Drop what the watermark has made final: closed windows, and ids whose duplicates would be too late."""
    watermark = state.watermark_us
    if watermark is None:
        return
    horizon = watermark - grace_us
    state.seen = {event_id: ts for event_id, ts in state.seen.items() if ts >= horizon}
    for key in [k for k in state.windows if _window_final(k, watermark, grace_us)]:
        del state.windows[key]


def _window_final(key: str, watermark_us: int, grace_us: int) -> bool:
    _, size_s, start_us = windows.parse_window_key(key)
    return windows.is_final(start_us, size_s, watermark_us, grace_us)
