"""CSV text of the API (telemetrypulse/api/csv_export.py): RFC 4180 records, values as the JSON gives them."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from telemetrypulse.api.csv_export import encode_rows, header, text_of
from telemetrypulse.api.routes.readings import day_slices
from telemetrypulse.api.schemas import SensorType


def test_values_read_back_as_the_json_has_them():
    moment = datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert text_of(moment) == "2024-05-01T12:00:00.000005Z"
    assert text_of(0.1 + 0.2) == "0.30000000000000004" and float(text_of(1e-300)) == 1e-300
    assert (text_of(True), text_of(False), text_of(None)) == ("true", "false", "")
    assert text_of(7) == "7" and text_of(SensorType.co2) == "co2"
    some = uuid.uuid4()
    assert text_of(some) == str(some)
    with pytest.raises(TypeError):
        text_of(object())


def test_records_are_rfc_4180():
    tricky = ["plain", "with, comma", 'with "quotes"', "two\nlines", "", None, 1.5]
    data = encode_rows([tricky, ["a", "b"]])
    assert data == b'plain,"with, comma","with ""quotes""","two\nlines",,,1.5\r\na,b\r\n'
    back = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert back == [["plain", "with, comma", 'with "quotes"', "two\nlines", "", "", "1.5"], ["a", "b"]]
    assert header(["x", "y"]) == b"x,y\r\n"


def test_a_range_is_cut_at_utc_midnights():
    start = datetime(2024, 5, 1, 22, 30, tzinfo=UTC)
    slices = day_slices(start, start + timedelta(days=2))
    assert slices == [
        (start, datetime(2024, 5, 2, tzinfo=UTC)),
        (datetime(2024, 5, 2, tzinfo=UTC), datetime(2024, 5, 3, tzinfo=UTC)),
        (datetime(2024, 5, 3, tzinfo=UTC), start + timedelta(days=2)),
    ]
    assert day_slices(start, start + timedelta(minutes=5)) == [(start, start + timedelta(minutes=5))]
    midnight = datetime(2024, 5, 2, tzinfo=UTC)
    assert day_slices(midnight, midnight + timedelta(days=1)) == [(midnight, midnight + timedelta(days=1))]
