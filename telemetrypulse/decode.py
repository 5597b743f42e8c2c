"""Decoding and validation of a whole batch of message values into columns (SPEC §3).

`decode_batch` gives, for every input, exactly what `models.validate_event` gives — the same event or the same
`Invalid` — but as columns for the worker's per-batch folding, at a few µs per event instead of ~20.

How it stays exact: a fast path takes only what it is certain the reference accepts, with the very same values,
and hands everything else to the reference (`validate_one`), which also gives the reason of every invalid input.

1. Typed decoding with msgspec into `decode_fields.EventFields`, which has only the event's fields and forbids any other. So
   msgspec skips nothing: every string it returns was checked as UTF-8, every number was read in full, and its
   JSON is as strict as orjson's (the reference's parser): no NaN/Infinity, no lone surrogates, no BOM.
   A value with extra fields gets a second typed decoding that skips them (`_EventFieldsAmongOthers`), but only
   after the two checks msgspec does not make on what it skips: valid UTF-8, and a nesting depth bounded far below
   orjson's limit (1024) and Python's recursion limit.
2. Batch-wide checks of the decoded fields, on all events at once (`decode_fields`): event ids (canonical 8-4-4-4-12 hex, either
   case) laid out in one buffer and turned into 16 bytes each by `bytes.fromhex`; timestamps of the common
   ISO-8601 forms `YYYY-MM-DD(T|t)HH:MM:SS[.f…](Z|z|±hh:mm)` parsed digit by digit with numpy, each distinct date
   by `datetime.date` itself; value ranges, units and the future limit as numpy comparisons. Device, site and
   zone ids are checked once per distinct string, and an event's dim is found by hashing its device id alone
   when the device keeps its site and zone.
3. What any check rejects, and what msgspec could not decode, goes to `validate_one`: an unusual timestamp form
   (or a fast-path form of a length fewer than 16 events of the batch have), a value out of range, NaN tokens,
   invalid JSON, a tombstone… These are rare, so the reference's cost there does not matter.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from telemetrypulse import decode_fields
from telemetrypulse.changes import SENSOR_CODES
from telemetrypulse.models import MAX_FUTURE_US, Event, Invalid, validate_event

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DecodedBatch:
    """The valid events of a batch as columns (in input order), and the invalid inputs with their reason."""

    valid: np.ndarray  # int64: positions in the input of the valid events, ascending
    event_id: np.ndarray  # V16: uuid.UUID(event_id).bytes
    device: np.ndarray  # uint32: index into `devices`
    devices: list[str]  # distinct device_id values
    dim: np.ndarray  # uint32: index into `dims`
    dims: list[tuple[str, str, str]]  # distinct (device_id, site_id, zone_id)
    sensor: np.ndarray  # uint8: changes.SENSOR_CODES
    value: np.ndarray  # float64
    ts_us: np.ndarray  # int64: ts_event, µs since the epoch
    unit_given: np.ndarray  # bool: the event named its unit
    invalid: list[tuple[int, Invalid]] = field(default_factory=list)  # (position, reason), ascending

    def __len__(self) -> int:
        return len(self.valid)

    @classmethod
    def from_events(
        cls, events: Sequence[tuple[int, Event]], invalid: list[tuple[int, Invalid]]
    ) -> DecodedBatch:
        """Columns of already validated events (position, event)."""
        devices: dict[str, int] = {}
        dims: dict[tuple[str, str, str], int] = {}
        n = len(events)
        batch = cls(
            valid=np.fromiter((p for p, _ in events), np.int64, n),
            event_id=np.array([uuid.UUID(e.event_id).bytes for _, e in events], dtype="V16").reshape(n),
            device=np.fromiter(
                (devices.setdefault(e.device_id, len(devices)) for _, e in events), np.uint32, n
            ),
            devices=[],
            dim=np.fromiter(
                (dims.setdefault((e.device_id, e.site_id, e.zone_id), len(dims)) for _, e in events),
                np.uint32,
                n,
            ),
            dims=[],
            sensor=np.fromiter((SENSOR_CODES[e.sensor_type] for _, e in events), np.uint8, n),
            value=np.fromiter((e.value for _, e in events), np.float64, n),
            ts_us=np.fromiter((e.ts_event_us for _, e in events), np.int64, n),
            unit_given=np.fromiter((e.unit is not None for _, e in events), np.bool_, n),
            invalid=invalid,
        )
        batch.devices = list(devices)
        batch.dims = list(dims)
        return batch


def validate_one(value: bytes | None, now_us: int) -> Event | Invalid:
    """`models.validate_event`, plus what the worker says of an empty value and of a validator failure."""
    if value is None:
        return Invalid("invalid_json", "empty message value (tombstone)")
    try:
        return validate_event(value, now_us)
    except Exception as e:  # the worker never dies on data
        return Invalid("processing_error", f"{type(e).__name__}: {e}")


def decode_batch_reference(values: Sequence[bytes | None], now_us: int) -> DecodedBatch:
    """The reference: one `validate_one` per input. `decode_batch` must give exactly this."""
    events: list[tuple[int, Event]] = []
    invalid: list[tuple[int, Invalid]] = []
    for position, value in enumerate(values):
        result = validate_one(value, now_us)
        if isinstance(result, Invalid):
            invalid.append((position, result))
        else:
            events.append((position, result))
    return DecodedBatch.from_events(events, invalid)


# ---------------------------------------------------------------------------------------------------------------
# The batch.


def decode_batch(values: Sequence[bytes | None], now_us: int) -> DecodedBatch:
    """The valid events of `values` as columns and the invalid ones with their reason: exactly
    `decode_batch_reference(values, now_us)`, with the devices and dims possibly in another order."""
    try:
        return decode_batch_fast(values, now_us)
    except Exception:  # a fault of the fast path must not stop the worker on data; the reference is exact
        log.exception(
            "decode_batch: the fast path failed on %d values; decoding them one by one", len(values)
        )
        return decode_batch_reference(values, now_us)


def decode_batch_fast(values: Sequence[bytes | None], now_us: int) -> DecodedBatch:
    """`decode_batch` without its safety net (tests call this, so that a fault of the fast path shows)."""
    n = len(values)
    decoded, failed = decode_fields.decode_typed(values)
    to_reference: list[int] = []
    for position in failed:
        fields = decode_fields.decode_among_others(values[position])
        if fields is None:
            to_reference.append(position)
        else:
            decoded[position] = fields
    if to_reference:
        structs = list(filter(None, decoded))  # a Struct is always true
        positions = np.delete(np.arange(n, dtype=np.int64), to_reference)
    else:
        structs = decoded
        positions = np.arange(n, dtype=np.int64)

    m = len(structs)
    ok, event_id = decode_fields.event_id_bytes(list(map(decode_fields.get_event_id, structs)))
    ts_ok, ts_us = decode_fields.timestamps_us(list(map(decode_fields.get_ts, structs)))
    sensors = list(map(decode_fields.get_sensor, structs))
    sensor = np.fromiter(map(SENSOR_CODES.__getitem__, sensors), np.uint8, m)
    unit_ok, unit_given = decode_fields.units(list(map(decode_fields.get_unit, structs)), sensors, sensor)
    value = np.fromiter(map(decode_fields.get_value, structs), np.float64, m)
    dim, dim_index = decode_fields.dims(structs)
    dim_ok = decode_fields.dims_ok(dim_index)
    ok &= ts_ok & (ts_us - now_us <= MAX_FUTURE_US) & decode_fields.values_ok(sensor, value)
    if unit_ok is not None:
        ok &= unit_ok
    if dim_ok is not None:
        ok &= dim_ok[dim]

    if not ok.all():
        to_reference.extend(positions[~ok].tolist())
        to_reference.sort()
        positions, event_id, dim, sensor, value, ts_us, unit_given = (
            column[ok] for column in (positions, event_id, dim, sensor, value, ts_us, unit_given)
        )
    columns = _Columns(positions, event_id, dim, sensor, value, ts_us, unit_given)

    invalid: list[tuple[int, Invalid]] = []
    events: list[tuple[int, Event]] = []
    for position in to_reference:
        result = validate_one(values[position], now_us)
        if isinstance(result, Invalid):
            invalid.append((position, result))
        else:  # a form the fast path leaves to the reference: another timestamp form, extra nested fields…
            events.append((position, result))
    if events:
        columns = columns.merged(_Columns.of_events(events, dim_index))
    return columns.batch(dim_index, invalid)


@dataclass(slots=True)
class _Columns:
    """Valid events as columns, `dim` indexing a dims dict shared by the parts of one batch."""

    positions: np.ndarray
    event_id: np.ndarray
    dim: np.ndarray
    sensor: np.ndarray
    value: np.ndarray
    ts_us: np.ndarray
    unit_given: np.ndarray

    @classmethod
    def of_events(
        cls, events: list[tuple[int, Event]], dim_index: dict[tuple[str, str, str], int]
    ) -> _Columns:
        n = len(events)
        return cls(
            positions=np.fromiter((p for p, _ in events), np.int64, n),
            event_id=np.array([uuid.UUID(e.event_id).bytes for _, e in events], dtype="V16").reshape(n),
            dim=np.fromiter(
                (
                    dim_index.setdefault((e.device_id, e.site_id, e.zone_id), len(dim_index))
                    for _, e in events
                ),
                np.uint32,
                n,
            ),
            sensor=np.fromiter((SENSOR_CODES[e.sensor_type] for _, e in events), np.uint8, n),
            value=np.fromiter((e.value for _, e in events), np.float64, n),
            ts_us=np.fromiter((e.ts_event_us for _, e in events), np.int64, n),
            unit_given=np.fromiter((e.unit is not None for _, e in events), np.bool_, n),
        )

    def merged(self, other: _Columns) -> _Columns:
        """Both parts, in input order."""
        order = np.argsort(np.concatenate((self.positions, other.positions)), kind="stable")
        return _Columns(
            *(
                np.concatenate((getattr(self, column.name), getattr(other, column.name)))[order]
                for column in fields(self)
            )
        )

    def batch(
        self, dim_index: dict[tuple[str, str, str], int], invalid: list[tuple[int, Invalid]]
    ) -> DecodedBatch:
        """The DecodedBatch, its dims only those of valid events (rejected inputs also entered `dim_index`)."""
        dims = list(dim_index)
        dim = self.dim
        used = np.zeros(len(dims), np.bool_)
        used[dim] = True
        if not used.all():
            renumber = np.cumsum(used, dtype=np.int64) - 1
            dim = renumber[dim].astype(np.uint32)
            dims = [key for key, keep in zip(dims, used.tolist(), strict=True) if keep]
        device_index: dict[str, int] = {}
        device_of_dim = np.fromiter(
            (device_index.setdefault(key[0], len(device_index)) for key in dims), np.uint32, len(dims)
        )
        return DecodedBatch(
            valid=self.positions,
            event_id=self.event_id,
            device=device_of_dim[dim],
            devices=list(device_index),
            dim=dim,
            dims=dims,
            sensor=self.sensor,
            value=self.value,
            ts_us=self.ts_us,
            unit_given=self.unit_given,
            invalid=invalid,
        )
