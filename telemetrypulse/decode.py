"""Decoding and validation of a whole batch of message values into columns (SPEC §3).

`decode_batch` gives, for every input, exactly what `models.validate_event` gives — the same event or the same
`Invalid` — but as columns for the worker's per-batch folding.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from telemetrypulse.changes import SENSOR_CODES
from telemetrypulse.models import Event, Invalid, validate_event


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


def decode_batch(values: Sequence[bytes | None], now_us: int) -> DecodedBatch:
    """The reference implementation: one `validate_event` per input."""
    events: list[tuple[int, Event]] = []
    invalid: list[tuple[int, Invalid]] = []
    for position, value in enumerate(values):
        result = validate_one(value, now_us)
        if isinstance(result, Invalid):
            invalid.append((position, result))
        else:
            events.append((position, result))
    return DecodedBatch.from_events(events, invalid)
