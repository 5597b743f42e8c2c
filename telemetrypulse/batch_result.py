"""What applying one batch to a partition's state produces, and the shapes passed between the steps that produce it.

`BatchResult` is what the worker publishes (rows for the changes topic, alert messages, counts). `AcceptedEvents`
is the part of a batch that got past the fence, dedup and lateness — the only events windows, latest values and
alerts ever see. `AlertOutputs` collects alert messages and rows as the threshold and stale steps find them, and
puts them back in the order their events were applied: the steps run one after the other over the whole batch, but
what they publish must read as if the events had been applied one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from telemetrypulse.changes import LATEST_ROW, RAW_ROW, WINDOW_ROW, AlertRow


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
