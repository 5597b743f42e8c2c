"""Fixtures of the API tests: a fresh database per test module, the app in-process (httpx ASGI) or as a
real `uvicorn` child process (for SSE, fuzzing and the browser), and a known dataset.

The dataset is built from raw readings; the test computes every window, latest value and roll-up from
those readings itself (an independent model) and writes the resulting rows, as the worker would.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from devkit.databases import create_database, drop_database
from devkit.epoch import EPOCH
from devkit.paths import TEST_OUTPUT
from devkit.ports import free_port
from devkit.processes import api_process, child_env
from telemetrypulse import db
from telemetrypulse.settings import Settings

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # aligned to 15 minutes
SENSOR_BASE = {"co2": 700.0, "temperature": 22.0, "humidity": 50.0, "occupancy": 3.0}
SENSOR_SPREAD = {"co2": 500.0, "temperature": 10.0, "humidity": 35.0, "occupancy": 6.0}


# ---------------------------------------------------------------- database and app


@pytest.fixture(scope="module")
async def api_dsn(stack) -> str:
    """A migrated database of this module's own, dropped afterwards."""
    name, dsn = await create_database(stack["DATABASE_URL"])
    try:
        await db.migrate(dsn)
        yield dsn
    finally:
        await drop_database(stack["DATABASE_URL"], name)


def api_settings(stack: dict[str, str], dsn: str, **overrides) -> Settings:
    values = {
        "database_url": dsn,
        "kafka_bootstrap_servers": stack["KAFKA_BOOTSTRAP_SERVERS"],
        "topic_events": f"test-api-{uuid.uuid4().hex[:8]}.events",
        # Its own APP_ID: the rules topic is named by it (an API test never writes another deployment's rules).
        "app_id": f"test-api-{uuid.uuid4().hex[:8]}",
        "api_key": None,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **options):
    """The app with its lifespan run, and an httpx client talking to it in-process."""
    from telemetrypulse.api.main import create_app
    from telemetrypulse.api.resources import ApiOptions

    app = create_app(settings, ApiOptions(**options))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            client.app = app
            yield client


@pytest.fixture(scope="module")
async def client(stack, api_dsn):
    async with app_client(api_settings(stack, api_dsn)) as c:
        yield c


def live_api_env(stack: dict[str, str], dsn: str, **extra: str) -> dict[str, str]:
    env = child_env(
        ("KAFKA_", "TOPIC_", "API_KEY", "DATABASE_URL"),
        KAFKA_BOOTSTRAP_SERVERS=stack["KAFKA_BOOTSTRAP_SERVERS"],
        DATABASE_URL=dsn,
        TOPIC_EVENTS=f"test-api-{uuid.uuid4().hex[:8]}.events",
        APP_ID=f"test-api-{uuid.uuid4().hex[:8]}",
        LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def live_api(env: dict[str, str], name: str):
    """`telemetrypulse api` as a child process on a free port (its `url`), up once /health/live answers."""
    log_path = TEST_OUTPUT / "logs" / f"api-{name}-{uuid.uuid4().hex[:6]}.log"
    api = api_process(env, log_path, free_port(), ready_path="/health/live")
    try:
        api.start().wait_ready_blocking(60)
        yield api
    finally:
        api.stop(15)


# ---------------------------------------------------------------- the known dataset


@dataclass
class Reading:
    device_id: str
    site_id: str
    zone_id: str
    sensor_type: str
    value: float
    ts: datetime
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def floor(ts: datetime, seconds: int) -> datetime:
    size = timedelta(seconds=seconds)
    return EPOCH + (ts - EPOCH) // size * size


@dataclass
class Dataset:
    readings: list[Reading]
    alerts: list[dict]

    # -- the independent model: what every relation must hold, computed from the readings

    def device_windows(self, seconds: int) -> dict[tuple, dict]:
        windows: dict[tuple, dict] = {}
        for r in self.readings:
            start = floor(r.ts, seconds)
            w = windows.setdefault(
                (r.device_id, r.sensor_type, start),
                {"site_id": r.site_id, "zone_id": r.zone_id, "values": [], "ts": []},
            )
            w["values"].append(r.value)
            w["ts"].append(r.ts)
        return windows

    def zone_windows(self, seconds: int) -> dict[tuple, dict]:
        """(site, zone, sensor, window_start) -> count, avg, min, max, devices, over the raw readings."""
        grouped: dict[tuple, list[Reading]] = defaultdict(list)
        for r in self.readings:
            grouped[(r.site_id, r.zone_id, r.sensor_type, floor(r.ts, seconds))].append(r)
        return {key: summarize(rs) for key, rs in grouped.items()}

    def latest(self) -> dict[tuple[str, str], Reading]:
        latest: dict[tuple[str, str], Reading] = {}
        for r in self.readings:  # in order: a tie goes to the later reading
            key = (r.device_id, r.sensor_type)
            if key not in latest or r.ts >= latest[key].ts:
                latest[key] = r
        return latest


def summarize(readings: list[Reading]) -> dict:
    values = [r.value for r in readings]
    return {
        "count_events": len(values),
        "avg_value": sum(values) / len(values),
        "min_value": min(values),
        "max_value": max(values),
        "device_count": len({r.device_id for r in readings}),
    }


def build_dataset(seed: int = 7) -> Dataset:
    """2 sites; site-a has zones z1, z2; site-b has z1, z3; 2 devices per zone; 90 minutes of readings."""
    rng = random.Random(seed)
    layout = {"site-a": ["z1", "z2"], "site-b": ["z1", "z3"]}
    readings: list[Reading] = []
    for site, zones in layout.items():
        for zone in zones:
            for d in range(2):
                device = f"{site}.{zone}.d{d}"
                sensors = ["co2", "temperature", "humidity"] + (["occupancy"] if d == 0 else [])
                for sensor in sensors:
                    for minute in range(0, 90, 2):
                        ts = T0 + timedelta(
                            minutes=minute, seconds=rng.randrange(0, 120), microseconds=rng.randrange(10**6)
                        )
                        value = SENSOR_BASE[sensor] + rng.random() * SENSOR_SPREAD[sensor]
                        if sensor == "occupancy":
                            value = float(round(value))
                        readings.append(Reading(device, site, zone, sensor, round(value, 3), ts))
    alerts = []
    for i in range(25):
        site = "site-a" if i % 3 else "site-b"
        zone = layout[site][i % 2]
        device = f"{site}.{zone}.d{i % 2}"
        sensor = ["co2", "temperature", "humidity"][i % 3]
        opened = T0 + timedelta(minutes=3 * i, seconds=i)
        status = "open" if i % 4 == 0 else "resolved"
        threshold = {"co2": 1000.0, "temperature": 30.0, "humidity": 80.0}[sensor]
        alerts.append(
            {
                "alert_id": uuid.uuid5(uuid.NAMESPACE_URL, f"test-alert-{seed}-{i}"),
                "status": status,
                "rule": "threshold",
                "alert_type": f"{sensor.upper()}_HIGH",
                "device_id": device,
                "site_id": site,
                "zone_id": zone,
                "sensor_type": sensor,
                "threshold": threshold,
                "value": threshold + 1 + i,
                "peak_value": threshold + 5 + i,
                "opened_at": opened,
                "resolved_at": None if status == "open" else opened + timedelta(minutes=4),
                "event_id": uuid.uuid4(),
            }
        )
    # Two alerts opened at the same instant: the order must fall back to alert_id.
    alerts[24]["opened_at"] = alerts[23]["opened_at"]
    return Dataset(readings, alerts)


async def write_dataset(dsn: str, data: Dataset) -> None:
    """Rows as the worker's sinks would write them (device windows carry sum, sum of squares and first/last ts;
    PostgreSQL rolls the 15-minute windows up into hours and days itself), and the raw readings."""
    conn = await asyncpg.connect(dsn)
    try:
        await write_readings(conn, data.readings)
        async with conn.transaction():
            for seconds, table in ((300, "telemetry_device_agg_5m"), (900, "telemetry_device_agg_15m")):
                rows = [
                    (
                        start,
                        start + timedelta(seconds=seconds),
                        device,
                        w["site_id"],
                        w["zone_id"],
                        sensor,
                        len(w["values"]),
                        sum(w["values"]),
                        sum(w["values"]) / len(w["values"]),
                        min(w["values"]),
                        max(w["values"]),
                        sum(v * v for v in w["values"]),
                        min(w["ts"]),
                        max(w["ts"]),
                        1,
                    )
                    for (device, sensor, start), w in data.device_windows(seconds).items()
                ]
                await conn.copy_records_to_table(
                    table,
                    records=rows,
                    columns=[
                        "window_start", "window_end", "device_id", "site_id", "zone_id", "sensor_type",
                        "count_events", "sum_value", "avg_value", "min_value", "max_value", "sum_sq_value",
                        "first_ts", "last_ts", "version",
                    ],
                )  # fmt: skip
            await conn.copy_records_to_table(
                "telemetry_device_latest",
                records=[
                    (
                        r.device_id,
                        r.sensor_type,
                        r.site_id,
                        r.zone_id,
                        r.value,
                        r.ts,
                        uuid.UUID(r.event_id),
                        1,
                    )
                    for r in data.latest().values()
                ],
                columns=[
                    "device_id",
                    "sensor_type",
                    "site_id",
                    "zone_id",
                    "value",
                    "ts_event",
                    "event_id",
                    "version",
                ],
            )
            for alert in data.alerts:
                await insert_alert(conn, alert)
    finally:
        await conn.close()


async def write_readings(conn: asyncpg.Connection, readings: list[Reading], late: bool = False) -> None:
    """Raw rows as the sink writes them (the day's partition first)."""
    await db.DailyPartitions().ensure(conn, {r.ts.astimezone(UTC).date() for r in readings})
    await conn.copy_records_to_table(
        "telemetry_events",
        records=[
            (
                uuid.UUID(r.event_id), r.device_id, r.site_id, r.zone_id, r.sensor_type, r.value, None, r.ts,
                r.ts + timedelta(milliseconds=40), late,
            )
            for r in readings
        ],
        columns=[
            "event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "unit", "ts_event", "ts_ingest",
            "late",
        ],
    )  # fmt: skip


async def insert_alert(conn: asyncpg.Connection, alert: dict) -> int:
    """Insert or update an alert as the sink does; returns its change_seq."""
    columns = list(alert)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in ("status", "peak_value", "resolved_at"))
    return await conn.fetchval(
        f"INSERT INTO telemetry_alerts ({', '.join(columns)}) VALUES ({placeholders})"
        f" ON CONFLICT (alert_id) DO UPDATE SET {updates} RETURNING change_seq",
        *alert.values(),
    )


def new_alert(**overrides) -> dict:
    alert = {
        "alert_id": uuid.uuid4(),
        "status": "open",
        "rule": "threshold",
        "alert_type": "CO2_HIGH",
        "device_id": "site-a.z1.d0",
        "site_id": "site-a",
        "zone_id": "z1",
        "sensor_type": "co2",
        "threshold": 1000.0,
        "value": 1234.0,
        "peak_value": 1234.0,
        "opened_at": datetime.now(UTC).replace(microsecond=0),
        "resolved_at": None,
        "event_id": uuid.uuid4(),
    }
    alert.update(overrides)
    return alert


@pytest.fixture(scope="module")
async def dataset(api_dsn) -> Dataset:
    data = build_dataset()
    await write_dataset(api_dsn, data)
    return data
