"""The API's pure helpers (no services): query times, cursors, window flooring, levels, percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from devkit.api_load import percentile
from telemetrypulse.api.deps import parse_query_time
from telemetrypulse.api.errors import InvalidParameter
from telemetrypulse.api.routes.alerts import decode_cursor, encode_cursor, resume_point
from telemetrypulse.api.routes.common import level_of
from telemetrypulse.api.routes.trends import floor_to_window
from telemetrypulse.api.schemas import WindowSize


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00 02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # '+' decoded as a space
        ("2024-05-01T07:30:00.250-04:30", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("20240501T120000Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_query_times_with_any_offset_become_utc(text, expected):
    parsed = parse_query_time(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text,words",
    [
        ("2024-05-01T12:00:00", "no UTC offset"),
        ("2024-05-01", "no UTC offset"),
        ("noon", "not an ISO-8601"),
        ("1700000000", "not an ISO-8601"),
        ("1969-12-31T23:59:59Z", "out of range"),
        ("9999-12-31T23:59:59+00:00", "out of range"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
    ],
)
def test_bad_query_times_say_why(text, words):
    with pytest.raises(ValueError, match=words):
        parse_query_time(text)


def test_cursor_round_trip_and_garbage():
    opened = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    alert_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(opened, alert_id)) == (opened, alert_id)
    for garbage in ("", "!!!", "MTIz", encode_cursor(opened, alert_id)[:-3]):
        with pytest.raises(InvalidParameter):
            decode_cursor(garbage)


def test_resume_point_prefers_the_header():
    assert resume_point(None, None) is None
    assert resume_point(None, 7) == 7
    assert resume_point(" 12 ", 7) == 12
    assert resume_point("", 7) == 7
    for bad in ("-1", "abc", "1e3", str(2**63)):
        with pytest.raises(InvalidParameter):
            resume_point(bad, None)


def test_floor_to_window_is_exact_at_the_edge():
    edge = datetime(2024, 5, 1, 12, 4, 59, 999999, tzinfo=UTC)
    assert floor_to_window(edge, WindowSize.five_minutes) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert floor_to_window(edge + timedelta(microseconds=1), WindowSize.five_minutes) == datetime(
        2024, 5, 1, 12, 5, tzinfo=UTC
    )
    assert floor_to_window(edge, WindowSize.fifteen_minutes) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert floor_to_window(datetime(2024, 5, 1, 12, 29, tzinfo=UTC), WindowSize.fifteen_minutes).minute == 15


@pytest.mark.parametrize(
    "sensor,value,level",
    [
        ("co2", 950.0, "ok"),
        ("co2", 950.5, "warn"),
        ("co2", 1000.0, "warn"),
        ("co2", 1000.1, "alert"),
        ("temperature", 29.0, "ok"),
        ("temperature", 30.5, "alert"),
        ("humidity", 78.0, "warn"),
        ("occupancy", 500.0, None),
        ("co2", None, None),
    ],
)
def test_levels_follow_the_alert_thresholds(sensor, value, level):
    assert level_of(sensor, value) == level


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_serve_without_a_database_url_fails_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "API_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "telemetrypulse.api.main", "--port", "1"],
        cwd=tmp_path,  # no .devstack/env or .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "DATABASE_URL" in done.stderr
