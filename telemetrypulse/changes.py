"""Change records: what the worker hands the PostgreSQL sink, one typed binary schema for both sides.

Per worker batch and source partition, one record on `<APP_ID>-changes` (partition = source partition): the raw
rows (accepted and too-late readings), the window rows and latest values the batch changed (their whole state and
a version, so a row may be written any number of times), and the alert rows. Rows are packed numpy structured
arrays, read back with `np.frombuffer(…, dtype)` without a copy; fields are named, never positional. A record stays
under MAX_RECORD_BYTES (the 1 MB message limit of managed Kafka): a larger batch is cut into several records, raw
rows first, so the sink never shows a window counting an event whose raw row it has not written.

Device, site and zone identifiers are not repeated per row: `dims` lists each (device_id, site_id, zone_id) of the
record once, and rows refer to it by index (`dim`).
"""

from __future__ import annotations

import msgspec
import numpy as np

SENSORS = ("co2", "temperature", "humidity", "occupancy")  # a row's `sensor` is an index into this
SENSOR_CODES = {name: code for code, name in enumerate(SENSORS)}

# One raw reading: an accepted or too-late event (duplicates leave no row). `unit_given`: the event named its unit
# (which can only be the sensor's own).
RAW_ROW = np.dtype(
    [
        ("dim", "<u4"),
        ("event_id", "V16"),
        ("sensor", "u1"),
        ("late", "?"),
        ("unit_given", "?"),
        ("value", "<f8"),
        ("ts_us", "<i8"),
        ("ingest_us", "<i8"),
    ]
)
# One window of one device and sensor, whole: its aggregate after the batch. `version` is the source offset of the
# last event folded in; PostgreSQL keeps the row with the highest version. site/zone are those of `dim`.
WINDOW_ROW = np.dtype(
    [
        ("dim", "<u4"),
        ("sensor", "u1"),
        ("size_s", "<u4"),
        ("start_us", "<i8"),
        ("count", "<i8"),
        ("sum", "<f8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("sum_sq", "<f8"),
        ("first_us", "<i8"),
        ("last_us", "<i8"),
        ("version", "<i8"),
    ]
)
# The latest accepted reading of one device and sensor (greatest ts_event; a tie goes to the later one).
LATEST_ROW = np.dtype(
    [
        ("dim", "<u4"),
        ("sensor", "u1"),
        ("value", "<f8"),
        ("ts_us", "<i8"),
        ("event_id", "V16"),
        ("version", "<i8"),
    ]
)

MAX_RECORD_BYTES = 900 * 1024


class AlertRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An alert episode as PostgreSQL keeps it (SPEC §5, §9): written at open, at resolve, and when the peak moves
    while open. Times are ISO-8601 UTC, as on the alerts topic.

    Schema evolution: fields are encoded by name (a msgpack map), so a field is only ever added, with a default,
    at the end. A record from an older worker then decodes with the default (`rule_id` None, `severity`
    "warning": what a threshold alert was before run-time rules), and an older sink reading a newer record
    ignores the fields it does not know (msgspec skips unknown fields) — workers and sinks can be upgraded in
    either order."""

    alert_id: str
    status: str  # "open" | "resolved"
    rule: str
    alert_type: str
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: str
    threshold: float
    value: float
    peak_value: float
    opened_at: str
    resolved_at: str | None = None
    event_id: str
    resolved_event_id: str | None = None
    rule_id: str | None = None  # the run-time rule that opened it (SPEC §9); None for stale-sensor alerts
    severity: str = "warning"  # info | warning | critical


class ChangesRecord(msgspec.Struct, kw_only=True):
    partition: int  # source partition of the events
    first_offset: int  # source offsets the batch covered (for logs and diagnosis)
    last_offset: int
    dims: list[tuple[str, str, str]]  # (device_id, site_id, zone_id), referred to by rows' `dim`
    raw: bytes = b""  # RAW_ROW array
    windows: bytes = b""  # WINDOW_ROW array
    latest: bytes = b""  # LATEST_ROW array
    alerts: list[AlertRow] = []

    def raw_rows(self) -> np.ndarray:
        return np.frombuffer(self.raw, RAW_ROW)

    def window_rows(self) -> np.ndarray:
        return np.frombuffer(self.windows, WINDOW_ROW)

    def latest_rows(self) -> np.ndarray:
        return np.frombuffer(self.latest, LATEST_ROW)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ChangesRecord)


def decode(value: bytes) -> ChangesRecord:
    return _decoder.decode(value)


def encode(
    *,
    partition: int,
    first_offset: int,
    last_offset: int,
    dims: list[tuple[str, str, str]],
    raw: np.ndarray,
    windows: np.ndarray,
    latest: np.ndarray,
    alerts: list[AlertRow],
    max_bytes: int = MAX_RECORD_BYTES,
) -> list[bytes]:
    """The records of one batch: one, or several under `max_bytes` each, in the order raw rows, windows, latest
    values, alerts (every row is complete, so any cut is safe; the order keeps raw rows ahead of their windows)."""
    parts: list[tuple[str, np.ndarray | list]] = [
        ("raw", raw),
        ("windows", windows),
        ("latest", latest),
        ("alerts", alerts),
    ]
    # Identifiers are at most 64 characters: a generous per-dim budget keeps every record under the limit.
    dims_bytes = sum(len(d) + len(s) + len(z) + 8 for d, s, z in dims)
    budget = max(max_bytes - dims_bytes - 256, 4096)
    records: list[dict] = []
    current: dict = {}
    used = 0
    for name, rows in parts:
        if name == "alerts":
            sizes = [len(_encoder.encode(a)) for a in rows]
        else:
            sizes = [rows.dtype.itemsize] * len(rows)
        start = 0
        while start < len(rows):
            room = budget - used
            take, size = 0, 0
            while start + take < len(rows) and size + sizes[start + take] <= room:
                size += sizes[start + take]
                take += 1
            if take == 0:
                if not current:
                    raise ValueError(f"a {name} row does not fit in a changes record of {max_bytes} bytes")
                records.append(current)
                current, used = {}, 0
                continue
            chunk = rows[start : start + take]
            current[name] = chunk if name == "alerts" else chunk.tobytes()
            used += size
            start += take
    if current or not records:
        records.append(current)
    return [
        _encoder.encode(
            ChangesRecord(
                partition=partition, first_offset=first_offset, last_offset=last_offset, dims=dims, **fields
            )
        )
        for fields in records
    ]
