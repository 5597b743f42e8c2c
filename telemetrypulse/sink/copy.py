"""PostgreSQL's binary COPY format, built from numpy columns: one vectorised assignment per column, no Python
object per row.

The format (PostgreSQL manual, COPY, "Binary Format"): an 11-byte signature, a 32-bit flags word and a 32-bit
header-extension length; then per tuple a 16-bit field count and, per field, a 32-bit byte length followed by the
value in the type's binary send format; then a 16-bit -1. Every integer is big-endian (network order). The types
used here have fixed widths, so a tuple is a packed numpy record and the whole body one array's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

# PostgreSQL type -> its binary send format as a numpy dtype (bool: one byte 0/1; uuid: its 16 bytes as they are).
WIRE_TYPES: dict[str, str] = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "bool": "?",
    "uuid": "V16",
}


def tuple_dtype(types: Sequence[str]) -> np.dtype:
    """One COPY tuple of fixed-width fields: the field count, then (length, value) per field, packed."""
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for i, pg_type in enumerate(types):
        fields += [(f"len{i}", ">i4"), (f"val{i}", WIRE_TYPES[pg_type])]
    return np.dtype(fields)


def encode_columns(columns: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """A whole binary COPY stream for `columns`, given as (PostgreSQL type, values) in the table's column order.

    numpy converts each column to big-endian on assignment; no field is ever NULL.
    """
    if not columns:
        raise ValueError("no columns")
    count = len(columns[0][1])
    dtype = tuple_dtype([pg_type for pg_type, _ in columns])
    out = np.empty(count, dtype)
    out["fields"] = len(columns)
    for i, (_, values) in enumerate(columns):
        if len(values) != count:
            raise ValueError(f"column {i} has {len(values)} values, column 0 has {count}")
        out[f"len{i}"] = dtype[f"val{i}"].itemsize
        out[f"val{i}"] = values
    return b"".join((HEADER, out.tobytes(), TRAILER))


def encode_dims(dims: Sequence[tuple[str, str, str]]) -> bytes:
    """The (dim int4, device_id text, site_id text, zone_id text) rows of a batch's identifiers.

    Text is variable-width, so this one is built per identifier triple — never per data row: rows refer to
    these by index.
    """
    pack_head, pack_len = struct.Struct(">hii").pack, struct.Struct(">i").pack
    parts = [HEADER]
    for index, (device_id, site_id, zone_id) in enumerate(dims):
        parts.append(pack_head(4, 4, index))
        for text in (device_id, site_id, zone_id):
            data = text.encode()
            parts.append(pack_len(len(data)))
            parts.append(data)
    parts.append(TRAILER)
    return b"".join(parts)
