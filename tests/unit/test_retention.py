"""Retention rules (telemetrypulse/retention.py) without services: which boundaries a policy asks for, that they
only move forward, which daily partitions go, and that a failing run never raises into the worker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from telemetrypulse.retention import (
    Boundaries,
    RetentionJob,
    RetentionPolicy,
    boundaries_for,
    partitions_to_drop,
)
from telemetrypulse.settings import Settings

NOW = datetime(2024, 5, 10, 14, 37, 12, 345678, tzinfo=UTC)


def test_the_policy_asks_whole_days_for_raw_and_15_minute_windows():
    b = boundaries_for(RetentionPolicy(raw_days=7, window_5m_days=2, window_15m_days=30), NOW)
    assert b.raw_before == datetime(2024, 5, 3, tzinfo=UTC)  # the day of now - 7 d, from its midnight
    assert b.window_5m_before == NOW - timedelta(days=2)  # to the microsecond
    assert b.window_15m_before == datetime(2024, 4, 10, tzinfo=UTC)


def test_zero_keeps_forever():
    assert boundaries_for(RetentionPolicy(), NOW) == Boundaries()
    assert not RetentionPolicy().enabled
    assert RetentionPolicy(window_5m_days=1).enabled
    assert boundaries_for(RetentionPolicy(raw_days=1), NOW).window_15m_before is None


def test_boundaries_of_a_clock_in_another_zone_are_utc_midnights():
    from datetime import timezone

    local = NOW.astimezone(timezone(timedelta(hours=-9)))  # 05:37 the same day there
    assert boundaries_for(RetentionPolicy(raw_days=1), local).raw_before == datetime(2024, 5, 9, tzinfo=UTC)


def test_boundaries_only_move_forward():
    old = Boundaries(
        raw_before=datetime(2024, 5, 5, tzinfo=UTC),
        window_5m_before=NOW,
        window_15m_before=None,
    )
    shorter_period_later = boundaries_for(
        RetentionPolicy(raw_days=2, window_5m_days=1, window_15m_days=3), NOW
    )
    moved = old.advanced_to(shorter_period_later)
    assert moved.raw_before == datetime(2024, 5, 8, tzinfo=UTC)
    assert moved.window_5m_before == NOW  # now - 1 d is behind what is already gone
    assert moved.window_15m_before == datetime(2024, 5, 7, tzinfo=UTC)
    # Retention turned off (or lengthened) later: what is gone stays refused.
    assert moved.advanced_to(boundaries_for(RetentionPolicy(), NOW)) == moved


def test_a_day_goes_only_once_it_is_wholly_before_the_boundary():
    partitions = {date(2024, 5, d): f"telemetry_events_202405{d:02d}" for d in range(1, 11)}
    boundary = datetime(2024, 5, 3, tzinfo=UTC)
    assert partitions_to_drop(partitions, boundary) == [
        "telemetry_events_20240501",
        "telemetry_events_20240502",
    ]
    assert partitions_to_drop(partitions, boundary + timedelta(microseconds=1)) == [
        "telemetry_events_20240501",
        "telemetry_events_20240502",
    ]
    assert partitions_to_drop(partitions, None) == []
    assert partitions_to_drop({}, boundary) == []


def test_settings_name_a_bad_retention_value(monkeypatch):
    from telemetrypulse.exceptions import SettingsError
    from telemetrypulse.settings import get_settings

    for name, value in (
        ("RAW_RETENTION_DAYS", "-1"),
        ("WINDOW_5M_RETENTION_DAYS", "a week"),
        ("WINDOW_15M_RETENTION_DAYS", "1.5"),
    ):
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        try:
            with pytest.raises(SettingsError) as refused:
                get_settings()
        finally:
            monkeypatch.delenv(name)
            get_settings.cache_clear()
        message = str(refused.value)
        assert message.startswith(f"{name}:") and "\n" not in message


def test_policy_from_settings():
    settings = Settings(raw_retention_days=30, window_5m_retention_days=7, window_15m_retention_days=90)
    policy = RetentionPolicy.from_settings(settings)
    assert policy == RetentionPolicy(raw_days=30, window_5m_days=7, window_15m_days=90)
    assert (
        "raw readings 30 d" in policy.describe() and "hourly and daily windows forever" in policy.describe()
    )
    assert RetentionPolicy.from_settings(Settings()) == RetentionPolicy()


async def test_a_run_against_an_unreachable_database_never_raises_and_is_retried_soon(caplog):
    # A port nobody listens on: connection refused at once.
    job = RetentionJob(
        "postgresql://nobody:nothing@127.0.0.1:9/none",
        RetentionPolicy(raw_days=1),
        interval_s=3600,
        retry_s=42,
    )
    before = time.monotonic()
    assert await job.run_if_due() is None
    assert before + 41 < job._due < time.monotonic() + 43
    assert "retention:" in caplog.text and "next try in 42s" in caplog.text
    assert await job.run_if_due() is None  # not due again yet: no second attempt


async def test_a_disabled_policy_never_connects():
    job = RetentionJob("postgresql://nobody:nothing@127.0.0.1:9/none", RetentionPolicy())
    job.run = None  # would raise TypeError if called
    assert await job.run_if_due() is None


async def test_runs_never_overlap():
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    class Slow(RetentionJob):
        async def run(self):
            nonlocal calls
            calls += 1
            started.set()
            await release.wait()
            return "report"

    job = Slow("postgresql://unused", RetentionPolicy(raw_days=1))
    first = asyncio.create_task(job.run_if_due())
    await started.wait()
    assert await job.run_if_due() is None  # the timer ticking while the start run is under way
    release.set()
    assert await first == "report"
    assert calls == 1
    assert await job.run_if_due() is None  # next one an hour later
