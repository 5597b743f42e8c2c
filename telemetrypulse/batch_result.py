"""What applying one batch to a partition's state produces, and the shapes passed between the steps that produce it.

`BatchResult` is what the worker publishes (rows for the changes topic, alert messages, counts); `add_change_rows`
builds its rows from the verdict on each event (REPLAYED, DUPLICATE, LATE, ACCEPTED). `AcceptedEvents`
is the part of a batch that got past the fence, dedup and lateness — the only events windows, latest values and
alerts ever see. `AlertOutputs` collects alert messages and rows as the threshold and stale steps find them, and
puts them back in the order their events were applied: the steps run one after the other over the whole batch, but
what they publish must read as if the events had been applied one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from telemetrypulse.changes import LATEST_ROW, RAW_ROW, WINDOW_ROW, AlertRow
from telemetrypulse.decode import DecodedBatch

if TYPE_CHECKING:
    from telemetrypulse.open_windows import OpenWindows

# Event statuses, per event of a batch.
REPLAYED, DUPLICATE, LATE, ACCEPTED = 0, 1, 2, 3


@dataclass(slots=True)
class BatchResult:
    """What one batch of one partition produced: rows for the changes topic (changes.py dtypes; `dim` indexes
    `dims`), alert messages for telemetry.alerts in source order, the latest state of each alert changed, counts."""

    dims: list[tuple[str, str, str]] = field(default_factory=list)
    raw: np.ndarray = field(default_factory=lambda: np.empty(0, RAW_ROW))
    windows: np.ndarray = field(default_factory=lambda: np.empty(0, WINDOW_ROW))
    latest: np.ndarray = field(default_factory=lambda: np.empty(0, LATEST_ROW))
    alert_messages: list[dict] = field(default_factory=list)
    alert_rows: list[AlertRow] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    replayed: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0


@dataclass(slots=True)
class AcceptedEvents:
    """The accepted events of a batch, by device then offset: what windows, latest values and alerts see."""

    dev: np.ndarray  # device index in the partition state
    offset: np.ndarray
    position: np.ndarray  # position in the batch
    ts: np.ndarray
    ids: np.ndarray
    sensor: np.ndarray  # int64 sensor code
    value: np.ndarray
    record: np.ndarray  # Kafka record time (µs)


class AlertOutputs:
    """Alert messages and rows of one batch, each with a sort key (source offset, step, sequence): they are
    published in the order the events that caused them were applied, whatever order they were computed in."""

    BEFORE, AT, AFTER = 0, 1, 2  # a stale check before an event, the event itself, the check after it

    def __init__(self) -> None:
        self.messages: list[tuple[tuple, dict]] = []
        self.rows: list[tuple[tuple, dict]] = []
        self.opened = 0
        self.resolved = 0

    def message(self, key: tuple, message: dict) -> None:
        if message["status"] == "open":
            self.opened += 1
        else:
            self.resolved += 1
        self.messages.append((key, message))
        self.rows.append((key, message))

    def row(self, key: tuple, row: dict) -> None:
        self.rows.append((key, row))

    def into(self, result: BatchResult, emit: bool) -> None:
        result.alerts_opened += self.opened
        result.alerts_resolved += self.resolved
        if not emit:
            return
        self.messages.sort(key=lambda item: item[0])
        self.rows.sort(key=lambda item: item[0])
        result.alert_messages.extend(m for _, m in self.messages)
        latest_state: dict[str, dict] = {}
        for _, row in self.rows:
            latest_state[row["alert_id"]] = row
        result.alert_rows.extend(AlertRow(**row) for row in latest_state.values())


def uuid_text(event_id: np.void) -> str:
    """A 16-byte event id as alert messages name it: the canonical UUID text."""
    h = event_id.tobytes().hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def add_change_rows(
    result: BatchResult,
    batch: DecodedBatch,
    position,
    status,
    ingest_us,
    acc: AcceptedEvents,
    open_windows: OpenWindows,
    windows,
    latest,
) -> None:
    """The changes rows of the batch (changes.py): raw, windows and latest values.

    `position` and `status`: each live event's place in the batch and its verdict (events not among them were
    replayed); `windows`: what `open_windows.fold` returned (None without accepted events); `latest`: the accepted
    events that became a latest value."""
    # Raw rows: accepted and too-late events, in source order.
    by_position = np.full(len(batch), REPLAYED, np.int64)
    by_position[position] = status
    stored = np.flatnonzero(by_position >= LATE)
    raw = np.empty(len(stored), RAW_ROW)
    raw["dim"] = batch.dim[stored]
    raw["event_id"] = batch.event_id[stored]
    raw["sensor"] = batch.sensor[stored]
    raw["late"] = by_position[stored] == LATE
    raw["unit_given"] = batch.unit_given[stored]
    raw["value"] = batch.value[stored]
    raw["ts_us"] = batch.ts_us[stored]
    raw["ingest_us"] = np.asarray(ingest_us, np.int64)[stored]

    # Each window the batch touched, whole, as it is after the batch.
    window_rows = np.empty(0, WINDOW_ROW)
    if windows is not None:
        _, last_event, at = windows
        window_rows, _ = open_windows.rows(at, WINDOW_ROW)
        window_rows["dim"] = batch.dim[acc.position[last_event]]  # site/zone of the last event folded

    # Each latest value the batch replaced.
    latest_rows = np.empty(0, LATEST_ROW)
    if latest is not None and len(latest):
        p = acc.position[latest]
        latest_rows = np.empty(len(p), LATEST_ROW)
        latest_rows["dim"] = batch.dim[p]
        latest_rows["sensor"] = batch.sensor[p]
        latest_rows["value"] = batch.value[p]
        latest_rows["ts_us"] = batch.ts_us[p]
        latest_rows["event_id"] = batch.event_id[p]
        latest_rows["version"] = acc.offset[latest]

    # Only the dims some row refers to (a device whose events were all duplicates or replays has none).
    used = None
    if result.duplicates or result.replayed:
        used = np.unique(np.concatenate([raw["dim"], window_rows["dim"], latest_rows["dim"]]))
    if used is not None and len(used) < len(batch.dims):
        remap = np.zeros(len(batch.dims), np.uint32)
        remap[used] = np.arange(len(used), dtype=np.uint32)
        for rows in (raw, window_rows, latest_rows):
            rows["dim"] = remap[rows["dim"]]
        result.dims = [batch.dims[i] for i in used.tolist()]
    else:
        result.dims = list(batch.dims)
    result.raw, result.windows, result.latest = raw, window_rows, latest_rows
