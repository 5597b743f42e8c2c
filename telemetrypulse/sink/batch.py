"""From change records to one write: decode and check each record, merge the records of a consumed batch, and
coalesce rows of the same key so each key appears once per statement.

Pure numpy and msgspec, no I/O. Per-row work is vectorised; Python loops run per identifier triple (`dims`) and
per alert only.

A record is checked for everything that would make PostgreSQL reject the batch (a dim index out of range, an
unknown sensor or window size, an empty window, a timestamp out of range, a NUL in text, an alert that is not an
alert): such a batch would otherwise be retried forever and hold every partition behind it. A record failing a
check is skipped whole, by the caller, with its coordinates logged.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import msgspec
import numpy as np

from telemetrypulse.changes import LATEST_ROW, RAW_ROW, SENSORS, WINDOW_ROW, AlertRow, ChangesRecord, decode

WINDOW_SIZES_S = (300, 900)  # the device window tables: telemetry_device_agg_5m, telemetry_device_agg_15m
ALERT_STATUSES = ("open", "resolved")
SEVERITIES = ("info", "warning", "critical")  # telemetry_alerts.severity's CHECK (migration 0005)
DAY_US = 86_400_000_000
_EPOCH_DATE = date(1970, 1, 1)
# Timestamps a row may carry: what Python's date (the daily partitions) and PostgreSQL's exact µs arithmetic
# both hold, years 1 to 9999.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_799_999_999


class RecordError(ValueError):
    """A change record that cannot be written (undecodable or failing a check); the message says why."""


@dataclass(slots=True)
class Alert:
    """An alert row, checked and typed for PostgreSQL."""

    alert_id: uuid.UUID
    status: str
    rule: str
    alert_type: str
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: str
    threshold: float
    value: float
    peak_value: float
    opened_at: datetime
    resolved_at: datetime | None
    event_id: uuid.UUID
    resolved_event_id: uuid.UUID | None
    rule_id: str | None = None
    severity: str = "warning"

    def then(self, later: Alert) -> Alert:
        """This row followed by a later row of the same episode, by the rule PostgreSQL applies (writer.py
        UPSERT_ALERTS): an open row moves to resolved, its peak only up; a resolved row never changes. The rule
        is associative, so folding a batch's rows first and upserting the result ends where upserting them one
        by one would."""
        if self.status == "open" and (later.status == "resolved" or later.peak_value > self.peak_value):
            return dataclasses.replace(
                self,
                status=later.status,
                peak_value=max(self.peak_value, later.peak_value),
                resolved_at=self.resolved_at or later.resolved_at,
                resolved_event_id=self.resolved_event_id or later.resolved_event_id,
            )
        return self


@dataclass(slots=True)
class SinkBatch:
    """Everything one transaction writes. Rows refer to `dims` by index; `positions` are the next offsets to
    read per (topic, partition), written with the rows."""

    dims: list[tuple[str, str, str]] = field(default_factory=list)
    raw: np.ndarray = field(default_factory=lambda: np.empty(0, RAW_ROW))
    windows: np.ndarray = field(default_factory=lambda: np.empty(0, WINDOW_ROW))
    latest: np.ndarray = field(default_factory=lambda: np.empty(0, LATEST_ROW))
    alerts: list[Alert] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0  # change records merged in
    skipped: int = 0  # change records that failed a check

    def raw_days(self) -> set[date]:
        """The days (UTC) of the raw rows' ts_event: the daily partitions the insert needs."""
        days = np.unique(self.raw["ts_us"] // DAY_US)
        return {_EPOCH_DATE + timedelta(days=int(day)) for day in days}

    def __len__(self) -> int:
        return len(self.raw) + len(self.windows) + len(self.latest) + len(self.alerts)


def _check_text(*texts: str) -> None:
    for text in texts:
        if "\x00" in text:
            raise RecordError(f"NUL character in {text!r:.80}")


def _check_times(name: str, values: np.ndarray) -> None:
    if len(values) and (values.min() < MIN_US or values.max() > MAX_US):
        raise RecordError(f"{name} out of range (years 1-9999)")


def _check_rows(name: str, rows: np.ndarray, dims: int) -> None:
    if not len(rows):
        return
    if int(rows["dim"].max()) >= dims:
        raise RecordError(f"{name}: dim {int(rows['dim'].max())} beyond the record's {dims} dims")
    if int(rows["sensor"].max()) >= len(SENSORS):
        raise RecordError(f"{name}: unknown sensor code {int(rows['sensor'].max())}")


def _parse_time(name: str, text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(f"alert {name} is not an ISO-8601 time: {text!r:.80}") from None
    if parsed.tzinfo is None:
        raise RecordError(f"alert {name} has no UTC offset: {text!r:.80}")
    return parsed


def _parse_uuid(name: str, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise RecordError(f"alert {name} is not a UUID: {text!r:.80}") from None


def check_alert(row: AlertRow) -> Alert:
    if row.status not in ALERT_STATUSES:
        raise RecordError(f"alert status {row.status!r:.40}")
    if row.severity not in SEVERITIES:
        raise RecordError(f"alert severity {row.severity!r:.40}")
    _check_text(row.rule, row.alert_type, row.device_id, row.site_id, row.zone_id, row.sensor_type)
    if row.rule_id is not None:
        _check_text(row.rule_id)
    return Alert(
        alert_id=_parse_uuid("alert_id", row.alert_id),
        status=row.status,
        rule=row.rule,
        alert_type=row.alert_type,
        device_id=row.device_id,
        site_id=row.site_id,
        zone_id=row.zone_id,
        sensor_type=row.sensor_type,
        threshold=row.threshold,
        value=row.value,
        peak_value=row.peak_value,
        opened_at=_parse_time("opened_at", row.opened_at),
        resolved_at=None if row.resolved_at is None else _parse_time("resolved_at", row.resolved_at),
        event_id=_parse_uuid("event_id", row.event_id),
        resolved_event_id=(
            None if row.resolved_event_id is None else _parse_uuid("resolved_event_id", row.resolved_event_id)
        ),
        rule_id=row.rule_id,
        severity=row.severity,
    )


@dataclass(slots=True)
class CheckedRecord:
    record: ChangesRecord
    raw: np.ndarray
    windows: np.ndarray
    latest: np.ndarray
    alerts: list[Alert]


def decode_record(value: bytes | None) -> CheckedRecord:
    """One Kafka record's value, decoded and checked; RecordError says why it cannot be written."""
    if value is None:
        raise RecordError("empty record (no value)")
    try:
        record = decode(value)
        raw, windows, latest = record.raw_rows(), record.window_rows(), record.latest_rows()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        raise RecordError(f"not a ChangesRecord: {e}") from None
    dims = len(record.dims)
    for device_id, site_id, zone_id in record.dims:
        _check_text(device_id, site_id, zone_id)
    for name, rows in (("raw", raw), ("windows", windows), ("latest", latest)):
        _check_rows(name, rows, dims)
    _check_times("raw ts_us", raw["ts_us"])
    _check_times("raw ingest_us", raw["ingest_us"])
    if len(windows):
        if not np.isin(windows["size_s"], WINDOW_SIZES_S).all():
            raise RecordError(f"window size not one of {WINDOW_SIZES_S}")
        if windows["count"].min() < 1:
            raise RecordError("window with no event (count < 1)")
        for name in ("start_us", "first_us", "last_us"):
            _check_times(f"window {name}", windows[name])
        _check_times("window end", windows["start_us"] + windows["size_s"].astype(np.int64) * 1_000_000)
    _check_times("latest ts_us", latest["ts_us"])
    alerts = [check_alert(row) for row in record.alerts]
    return CheckedRecord(record, raw, windows, latest, alerts)


def _last_of_groups(keys: list[np.ndarray], version: np.ndarray) -> np.ndarray:
    """Indices of the highest-version row of each distinct key (rows of equal key and version are the same
    row written twice: any one will do)."""
    order = np.lexsort((version, *reversed(keys)))
    last = np.ones(len(order), bool)
    if len(order) > 1:
        same_as_next = np.ones(len(order) - 1, bool)
        for key in keys:
            sorted_key = key[order]
            same_as_next &= sorted_key[1:] == sorted_key[:-1]
        last[:-1] = ~same_as_next
    return order[last]


class BatchBuilder:
    """Merges checked records into one SinkBatch: identifiers re-indexed into one batch-wide `dims`, rows
    concatenated in record order, windows and latest values coalesced per key (highest version wins), alerts
    per episode."""

    def __init__(self) -> None:
        self._dim_index: dict[tuple[str, str, str], int] = {}
        self._raw: list[np.ndarray] = []
        self._windows: list[np.ndarray] = []
        self._latest: list[np.ndarray] = []
        self._alerts: dict[uuid.UUID, Alert] = {}
        self.positions: dict[tuple[str, int], int] = {}
        self.records = 0
        self.skipped = 0

    def add(self, checked: CheckedRecord) -> None:
        index = self._dim_index
        lookup = np.fromiter(
            (index.setdefault(dim, len(index)) for dim in checked.record.dims),
            dtype=np.uint32,
            count=len(checked.record.dims),
        )
        for rows, into in (
            (checked.raw, self._raw),
            (checked.windows, self._windows),
            (checked.latest, self._latest),
        ):
            if len(rows):
                remapped = rows.copy()  # the decoded rows are read-only views of the message
                remapped["dim"] = lookup[rows["dim"]]
                into.append(remapped)
        for alert in checked.alerts:
            current = self._alerts.get(alert.alert_id)
            self._alerts[alert.alert_id] = alert if current is None else current.then(alert)
        self.records += 1

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        key = (topic, partition)
        self.positions[key] = max(next_offset, self.positions.get(key, 0))

    def build(self) -> SinkBatch:
        dims = list(self._dim_index)
        # Coalesce by device_id, not by dim: one device under two (site, zone) pairs is still one table row.
        device_index: dict[str, int] = {}
        dim_device = np.fromiter(
            (device_index.setdefault(device_id, len(device_index)) for device_id, _, _ in dims),
            dtype=np.int64,
            count=len(dims),
        )
        windows = _concat(self._windows, WINDOW_ROW)
        if len(windows) > 1:
            keys = [dim_device[windows["dim"]], windows["sensor"], windows["size_s"], windows["start_us"]]
            windows = windows[_last_of_groups(keys, windows["version"])]
        latest = _concat(self._latest, LATEST_ROW)
        if len(latest) > 1:
            latest = latest[_last_of_groups([dim_device[latest["dim"]], latest["sensor"]], latest["version"])]
        return SinkBatch(
            dims=dims,
            raw=_concat(self._raw, RAW_ROW),
            windows=windows,
            latest=latest,
            alerts=sorted(self._alerts.values(), key=lambda a: a.alert_id),
            positions=dict(sorted(self.positions.items())),
            records=self.records,
            skipped=self.skipped,
        )


def _concat(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
