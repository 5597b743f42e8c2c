"""The fast path's field checks (see `decode`): typed decoding of message values with msgspec into the event's
fields, and batch-wide numpy checks of each field — event ids, timestamps, units, value ranges, identifiers.

Each check answers, per event, whether the reference (`models.validate_event`) certainly accepts the field with the
very value computed here; anything else is left to the reference by `decode.decode_batch_fast`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from itertools import chain
from operator import attrgetter, ne
from typing import Literal

import msgspec
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from telemetrypulse.changes import SENSOR_CODES, SENSORS
from telemetrypulse.models import ID_PATTERN, SENSOR_RANGES, SENSOR_UNITS, is_identifier

# ---------------------------------------------------------------------------------------------------------------
# Typed decoding.


class EventFields(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The fields of SPEC §3 and no other. A missing field, a null or a wrong JSON type fails the decoding (the
    reference then says which); `unit` null or absent is None, as in the reference."""

    event_id: str
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: Literal[SENSORS]  # type: ignore[valid-type]  # msgspec returns the same str object every time
    value: float  # JSON true/false are not numbers here either; NaN and overflow fail
    ts_event: str
    unit: Literal[tuple(SENSOR_UNITS.values())] | None = None  # type: ignore[valid-type]


class _EventFieldsAmongOthers(EventFields, forbid_unknown_fields=False, gc=False):
    """The same fields in an object that has others too: msgspec skips those."""


_decode_exact = msgspec.json.Decoder(EventFields).decode
_decode_skipping = msgspec.json.Decoder(_EventFieldsAmongOthers).decode

# `{` and `[` in a value bound its nesting depth. orjson fails beyond depth 1024, and msgspec and Python's json
# beyond what is left of the recursion limit, so the reference's verdict on deep values depends on the stack;
# what msgspec skipped must be far below all of these.
_MAX_OPENERS = 64


def decode_typed(values: Sequence[bytes | None]) -> tuple[list[EventFields | None], list[int]]:
    """One `EventFields` per value, None where the exact decoding failed; and those positions."""
    decoded: list[EventFields | None] = []
    failed: list[int] = []
    remaining = iter(values)
    while True:
        try:
            # One C loop over each run of decodable values. list.extend keeps what it appended before the
            # exception, so the value that raised is at position len(decoded), and the loop goes on after it.
            decoded.extend(map(_decode_exact, remaining))
            return decoded, failed
        except Exception:  # a decode error, a tombstone (TypeError), a recursion error…
            failed.append(len(decoded))
            decoded.append(None)


def decode_among_others(value: bytes) -> EventFields | None:
    """The event fields of a value that msgspec decodes only by skipping other fields, if what it skips is
    something the reference's parser (orjson) also reads; else None."""
    try:
        # msgspec does not check the UTF-8 of strings it skips; orjson rejects invalid UTF-8 anywhere.
        if not value.isascii():
            value.decode("utf-8")
        if value.count(b"{") + value.count(b"[") > _MAX_OPENERS:
            return None
        return _decode_skipping(value)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Batch-wide checks of the decoded fields.

_NO_UNIT = 255
# A unit's code is the code of the sensor it belongs to, so "the unit matches the sensor" is unit == sensor.
_UNIT_CODES: dict[str | None, int] = {SENSOR_UNITS[name]: code for name, code in SENSOR_CODES.items()}
_UNIT_CODES[None] = _NO_UNIT
_OCCUPANCY = SENSOR_CODES["occupancy"]
# Inclusive bounds per sensor code; occupancy: an integer >= 0 (integrality checked apart).
_LOW = np.array([SENSOR_RANGES.get(name, (0.0, np.inf))[0] for name in SENSORS])
_HIGH = np.array([SENSOR_RANGES.get(name, (0.0, np.inf))[1] for name in SENSORS])
assert set(SENSORS) == set(SENSOR_UNITS) and set(SENSOR_RANGES) == set(SENSORS) - {"occupancy"}

get_event_id = attrgetter("event_id")
_get_dim = attrgetter("device_id", "site_id", "zone_id")
_get_device = attrgetter("device_id")
_get_site = attrgetter("site_id")
_get_zone = attrgetter("zone_id")
get_sensor = attrgetter("sensor_type")
get_value = attrgetter("value")
get_ts = attrgetter("ts_event")
get_unit = attrgetter("unit")


class _Texts:
    """Strings laid out for numpy: ASCII-encoded in `encoded`/`chars`, each followed by a newline. When all have
    the same length, `width` says it; else string i is `chars[starts[i] : starts[i] + lengths[i]]`. A non-ASCII
    string has length -1 and no chars (no fast-path form has any)."""

    __slots__ = ("chars", "encoded", "lengths", "starts", "texts", "width")

    def __init__(self, texts: list[str]) -> None:
        n = len(texts)
        joined = "\n".join([*texts, ""])
        ascii_: np.ndarray | None = None
        if not joined.isascii():  # O(1) for a str
            ascii_ = np.fromiter(map(str.isascii, texts), np.bool_, n)
            texts = [t if a else "" for t, a in zip(texts, ascii_, strict=True)]
            joined = "\n".join([*texts, ""])
        self.texts = texts
        self.encoded = joined.encode("ascii")
        self.chars = chars = np.frombuffer(self.encoded, np.uint8)
        newlines = chars == ord("\n")
        # With exactly n newlines, no string holds one: the newlines are the separators and give every length.
        separated = ascii_ is None and np.count_nonzero(newlines) == n
        width = len(texts[0]) if n else 0
        if separated and len(chars) == n * (width + 1) and newlines[width :: width + 1].all():
            self.width: int | None = width
            return
        self.width = None
        if separated:
            ends = np.flatnonzero(newlines)
        else:
            ends = np.cumsum(np.fromiter(map(len, texts), np.intp, n) + 1) - 1
        self.starts = np.concatenate(([0], ends[:-1] + 1))
        self.lengths = ends - self.starts
        if ascii_ is not None:
            self.lengths[~ascii_] = -1

    def common_lengths(self, shortest: int, longest: int, min_count: int) -> list[int]:
        """The lengths from `shortest` to `longest` that at least `min_count` strings have (all strings, if there
        are fewer), the most common first."""
        if self.width is not None:
            return [self.width] if shortest <= self.width <= longest else []
        counts = np.bincount(np.clip(self.lengths, 0, longest + 1), minlength=longest + 2)
        counts[:shortest] = counts[longest + 1 :] = 0
        common = np.flatnonzero(counts >= min(min_count, len(self.lengths)))
        return common[np.argsort(-counts[common], kind="stable")].tolist()

    def rows_of_length(self, length: int) -> tuple[np.ndarray | slice, np.ndarray]:
        """(rows, block): the strings of exactly `length` chars as a (rows, length) uint8 array. When they are more
        than half of the strings, the block has a row for every string (`rows` is all), of NULs for the others,
        which no check takes: write its results first, then those of other lengths."""
        n = len(self.texts)
        if self.width == length:
            return slice(None), self.chars.reshape(n, length + 1)[:, :length]
        if self.width is not None:
            return np.zeros(0, np.intp), np.zeros((0, length), np.uint8)
        rows = np.flatnonzero(self.lengths == length)
        if not len(rows):
            return rows, np.zeros((0, length), np.uint8)
        if 2 * len(rows) > n:  # one more join is cheaper than gathering most rows one by one
            texts = list(self.texts)
            filler = "\0" * length
            for i in np.flatnonzero(self.lengths != length).tolist():
                texts[i] = filler
            chars = np.frombuffer("\n".join([*texts, ""]).encode("ascii"), np.uint8)
            return slice(None), chars.reshape(n, length + 1)[:, :length]
        return rows, sliding_window_view(self.chars, length)[self.starts[rows]]


_UUID_HYPHENS = [8, 13, 18, 23]
_UUID_HEX = [i for i in range(36) if i not in _UUID_HYPHENS]
_HEX_VALUE = np.full(256, 255, np.uint8)
for _digit in "0123456789abcdef":
    _HEX_VALUE[ord(_digit)] = _HEX_VALUE[ord(_digit.upper())] = int(_digit, 16)


def event_id_bytes(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ok, V16): the 16 bytes of each canonical 8-4-4-4-12 hex UUID, either case (models' UUID pattern)."""
    n = len(ids)
    texts = _Texts(ids)
    rows, block = texts.rows_of_length(36)
    hyphens = block[:, _UUID_HYPHENS] == ord("-")
    if texts.width == 36 and hyphens.all():
        # Every id is 36 chars with its 4 hyphens in place. Without hyphens and newlines, 32 chars per id are
        # left exactly when there is no other hyphen, and bytes.fromhex gives 16 bytes per id exactly when all of
        # them are hex digits (it fails on any other char; whitespace would leave fewer bytes).
        hex_digits = texts.encoded.translate(None, b"-\n")
        if len(hex_digits) == 32 * n:
            try:
                packed = bytes.fromhex(hex_digits.decode("ascii"))
            except ValueError:
                packed = b""
            if len(packed) == 16 * n:
                return np.ones(n, np.bool_), np.frombuffer(packed, "V16").copy()
    nibbles = _HEX_VALUE[block[:, _UUID_HEX]]
    ok = np.zeros(n, np.bool_)
    ok[rows] = hyphens.all(axis=1) & (nibbles < 16).all(axis=1)
    columns = np.zeros((n, 16), np.uint8)
    columns[rows] = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return ok, columns.view("V16").reshape(n)


# `YYYY-MM-DDTHH:MM:SS` occupies positions 0-18 of every fast-path timestamp.
_DATE_TIME_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SHORTEST_TS, _LONGEST_TS = len("2026-01-01T00:00:00Z"), 64
_US_PER_S = 1_000_000


def _number(digits: np.ndarray, first: int, count: int) -> np.ndarray:
    """The decimal number in `count` digit positions from `first` (int64, one per timestamp)."""
    number = digits[first].astype(np.int64)
    for position in range(first + 1, first + count):
        number *= 10
        number += digits[position]
    return number


def _day_number(yyyymmdd: int) -> int | None:
    """Days since 1970-01-01 of a YYYYMMDD date, if `datetime.date` takes it (the reference's own check)."""
    year, month_day = divmod(yyyymmdd, 10_000)
    try:
        return date(year, *divmod(month_day, 100)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None


def _days_since_epoch(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ok, days since 1970-01-01) of dates written as YYYYMMDD integers. A batch holds one date or a few: each
    distinct one is converted once."""
    ok = np.zeros(len(dates), np.bool_)
    days = np.zeros(len(dates), np.int64)
    rest = dates
    rows: np.ndarray | slice = slice(None)
    for _ in range(8):
        if not len(rest):
            return ok, days
        first = int(rest[0])
        same = rest == first
        day = _day_number(first)
        if same.all():
            if day is not None:
                ok[rows], days[rows] = True, day
            return ok, days
        rows = np.arange(len(dates))[rows] if isinstance(rows, slice) else rows
        if day is not None:
            ok[rows[same]], days[rows[same]] = True, day
        rows, rest = rows[~same], rest[~same]
    distinct, which = np.unique(rest, return_inverse=True)  # many dates: a replay of sparse history
    numbers = [_day_number(d) for d in distinct.tolist()]
    ok[rows] = np.array([n is not None for n in numbers])[which]
    days[rows] = np.array([n or 0 for n in numbers], np.int64)[which]
    return ok, days


def _fraction_us(chars: np.ndarray, digits: np.ndarray, end: int) -> tuple[np.ndarray, np.ndarray]:
    """(ok, µs) of the fraction in positions 19..end-1: none, or `.` and at least one digit, cut to µs (as
    `datetime.fromisoformat` does). A `.` without digits is left to the reference."""
    rows = chars.shape[1]
    if end == 19:
        return np.ones(rows, np.bool_), np.zeros(rows, np.int64)
    if end == 20:
        return np.zeros(rows, np.bool_), np.zeros(rows, np.int64)
    ok = (chars[19] == ord(".")) & (digits[20:end] <= 9).all(axis=0)
    kept = min(end - 20, 6)
    return ok, _number(digits, 20, kept) * 10 ** (6 - kept)


def _timestamp_block_us(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ok, µs since the epoch) of timestamps all `length` chars long:
    `YYYY-MM-DD(T|t)HH:MM:SS[.f+](Z|z|±hh:mm)`, every field in range (what `datetime.fromisoformat` accepts of
    this form). Rows not ok hold meaningless µs."""
    length = block.shape[1]
    # One row per character position: every check below runs on contiguous memory.
    chars = np.ascontiguousarray(block.T)
    digits = chars - np.uint8(ord("0"))  # non-digits wrap above 9
    ok = (
        (chars[4] == ord("-"))
        & (chars[7] == ord("-"))
        & ((chars[10] | 0x20) == ord("t"))
        & (chars[13] == ord(":"))
        & (chars[16] == ord(":"))
        & (digits[_DATE_TIME_DIGITS] <= 9).all(axis=0)
    )
    hour, minute, second = _number(digits, 11, 2), _number(digits, 14, 2), _number(digits, 17, 2)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    dates = _number(digits, 0, 4) * 10_000 + _number(digits, 5, 2) * 100 + _number(digits, 8, 2)
    date_ok, days = _days_since_epoch(np.where(ok, dates, 19700101))
    ok &= date_ok

    zulu = (chars[length - 1] | 0x20) == ord("z")
    zulu_fraction_ok, fraction = _fraction_us(chars, digits, length - 1)
    zone_ok = zulu & zulu_fraction_ok
    offset_s: np.ndarray | int = 0
    if length >= 25:  # room for ±hh:mm
        sign = chars[length - 6]
        hours, minutes = _number(digits, length - 5, 2), _number(digits, length - 2, 2)
        offset_fraction_ok, offset_fraction = _fraction_us(chars, digits, length - 6)
        offset_ok = (
            ~zulu
            & ((sign == ord("+")) | (sign == ord("-")))
            & (chars[length - 3] == ord(":"))
            & (digits[[length - 5, length - 4, length - 2, length - 1]] <= 9).all(axis=0)
            & (hours <= 23)
            & (minutes <= 59)
            & offset_fraction_ok
        )
        if offset_ok.any():
            zone_ok |= offset_ok
            fraction = np.where(zulu, fraction, offset_fraction)
            offset_s = np.where(
                offset_ok, (hours * 3600 + minutes * 60) * np.where(sign == ord("-"), -1, 1), 0
            )
    ok &= zone_ok

    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s
    return ok, seconds * _US_PER_S + fraction


def timestamps_us(ts_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ok, µs since the epoch) per timestamp text; ok False for any form the fast path does not take."""
    n = len(ts_texts)
    texts = _Texts(ts_texts)
    ok = np.zeros(n, np.bool_)
    ts_us = np.zeros(n, np.int64)
    # A few strings of some other length cost the reference less than the ~60 numpy calls of one more block.
    # The most common length first: its block may cover every row (see rows_of_length).
    for length in texts.common_lengths(_SHORTEST_TS, _LONGEST_TS, min_count=16):
        rows, block = texts.rows_of_length(length)
        ok[rows], ts_us[rows] = _timestamp_block_us(block)
    return ok, ts_us


def units(
    units: list[str | None], sensors: list[str], sensor: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """(ok, given): whether each unit is absent or its sensor's (ok None: all are), and whether it is given.
    msgspec returns the Literal's own str objects, so comparing whole lists mostly compares identities."""
    n = len(units)
    if units == list(map(SENSOR_UNITS.__getitem__, sensors)):
        return None, np.ones(n, np.bool_)
    if units.count(None) == n:
        return None, np.zeros(n, np.bool_)
    unit = np.fromiter(map(_UNIT_CODES.__getitem__, units), np.uint8, n)
    return (unit == _NO_UNIT) | (unit == sensor), unit != _NO_UNIT


def values_ok(sensor: np.ndarray, value: np.ndarray) -> np.ndarray:
    ok = np.isfinite(value) & (value >= _LOW[sensor]) & (value <= _HIGH[sensor])
    return ok & ((sensor != _OCCUPANCY) | (np.floor(value) == value))


def dims(structs: list[EventFields]) -> tuple[np.ndarray, dict[tuple[str, str, str], int]]:
    """(dim, dims): each event's index into the distinct (device_id, site_id, zone_id) of the batch."""
    n = len(structs)
    devices: dict[str, int] = {}
    dim = np.fromiter([devices.setdefault(d, len(devices)) for d in map(_get_device, structs)], np.uint32, n)
    # A device normally keeps its site and zone: then a dim per device, and hashing one string per event instead
    # of a tuple of three saves most of the cost. Each event's site and zone are compared (one C loop each) with
    # those of its device's first event: where the running maximum of `dim` grows (indices are given in order).
    sites, zones = list(map(_get_site, structs)), list(map(_get_zone, structs))
    first = np.flatnonzero(dim > np.concatenate(([-1], np.maximum.accumulate(dim)[:-1]))) if n else dim
    first_rows = first.tolist()
    dims = {
        key: i
        for i, key in enumerate(
            zip(devices, map(sites.__getitem__, first_rows), map(zones.__getitem__, first_rows), strict=True)
        )
    }
    first_of_event = first[dim].tolist()
    expected_sites = list(map(sites.__getitem__, first_of_event))
    expected_zones = list(map(zones.__getitem__, first_of_event))
    if sites != expected_sites or zones != expected_zones:  # an event elsewhere than its device's first
        moved = np.fromiter(map(ne, sites, expected_sites), np.bool_, n)
        moved |= np.fromiter(map(ne, zones, expected_zones), np.bool_, n)
        for i in np.flatnonzero(moved).tolist():
            dim[i] = dims.setdefault((structs[i].device_id, sites[i], zones[i]), len(dims))
    return dim, dims


# Newline-terminated identifiers, to check the distinct ones of a batch in one regex call.
_IDENTIFIER_LINES = re.compile(f"(?:{ID_PATTERN}\n)*")


def dims_ok(dim_index: dict[tuple[str, str, str], int]) -> np.ndarray | None:
    """Per distinct dim, whether its three ids are identifiers of SPEC §3; None when all are."""
    texts = set(chain.from_iterable(dim_index))
    lines = "\n".join([*texts, ""])
    # With one newline per string, none holds one: then each line is one string, whole.
    if lines.count("\n") == len(texts) and _IDENTIFIER_LINES.fullmatch(lines):
        return None
    invalid = {text for text in texts if not is_identifier(text)}
    return np.fromiter((invalid.isdisjoint(key) for key in dim_index), np.bool_, len(dim_index))
