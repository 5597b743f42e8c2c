"""The PostgreSQL sink: writes a batch of worker changes (raw events, windows, latest values, alerts)
in one transaction, idempotently.

Every statement is safe to repeat: raw events `ON CONFLICT DO NOTHING`; windows and latest values
only move forward (`WHERE excluded.version > current.version`, the version being the source offset
of the last event folded in); alerts only move from open to resolved, and their peak only up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, datetime, timedelta

import asyncpg
import orjson

from telemetrypulse import metrics
from telemetrypulse.db import DailyPartitions
from telemetrypulse.exceptions import SinkError

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
_EPOCH_DATE = date(1970, 1, 1)

EVENT_COLUMNS = [
    "event_id",
    "device_id",
    "site_id",
    "zone_id",
    "sensor_type",
    "value",
    "ts_us",
    "unit",
    "ingest_us",
    "late",
]
WINDOW_COLUMNS = [
    "size_s", "device_id", "sensor_type", "start_us", "site_id", "zone_id",
    "count_events", "sum_value", "min_value", "max_value", "first_us", "last_us", "version",
]  # fmt: skip
LATEST_COLUMNS = ["device_id", "sensor_type", "site_id", "zone_id", "value", "ts_us", "event_id", "version"]

# Staging tables live per connection; rows vanish at commit. Integer µs are turned into timestamps
# in SQL with exact interval arithmetic (no float rounding at window edges).
SETUP_SQL = """
CREATE TEMP TABLE IF NOT EXISTS sink_events (
    event_id text, device_id text, site_id text, zone_id text, sensor_type text, value float8,
    ts_us int8, unit text, ingest_us int8, late bool) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sink_windows (
    size_s int4, device_id text, sensor_type text, start_us int8, site_id text, zone_id text,
    count_events int8, sum_value float8, min_value float8, max_value float8, first_us int8, last_us int8,
    version int8) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sink_latest (
    device_id text, sensor_type text, site_id text, zone_id text, value float8, ts_us int8, event_id text,
    version int8) ON COMMIT DELETE ROWS;
"""

US = "'epoch'::timestamptz + {} * interval '1 microsecond'"

INSERT_EVENTS = f"""
INSERT INTO telemetry_events (event_id, device_id, site_id, zone_id, sensor_type, value, unit, ts_event, ts_ingest, late)
SELECT event_id::uuid, device_id, site_id, zone_id, sensor_type, value, unit,
       {US.format("ts_us")}, {US.format("ingest_us")}, late
FROM sink_events
ON CONFLICT DO NOTHING
"""

UPSERT_WINDOWS = f"""
INSERT INTO {{table}} AS t (window_start, window_end, device_id, site_id, zone_id, sensor_type, count_events,
                          sum_value, avg_value, min_value, max_value, first_ts, last_ts, version)
SELECT {US.format("start_us")}, {US.format("(start_us + size_s * 1000000::int8)")}, device_id, site_id, zone_id,
       sensor_type, count_events, sum_value, sum_value / count_events, min_value, max_value,
       {US.format("first_us")}, {US.format("last_us")}, version
FROM sink_windows WHERE size_s = $1
ON CONFLICT (device_id, sensor_type, window_start) DO UPDATE SET
    site_id = excluded.site_id, zone_id = excluded.zone_id, count_events = excluded.count_events,
    sum_value = excluded.sum_value, avg_value = excluded.avg_value, min_value = excluded.min_value,
    max_value = excluded.max_value, first_ts = excluded.first_ts, last_ts = excluded.last_ts,
    version = excluded.version, updated_at = now()
WHERE excluded.version > t.version
"""

UPSERT_LATEST = f"""
INSERT INTO telemetry_device_latest AS t (device_id, sensor_type, site_id, zone_id, value, ts_event, event_id, version)
SELECT device_id, sensor_type, site_id, zone_id, value, {US.format("ts_us")}, event_id::uuid, version
FROM sink_latest
ON CONFLICT (device_id, sensor_type) DO UPDATE SET
    site_id = excluded.site_id, zone_id = excluded.zone_id, value = excluded.value,
    ts_event = excluded.ts_event, event_id = excluded.event_id, version = excluded.version, updated_at = now()
WHERE excluded.version > t.version
"""

UPSERT_ALERT = """
INSERT INTO telemetry_alerts AS t (alert_id, status, rule, alert_type, device_id, site_id, zone_id, sensor_type,
                                   threshold, value, peak_value, opened_at, resolved_at, event_id, resolved_event_id)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::uuid, $15::uuid)
ON CONFLICT (alert_id) DO UPDATE SET
    status = excluded.status,
    peak_value = GREATEST(t.peak_value, excluded.peak_value),
    resolved_at = COALESCE(t.resolved_at, excluded.resolved_at),
    resolved_event_id = COALESCE(t.resolved_event_id, excluded.resolved_event_id)
WHERE t.status = 'open' AND (excluded.status = 'resolved' OR excluded.peak_value > t.peak_value)
"""


class Changes:
    """Changes of several worker batches folded into one write: each row once, its newest version."""

    def __init__(self) -> None:
        self.events: dict[tuple, tuple] = {}
        self.windows: dict[tuple, list] = {}
        self.latest: dict[tuple, list] = {}
        self.alerts: dict[str, dict] = {}

    def add(self, message: dict) -> None:
        for row in message["events"]:
            self.events.setdefault((row[0], row[1], row[6]), tuple(row))
        for row in message["windows"]:
            key = (row[0], row[1], row[2], row[3])
            current = self.windows.get(key)
            if current is None or row[12] > current[12]:
                self.windows[key] = row
        for row in message["latest"]:
            key = (row[0], row[1])
            current = self.latest.get(key)
            if current is None or row[7] > current[7]:
                self.latest[key] = row
        for alert in message["alerts"]:
            current = self.alerts.get(alert["alert_id"])
            if current is None:
                self.alerts[alert["alert_id"]] = alert
            else:
                merged = alert if alert["status"] == "resolved" else current
                if current["status"] == "resolved":
                    merged = current
                merged = dict(merged, peak_value=max(current["peak_value"], alert["peak_value"]))
                self.alerts[alert["alert_id"]] = merged

    @classmethod
    def from_messages(cls, values: list[bytes]) -> Changes:
        changes = cls()
        for value in values:
            changes.add(orjson.loads(value))
        return changes

    def __len__(self) -> int:
        return len(self.events) + len(self.windows) + len(self.latest) + len(self.alerts)


def _ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _alert_args(alert: dict) -> tuple:
    return (
        alert["alert_id"], alert["status"], alert["rule"], alert["alert_type"], alert["device_id"],
        alert["site_id"], alert["zone_id"], alert["sensor_type"], alert["threshold"], alert["value"],
        alert["peak_value"], _ts(alert["opened_at"]), _ts(alert["resolved_at"]), alert["event_id"],
        alert.get("resolved_event_id"),
    )  # fmt: skip


class PostgresSink:
    """One dedicated connection (its staging tables are per session); `write()` is one transaction."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._partitions = DailyPartitions()

    async def setup(self) -> None:
        self._conn = await asyncpg.connect(self.dsn, timeout=10)
        await self._conn.execute(SETUP_SQL)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()

    async def write(self, changes: Changes) -> None:
        if self._conn is None:
            await self.setup()
        conn = self._conn
        assert conn is not None
        try:
            if changes.events:
                days = {_EPOCH_DATE + timedelta(days=row[6] // DAY_US) for row in changes.events.values()}
                await self._partitions.ensure(conn, days)
            async with conn.transaction():
                if changes.events:
                    await conn.copy_records_to_table(
                        "sink_events", records=changes.events.values(), columns=EVENT_COLUMNS
                    )
                    await conn.execute(INSERT_EVENTS)
                if changes.windows:
                    await conn.copy_records_to_table(
                        "sink_windows",
                        records=[tuple(r) for r in changes.windows.values()],
                        columns=WINDOW_COLUMNS,
                    )
                    await conn.execute(UPSERT_WINDOWS.format(table="telemetry_device_agg_5m"), 300)
                    await conn.execute(UPSERT_WINDOWS.format(table="telemetry_device_agg_15m"), 900)
                if changes.latest:
                    await conn.copy_records_to_table(
                        "sink_latest",
                        records=[tuple(r) for r in changes.latest.values()],
                        columns=LATEST_COLUMNS,
                    )
                    await conn.execute(UPSERT_LATEST)
                if changes.alerts:
                    await conn.executemany(UPSERT_ALERT, [_alert_args(a) for a in changes.alerts.values()])
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            raise SinkError(f"writing {len(changes)} rows failed: {e}") from e
        metrics.SINK_ROWS.labels("telemetry_events").inc(len(changes.events))
        metrics.SINK_ROWS.labels("telemetry_device_agg").inc(len(changes.windows))
        metrics.SINK_ROWS.labels("telemetry_device_latest").inc(len(changes.latest))
        metrics.SINK_ROWS.labels("telemetry_alerts").inc(len(changes.alerts))

    async def write_until_done(self, changes: Changes) -> None:
        """Retry with backoff until the batch is written: raising would ack an unwritten batch."""
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                await self.write(changes)
                metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # anything: an unwritten batch must never be acked
                metrics.SINK_RETRIES.inc()
                log.warning("PostgreSQL sink: %s; retrying in %.1fs", e, delay)
                await self.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
