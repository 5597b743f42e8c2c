"""The sink's pure parts, no services: the binary COPY encoding against a per-row reference written from the
PostgreSQL manual, the checks that keep a poison record out of a transaction, and the coalescing of a batch."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from telemetrypulse import changes
from telemetrypulse.changes import LATEST_ROW, RAW_ROW, WINDOW_ROW, AlertRow
from telemetrypulse.sink.batch import BatchBuilder, RecordError, decode_record
from telemetrypulse.sink.copy import encode_columns, encode_dims
from telemetrypulse.sink.writer import LATEST_COPY, RAW_COPY, WINDOW_COPY, rows_payload

T0 = 1_700_000_000_000_000
DIMS = [("dev-1", "site-a", "zone-1"), ("dev-2", "site-a", "zone-2")]

# --------------------------------------------------------------------------------------------- reference COPY

FORMATS = {"int2": ">h", "int4": ">i", "int8": ">q", "float8": ">d", "bool": ">?"}


def reference_copy(types: list[str], rows: list[tuple]) -> bytes:
    """Binary COPY per row, straight from the manual: signature, flags, extension length; per tuple the field
    count and each field's length and big-endian value; the -1 trailer."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack(">ii", 0, 0)]
    for row in rows:
        out.append(struct.pack(">h", len(types)))
        for pg_type, value in zip(types, row, strict=True):
            if pg_type == "uuid":
                data = bytes(value)
            elif pg_type == "text":
                data = value.encode()
            else:
                data = struct.pack(FORMATS[pg_type], value)
            out.append(struct.pack(">i", len(data)) + data)
    out.append(struct.pack(">h", -1))
    return b"".join(out)


def test_encode_columns_matches_the_manual_for_every_type():
    ints = np.array([0, 1, -1, 2**31 - 1, -(2**31)], np.int64)
    values = np.array([0.0, -0.0, 1.5, math.inf, math.nan])
    flags = np.array([True, False, True, False, True])
    ids = np.array([uuid.uuid4().bytes for _ in range(5)], "V16")
    small = np.array([0, 1, 2, 3, 255], np.uint8)
    big = np.array([T0, -T0, 2**63 - 1, -(2**63), 0], np.int64)
    encoded = encode_columns(
        [("int4", ints), ("float8", values), ("bool", flags), ("uuid", ids), ("int2", small), ("int8", big)]
    )
    expected = reference_copy(
        ["int4", "float8", "bool", "uuid", "int2", "int8"],
        list(
            zip(
                ints.tolist(),
                values.tolist(),
                flags.tolist(),
                [bytes(i) for i in ids],
                small.tolist(),
                big.tolist(),
                strict=True,
            )
        ),
    )
    assert encoded == expected


def test_encode_columns_of_no_rows_is_header_and_trailer():
    assert encode_columns([("int8", np.empty(0, np.int64))]) == reference_copy(["int8"], [])


def test_encode_columns_refuses_ragged_columns():
    with pytest.raises(ValueError):
        encode_columns([("int8", np.zeros(2, np.int64)), ("int8", np.zeros(3, np.int64))])


def test_encode_dims_matches_the_manual_with_multibyte_text():
    dims = [("dev-1", "site-a", "zone-1"), ("d" * 64, "sité", "")]
    rows = [(i, *dim) for i, dim in enumerate(dims)]
    assert encode_dims(dims) == reference_copy(["int4", "text", "text", "text"], rows)


def test_row_payloads_take_every_field_of_the_packed_rows():
    """The staging layouts name each field of the changes schema once (a field left out would silently be
    lost)."""
    for layout, dtype in ((RAW_COPY, RAW_ROW), (WINDOW_COPY, WINDOW_ROW), (LATEST_COPY, LATEST_ROW)):
        assert sorted(source for _, _, source in layout) == sorted(dtype.names)
    raw = np.zeros(2, RAW_ROW)
    raw["event_id"] = [uuid.uuid4().bytes, uuid.uuid4().bytes]
    raw["value"] = [1.25, -3]
    raw["ts_us"] = [T0, T0 + 1]
    raw["late"] = [True, False]
    as_dicts = [dict(zip(RAW_ROW.names, row, strict=True)) for row in raw.tolist()]
    rows = [tuple(r[source] for _, _, source in RAW_COPY) for r in as_dicts]
    assert rows_payload(raw, RAW_COPY) == reference_copy([t for _, t, _ in RAW_COPY], rows)


# --------------------------------------------------------------------------------------------- records


def raw_rows(n: int, *, dim: int = 0, sensor: int = 0, start_us: int = T0) -> np.ndarray:
    rows = np.zeros(n, RAW_ROW)
    rows["dim"] = dim
    rows["event_id"] = [uuid.uuid4().bytes for _ in range(n)]
    rows["sensor"] = sensor
    rows["value"] = np.arange(n)
    rows["ts_us"] = start_us + np.arange(n) * 1_000_000
    rows["ingest_us"] = rows["ts_us"] + 10
    return rows


def window(dim: int, sensor: int, size_s: int, start_us: int, count: int, version: int) -> np.ndarray:
    row = np.zeros(1, WINDOW_ROW)
    row["dim"], row["sensor"], row["size_s"], row["start_us"] = dim, sensor, size_s, start_us
    row["count"], row["sum"], row["min"], row["max"], row["sum_sq"] = count, count * 2.0, 1, 3, count * 5.0
    row["first_us"], row["last_us"], row["version"] = start_us, start_us + 1, version
    return row


def latest(dim: int, sensor: int, value: float, version: int) -> np.ndarray:
    row = np.zeros(1, LATEST_ROW)
    row["dim"], row["sensor"], row["value"], row["ts_us"] = dim, sensor, value, T0 + version
    row["event_id"], row["version"] = uuid.uuid4().bytes, version
    return row


def alert(status: str, peak: float, *, alert_id: str = "00000000-0000-4000-8000-000000000001") -> AlertRow:
    return AlertRow(
        alert_id=alert_id,
        status=status,
        rule="threshold",
        alert_type="CO2_HIGH",
        device_id="dev-1",
        site_id="site-a",
        zone_id="zone-1",
        sensor_type="co2",
        threshold=1000.0,
        value=1100.0,
        peak_value=peak,
        opened_at="2023-11-14T22:13:20Z",
        resolved_at="2023-11-14T22:20:00Z" if status == "resolved" else None,
        event_id="00000000-0000-4000-8000-0000000000aa",
        resolved_event_id="00000000-0000-4000-8000-0000000000bb" if status == "resolved" else None,
    )


def record(
    *,
    dims=DIMS,
    raw=None,
    windows=None,
    latest_rows=None,
    alerts=(),
    max_bytes: int = changes.MAX_RECORD_BYTES,
) -> list[bytes]:
    return changes.encode(
        partition=0,
        first_offset=0,
        last_offset=10,
        dims=list(dims),
        raw=np.empty(0, RAW_ROW) if raw is None else raw,
        windows=np.empty(0, WINDOW_ROW) if windows is None else windows,
        latest=np.empty(0, LATEST_ROW) if latest_rows is None else latest_rows,
        alerts=list(alerts),
        max_bytes=max_bytes,
    )


def build(*values: bytes):
    builder = BatchBuilder()
    for value in values:
        builder.add(decode_record(value))
    return builder.build()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"\x00garbage", "not a ChangesRecord"),
        (record(raw=raw_rows(2, dim=2))[0], "dim 2 beyond"),
        (record(raw=raw_rows(1, sensor=4))[0], "unknown sensor"),
        (record(raw=raw_rows(1, start_us=2**62))[0], "out of range"),
        (record(dims=[("dev\x00", "s", "z")], raw=raw_rows(1))[0], "NUL"),
        (record(windows=window(0, 0, 3600, T0, 1, 1))[0], "window size"),
        (record(windows=window(0, 0, 300, T0, 0, 1))[0], "count < 1"),
        (record(alerts=[alert("closed", 1.0)])[0], "status"),
        (record(alerts=[alert("open", 1.0, alert_id="not-a-uuid")])[0], "not a UUID"),
    ],
)
def test_records_that_postgresql_would_reject_fail_the_check(value, reason):
    with pytest.raises(RecordError, match=reason):
        decode_record(value)


def test_a_truncated_row_buffer_is_undecodable():
    good = record(raw=raw_rows(2))[0]
    rec = changes.decode(good)
    broken = changes._encoder.encode(
        changes.ChangesRecord(partition=0, first_offset=0, last_offset=0, dims=DIMS, raw=rec.raw[:-3])
    )
    with pytest.raises(RecordError, match="not a ChangesRecord"):
        decode_record(broken)


def test_records_of_a_batch_share_one_dims_list():
    first = record(dims=[DIMS[0]], raw=raw_rows(2))
    second = record(dims=[DIMS[1], DIMS[0]], raw=raw_rows(3, dim=1))
    batch = build(*first, *second)
    assert batch.dims == [DIMS[0], DIMS[1]]
    assert [batch.dims[d] for d in batch.raw["dim"].tolist()] == [DIMS[0]] * 5
    assert batch.records == 2


def test_windows_and_latest_values_coalesce_to_the_highest_version_per_key():
    w = np.concatenate(
        [
            window(0, 0, 300, T0, 5, 10),
            window(0, 0, 300, T0, 3, 4),  # older, after the newer one
            window(0, 0, 900, T0, 4, 8),  # other size: another key
            window(1, 0, 300, T0, 1, 2),
            window(1, 0, 300, T0, 2, 3),
        ]
    )
    lat = np.concatenate([latest(0, 1, 7.0, 20), latest(0, 1, 5.0, 19), latest(1, 1, 9.0, 3)])
    batch = build(*record(windows=w[:3], latest_rows=lat[:1]), *record(windows=w[3:], latest_rows=lat[1:]))
    got = {
        (batch.dims[r["dim"]][0], r["size_s"], r["start_us"]): (r["count"], r["version"])
        for r in (dict(zip(WINDOW_ROW.names, row, strict=True)) for row in batch.windows.tolist())
    }
    assert got == {("dev-1", 300, T0): (5, 10), ("dev-1", 900, T0): (4, 8), ("dev-2", 300, T0): (2, 3)}
    assert sorted(zip(batch.latest["version"].tolist(), batch.latest["value"].tolist(), strict=True)) == [
        (3, 9.0),
        (20, 7.0),
    ]


def test_one_device_under_two_zones_is_still_one_window_row():
    dims = [("dev-1", "site-a", "zone-1"), ("dev-1", "site-a", "zone-2")]
    batch = build(
        *record(dims=dims, windows=np.concatenate([window(0, 0, 300, T0, 1, 1), window(1, 0, 300, T0, 2, 2)]))
    )
    assert len(batch.windows) == 1 and batch.dims[batch.windows["dim"][0]][2] == "zone-2"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("open", 1100), ("open", 1300), ("open", 1200)], ("open", 1300)),
        ([("open", 1100), ("resolved", 1400)], ("resolved", 1400)),
        ([("resolved", 1400), ("open", 1100)], ("resolved", 1400)),
        ([("open", 1500), ("resolved", 1400)], ("resolved", 1500)),
        ([("resolved", 1400), ("open", 1500)], ("resolved", 1400)),
    ],
)
def test_alert_rows_fold_open_to_resolved_and_peak_only_up(rows, expected):
    batch = build(*record(alerts=[alert(status, peak) for status, peak in rows]))
    (only,) = batch.alerts
    assert (only.status, only.peak_value) == expected
    assert (only.resolved_at is not None) == (expected[0] == "resolved")
    assert only.opened_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_positions_keep_the_highest_next_offset_per_partition():
    builder = BatchBuilder()
    builder.advance("t", 1, 10)
    builder.advance("t", 0, 4)
    builder.advance("t", 1, 7)
    assert builder.build().positions == {("t", 0): 4, ("t", 1): 10}


def test_raw_days_are_the_utc_days_of_ts_event():
    rows = raw_rows(2)
    rows["ts_us"] = [0, -1]  # the epoch and the microsecond before it
    batch = build(*record(raw=rows))
    assert sorted(batch.raw_days()) == [datetime(1969, 12, 31).date(), datetime(1970, 1, 1).date()]


def test_bad_settings_stop_the_sink_at_start_with_one_line(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db",
        "SINK_WEB_PORT": "nope",
    }
    result = subprocess.run(
        [sys.executable, "-m", "telemetrypulse.cli", "sink"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SINK_WEB_PORT" in lines[0], result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "telemetrypulse.sink"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "DATABASE_URL" in missing.stderr, missing.stderr
