"""History part of the API phase (issue 14): `/trends?window=1h` and `window=1d` over 30 days of windows of every
device, and a CSV export of one sensor's month of raw readings — against a running `telemetrypulse api`.

The month cannot come through the pipeline in a bench (45 devices × 4 sensors every 10 s for 30 days is 47 million
events), so it is written into the API phase's database directly, the way the sink writes it:
- 15-minute windows of every (device, sensor) the pipeline stored, for the 30 days before the pipeline's data (90
  readings each: count, sum, sum of squares, min and max of a random walk), one COPY per day — PostgreSQL's
  triggers roll them up into the hourly and daily windows, as they do for the sink;
- the raw readings of one device, all four sensors every 10 s for those 30 days (1,036,800 rows in 30 daily
  partitions), of which one sensor's (259,200 rows) is exported.
Trends: for each window size on its own, 4 and then 16 clients for `seconds`, rotating over the scopes (a random
zone, a random site, the whole fleet) with a random sensor, over the 30 days (720 hourly or 30 daily points). CSV: the month downloaded `exports` times by one
streaming client, rows/s from the request to the last byte; the API process's RSS sampled every 20 ms during each
download, beside the same for a one-day export (flat memory: the growth does not follow the rows).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import psutil

from devkit.api_load import run_url_load
from telemetrypulse import db

DAYS = 30
READING_INTERVAL_S = 10
WINDOW_S = 900
PER_WINDOW = WINDOW_S // READING_INTERVAL_S
SENSOR_LEVELS = {
    "co2": (750.0, 120.0),
    "temperature": (22.0, 1.5),
    "humidity": (48.0, 6.0),
    "occupancy": (8.0, 4.0),
}
WINDOW_COLUMNS = [
    "window_start", "window_end", "device_id", "site_id", "zone_id", "sensor_type", "count_events", "sum_value",
    "avg_value", "min_value", "max_value", "sum_sq_value", "first_ts", "last_ts", "version",
]  # fmt: skip
RAW_COLUMNS = [
    "event_id",
    "device_id",
    "site_id",
    "zone_id",
    "sensor_type",
    "value",
    "unit",
    "ts_event",
    "ts_ingest",
]
UNITS = {"co2": "ppm", "temperature": "celsius", "humidity": "percent", "occupancy": "count"}


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (moment - epoch) // timedelta(seconds=seconds) * timedelta(seconds=seconds)


async def synthesize(dsn: str, seed: int) -> dict:
    """Writes the month; returns where it is: `start`, `end`, the devices, and the exported device."""
    rng = np.random.default_rng(seed)
    conn = await asyncpg.connect(dsn)
    began = time.monotonic()
    try:
        pairs = await conn.fetch(
            "SELECT device_id, site_id, zone_id, sensor_type FROM telemetry_device_latest ORDER BY 1, 4"
        )
        first = await conn.fetchval("SELECT min(window_start) FROM telemetry_device_agg_15m")
        end = _floor(first or datetime.now(UTC), 3600)
        start = end - timedelta(days=DAYS)
        levels = np.array([SENSOR_LEVELS[p["sensor_type"]] for p in pairs])
        windows_per_day = 86400 // WINDOW_S
        walk = levels[:, 0].copy()
        for day in range(DAYS):
            rows = []
            for w in range(windows_per_day):
                window_start = start + timedelta(days=day, seconds=w * WINDOW_S)
                walk += rng.normal(0, levels[:, 1] * 0.05)
                spread = np.abs(rng.normal(levels[:, 1] * 0.3, levels[:, 1] * 0.05)) + 1e-3
                avg = walk
                # 90 readings of mean `avg` and standard deviation `spread`: sum of squares = n (var + mean²).
                for i, pair in enumerate(pairs):
                    n = PER_WINDOW
                    rows.append((
                        window_start, window_start + timedelta(seconds=WINDOW_S), pair["device_id"], pair["site_id"],
                        pair["zone_id"], pair["sensor_type"], n, float(avg[i] * n), float(avg[i]),
                        float(avg[i] - 2 * spread[i]), float(avg[i] + 2 * spread[i]),
                        float(n * (spread[i] ** 2 + avg[i] ** 2)), window_start,
                        window_start + timedelta(seconds=WINDOW_S - READING_INTERVAL_S), day * 10**6 + w,
                    ))  # fmt: skip
            await conn.copy_records_to_table("telemetry_device_agg_15m", records=rows, columns=WINDOW_COLUMNS)
        windows_s = time.monotonic() - began

        exported = pairs[0]["device_id"]
        site, zone = pairs[0]["site_id"], pairs[0]["zone_id"]
        sensors = [p["sensor_type"] for p in pairs if p["device_id"] == exported]
        await db.DailyPartitions().ensure(conn, {(start + timedelta(days=d)).date() for d in range(DAYS + 1)})
        per_day = 86400 // READING_INTERVAL_S
        for day in range(DAYS):
            day_start = start + timedelta(days=day)
            rows = []
            for k, sensor in enumerate(sensors):
                mean, sd = SENSOR_LEVELS[sensor]
                values = np.round(rng.normal(mean, sd, per_day), 2)
                for j in range(per_day):
                    ts = day_start + timedelta(seconds=j * READING_INTERVAL_S, milliseconds=37 * k)
                    rows.append((uuid.uuid4(), exported, site, zone, sensor, float(values[j]), UNITS[sensor], ts,
                                 ts + timedelta(milliseconds=20)))  # fmt: skip
            await conn.copy_records_to_table("telemetry_events", records=rows, columns=RAW_COLUMNS)
        await conn.execute(
            "ANALYZE telemetry_device_agg_1h; ANALYZE telemetry_device_agg_1d; ANALYZE telemetry_events"
        )
        counts = {
            name: await conn.fetchval(
                f"SELECT count(*) FROM telemetry_device_agg_{name} WHERE window_start < $1", end
            )
            for name in ("15m", "1h", "1d")
        }
    finally:
        await conn.close()
    return {
        "start": start,
        "end": end,
        "devices": len({p["device_id"] for p in pairs}),
        "pairs": len(pairs),
        "zones": sorted({(p["site_id"], p["zone_id"]) for p in pairs}),
        "exported": exported,
        "exported_sensors": sensors,
        "raw_rows": len(sensors) * per_day * DAYS,
        "window_rows": counts,
        "seconds": round(time.monotonic() - began, 1),
        "windows_s": round(windows_s, 1),
    }


SCOPES = ("zone", "site", "fleet")
CONCURRENCIES = (4, 16)


async def trends_load(base_url: str, history: dict, seconds: float, seed: int) -> dict:
    """Per window size and concurrency, clients rotating over the three scopes (a random zone, a random site, the
    whole fleet; a random sensor each time), all over the 30 days. Each window size is loaded on its own: a
    1-day request never waits behind 720-point hourly ones. Returns {window: {concurrency: {target: figures}}}."""
    zones = history["zones"]
    sites = sorted({site for site, _ in zones})
    sensors = list(SENSOR_LEVELS)
    span = f"start={history['start'].isoformat()}&end={history['end'].isoformat()}".replace("+", "%2B")

    def target(window: str, scope: str):
        def url(rng: random.Random) -> str:
            if scope == "zone":
                site, zone = rng.choice(zones)
                where = f"site_id={site}&zone_id={zone}&"
            elif scope == "site":
                where = f"site_id={rng.choice(sites)}&"
            else:
                where = ""
            return f"/trends?{where}sensor_type={rng.choice(sensors)}&window={window}&{span}"

        return url

    results: dict = {}
    for window in ("1h", "1d"):
        targets = {scope: target(window, scope) for scope in SCOPES}
        results[window] = {
            concurrency: await run_url_load(base_url, targets, seconds, concurrency, seed=seed)
            for concurrency in CONCURRENCIES
        }
    return results


async def _download(client: httpx.AsyncClient, url: str, process: psutil.Process) -> dict:
    """One streaming download: rows, seconds, and the API's RSS before and at its peak during it."""
    baseline = process.memory_info().rss
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    began = time.perf_counter()
    lines = 0
    size = 0
    try:
        async with client.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw():
                lines += chunk.count(b"\n")
                size += len(chunk)
        seconds = time.perf_counter() - began
    finally:
        done.set()
        await sampler
    rows = lines - 1  # the header
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "mib": round(size / 2**20, 1),
        "rss_before_mib": round(baseline / 2**20, 1),
        "rss_growth_mib": round((peak - baseline) / 2**20, 1),
    }


async def csv_exports(base_url: str, history: dict, api_pid: int, exports: int) -> dict:
    process = psutil.Process(api_pid)
    device = history["exported"]
    sensor = history["exported_sensors"][0]

    def url(days: int) -> str:
        start = history["end"] - timedelta(days=days)
        params = {
            "sensor_type": sensor,
            "start": start.isoformat(),
            "end": history["end"].isoformat(),
            "format": "csv",
        }
        return f"/devices/{device}/readings?" + str(httpx.QueryParams(params))

    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        await _download(client, url(1), process)  # warm-up
        month = [await _download(client, url(DAYS), process) for _ in range(exports)]
        day = [await _download(client, url(1), process) for _ in range(exports)]
    return {
        "device": device,
        "sensor_type": sensor,
        "rows": month[0]["rows"],
        "mib": month[0]["mib"],
        "median_rows_per_s": statistics.median(r["rows_per_s"] for r in month),
        "median_seconds": statistics.median(r["seconds"] for r in month),
        "rss_growth_mib_month": max(r["rss_growth_mib"] for r in month),
        "rss_growth_mib_day": max(r["rss_growth_mib"] for r in day),
        "rss_before_mib": month[0]["rss_before_mib"],
        "day_rows": day[0]["rows"],
        "runs": month,
    }
