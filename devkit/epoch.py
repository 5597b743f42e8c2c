"""Time as integer µs since the Unix epoch (UTC), the unit of event time everywhere in the pipeline — written once
for the tests and the bench, apart from the runtime's own helpers (models.py), so that what checks the runtime does
not reuse it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """Exact µs since the epoch of an aware datetime (no float rounding)."""
    return (moment - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def parse_us(text: str) -> int:
    """µs since the epoch of an ISO-8601 time with an offset."""
    return to_us(datetime.fromisoformat(text))


def iso(us: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ`: µs precision, UTC."""
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def floor_us(us: int, size_s: int) -> int:
    """The start of the `size_s` window, aligned to the epoch, that holds `us`."""
    size_us = size_s * 1_000_000
    return us // size_us * size_us
