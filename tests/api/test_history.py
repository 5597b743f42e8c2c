"""History over the API (SPEC §11) on the known dataset of tests/api/conftest.py: standard deviations and the
1h/1d windows against an independent computation from the raw readings, raw readings paged by keyset while rows
arrive, and every CSV answer parsed back equal to its JSON."""

from __future__ import annotations

import csv
import io
import statistics
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.api.conftest import T0, Reading, floor, live_api, live_api_env, write_readings

pytestmark = pytest.mark.integration

APPROX = {"rel": 1e-9, "abs": 1e-9}
WINDOWS = [("5m", 300), ("15m", 900), ("1h", 3600), ("1d", 86400)]
DAY_START, DAY_END = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"
UNITS = {"co2": "ppm", "temperature": "celsius", "humidity": "percent", "occupancy": "count"}


def parse(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def expected_points(readings: list[Reading], seconds: int) -> dict[tuple[str, datetime], dict]:
    """(sensor, window_start) -> what a trend point must hold, from the readings alone."""
    grouped: dict[tuple[str, datetime], list[Reading]] = defaultdict(list)
    for r in readings:
        grouped[(r.sensor_type, floor(r.ts, seconds))].append(r)
    return {
        key: {
            "count_events": len(rs),
            "avg_value": statistics.fmean(r.value for r in rs),
            "min_value": min(r.value for r in rs),
            "max_value": max(r.value for r in rs),
            # Population standard deviation, computed exactly (statistics works in fractions).
            "stddev_value": statistics.pstdev(r.value for r in rs),
            "device_count": len({r.device_id for r in rs}),
        }
        for key, rs in grouped.items()
    }


def assert_point(point: dict, want: dict) -> None:
    assert point["count_events"] == want["count_events"]
    assert point["device_count"] == want["device_count"]
    assert (point["min_value"], point["max_value"]) == (want["min_value"], want["max_value"])
    assert point["avg_value"] == pytest.approx(want["avg_value"], **APPROX)
    assert point["stddev_value"] == pytest.approx(want["stddev_value"], **APPROX)


async def fetch(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


def same_value(text: str, value) -> bool:
    """A CSV field read back against the JSON's value."""
    if value is None:
        return text == ""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if isinstance(value, int | float):
        return float(text) == value
    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        return parse(text) == parse(value)
    return text == str(value)


def assert_rows_equal(rows: list[dict[str, str]], items: list[dict], columns: list[str]) -> None:
    assert len(rows) == len(items)
    for row, item in zip(rows, items, strict=True):
        assert list(row) == columns
        for column in columns:
            assert same_value(row[column], item[column]), (column, row[column], item[column])


# ---------------------------------------------------------------- windows: stddev, 1h and 1d


@pytest.mark.parametrize("window,seconds", WINDOWS)
async def test_trends_of_every_window_size_and_scope_against_the_readings(client, dataset, window, seconds):
    scopes = [
        ({"device_id": "site-a.z2.d0"}, lambda r: r.device_id == "site-a.z2.d0"),
        ({"site_id": "site-b", "zone_id": "z1"}, lambda r: (r.site_id, r.zone_id) == ("site-b", "z1")),
        ({"site_id": "site-a"}, lambda r: r.site_id == "site-a"),
        ({}, lambda r: True),
    ]
    for params, pred in scopes:
        want = expected_points([r for r in dataset.readings if pred(r)], seconds)
        response = await client.get(
            "/trends", params={"window": window, "start": DAY_START, "end": DAY_END} | params
        )
        assert response.status_code == 200, response.text
        got = {
            (series["sensor_type"], parse(point["window_start"])): point
            for series in response.json()["series"]
            for point in series["points"]
        }
        assert set(got) == set(want), (window, params)
        for key, point in got.items():
            assert parse(point["window_end"]) - key[1] == timedelta(seconds=seconds)
            assert_point(point, want[key])


@pytest.mark.parametrize("window,seconds", WINDOWS)
async def test_zone_views_hold_the_exact_roll_up_with_stddev(dataset, api_dsn, window, seconds):
    rows = await fetch(api_dsn, f"SELECT * FROM telemetry_agg_{window}")
    grouped = defaultdict(list)
    for r in dataset.readings:
        grouped[(r.site_id, r.zone_id)].append(r)
    want = {
        (site, zone, sensor, start): point
        for (site, zone), readings in grouped.items()
        for (sensor, start), point in expected_points(readings, seconds).items()
    }
    sites = {r.site_id for r in dataset.readings}  # other tests of this module add devices of their own
    got = {
        (r["site_id"], r["zone_id"], r["sensor_type"], r["window_start"]): dict(r)
        for r in rows
        if r["site_id"] in sites
    }
    assert set(got) == set(want)
    for key, row in got.items():
        assert_point(row, want[key])


async def test_hours_and_days_equal_the_roll_up_of_the_stored_15_minute_windows(dataset, api_dsn):
    fifteen = await fetch(api_dsn, "SELECT * FROM telemetry_device_agg_15m")
    for size, seconds in (("1h", 3600), ("1d", 86400)):
        rolled: dict[tuple, list] = defaultdict(list)
        for row in fifteen:
            rolled[(row["device_id"], row["sensor_type"], floor(row["window_start"], seconds))].append(row)
        stored = {
            (r["device_id"], r["sensor_type"], r["window_start"]): r
            for r in await fetch(api_dsn, f"SELECT * FROM telemetry_device_agg_{size}")
        }
        assert set(stored) == set(rolled), size
        for key, parts in rolled.items():
            row = stored[key]
            assert row["count_events"] == sum(p["count_events"] for p in parts)
            assert row["min_value"] == min(p["min_value"] for p in parts)
            assert row["max_value"] == max(p["max_value"] for p in parts)
            assert row["sum_value"] == pytest.approx(sum(p["sum_value"] for p in parts), **APPROX)
            assert row["sum_sq_value"] == pytest.approx(sum(p["sum_sq_value"] for p in parts), **APPROX)
            assert row["first_ts"] == min(p["first_ts"] for p in parts)
            assert row["last_ts"] == max(p["last_ts"] for p in parts)
            assert row["window_end"] - row["window_start"] == timedelta(seconds=seconds)


@pytest.mark.parametrize("window,seconds", [("1h", 3600), ("1d", 86400)])
async def test_heatmap_of_hours_and_days(client, dataset, window, seconds):
    at = T0 + timedelta(minutes=70)
    start = floor(at, seconds)
    body = (
        await client.get("/heatmap", params={"sensor_type": "co2", "window": window, "at": at.isoformat()})
    ).json()
    assert parse(body["window_start"]) == start
    assert parse(body["window_end"]) == start + timedelta(seconds=seconds)
    for i, site in enumerate(body["sites"]):
        for j, zone in enumerate(body["zones"]):
            readings = [r for r in dataset.readings if (r.site_id, r.zone_id) == (site, zone)]
            if not any(r.site_id == site for r in dataset.readings):
                continue  # a site another test of this module added
            want = expected_points(readings, seconds).get(("co2", start))
            cell = body["cells"][i][j]
            assert (cell is None) == (want is None)
            if cell is not None:
                assert_point(cell, want)


async def test_a_window_of_equal_values_has_a_stddev_of_exactly_zero(client, api_dsn):
    """sum_sq/n - mean² of equal values leaves a rounding residue; the stored stddev is exactly 0, never NaN."""
    conn = await asyncpg.connect(api_dsn)
    try:
        value, n = 0.1 + 0.2, 7
        start = datetime(2024, 6, 1, tzinfo=UTC)
        await conn.execute(
            "INSERT INTO telemetry_device_agg_15m (window_start, window_end, device_id, site_id, zone_id, sensor_type,"
            " count_events, sum_value, avg_value, min_value, max_value, sum_sq_value, first_ts, last_ts, version)"
            " VALUES ($1, $1::timestamptz + interval '15 minutes', 'flat.d0', 'flat', 'z', 'humidity', $2, $3, $4, $4, $4, $5,"
            " $1, $1, 1)",
            start,
            n,
            value * n,
            value,
            value * value * n,
        )
        rows = await conn.fetch(
            "SELECT stddev_value FROM telemetry_device_agg_15m WHERE device_id = 'flat.d0'"
            " UNION ALL SELECT stddev_value FROM telemetry_device_agg_1h WHERE device_id = 'flat.d0'"
            " UNION ALL SELECT stddev_value FROM telemetry_agg_1d WHERE site_id = 'flat'"
        )
        assert [r["stddev_value"] for r in rows] == [0.0, 0.0, 0.0]
        # A variance that rounding pushes below zero is clamped, not a NaN from sqrt.
        assert await conn.fetchval("SELECT telemetry_stddev(3, 3.0000000001, 3, 0.9, 1.1)") == 0.0
    finally:
        await conn.close()


# ---------------------------------------------------------------- raw readings


async def page_through(client, path: str, params: dict, between=None) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        body = (await client.get(path, params=params | ({"cursor": cursor} if cursor else {}))).json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        if between is not None:
            await between(pages, items)


def order_key(item: dict) -> tuple[datetime, str]:
    return parse(item["ts_event"]), item["event_id"]


async def test_readings_oldest_first_through_every_page(client, dataset):
    device = "site-b.z3.d0"
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=2)).isoformat(), "limit": 17}
    items = await page_through(client, f"/devices/{device}/readings", params)

    mine = sorted((r for r in dataset.readings if r.device_id == device), key=lambda r: (r.ts, r.event_id))
    assert [(parse(i["ts_event"]), i["event_id"]) for i in items] == [(r.ts, r.event_id) for r in mine]
    for item, reading in zip(items, mine, strict=True):
        assert item["value"] == reading.value
        assert (item["device_id"], item["site_id"], item["zone_id"]) == (device, "site-b", "z3")
        assert item["unit"] == UNITS[item["sensor_type"]] and item["late"] is False
        assert parse(item["ts_ingest"]) == reading.ts + timedelta(milliseconds=40)

    only_co2 = await page_through(client, f"/devices/{device}/readings", params | {"sensor_type": "co2"})
    assert [i["event_id"] for i in only_co2] == [i["event_id"] for i in items if i["sensor_type"] == "co2"]

    # The range is half-open, and the default end is 24 h after the start.
    first = items[0]
    body = (await client.get(f"/devices/{device}/readings", params={"start": first["ts_event"]})).json()
    assert body["items"][0]["event_id"] == first["event_id"]
    assert parse(body["end"]) - parse(body["start"]) == timedelta(hours=24)
    after_first = (parse(first["ts_event"]) + timedelta(microseconds=1)).isoformat()
    body = (
        await client.get(f"/devices/{device}/readings", params={"start": T0.isoformat(), "end": after_first})
    ).json()
    assert [i["event_id"] for i in body["items"]] == [first["event_id"]]


async def test_readings_pages_have_no_gap_or_repeat_while_rows_arrive(client, api_dsn):
    """Keyset paging: rows arriving ahead of the cursor are reached, rows behind it (late) are not, ties at the
    cursor's time are ordered by event_id; no row is listed twice and none present at the start is skipped."""
    device, site, zone = "pager.d0", "pager", "z"
    base = datetime(2024, 7, 1, 8, 0, tzinfo=UTC)
    rng_ids = iter(str(uuid.UUID(int=i)) for i in range(1, 10_000))

    def reading(ts: datetime) -> Reading:
        return Reading(device, site, zone, "co2", 500.0, ts, next(rng_ids))

    # Pairs of readings sharing a timestamp, so that page boundaries fall between equal times.
    initial = [reading(base + timedelta(seconds=10 * (i // 2))) for i in range(60)]
    conn = await asyncpg.connect(api_dsn)
    arrived_ahead: list[Reading] = []
    try:
        await write_readings(conn, initial)
        await conn.execute(
            "INSERT INTO telemetry_device_latest (device_id, sensor_type, site_id, zone_id, value, ts_event, event_id,"
            " version) VALUES ($1, 'co2', $2, $3, 500, $4, $5, 1)",
            device,
            site,
            zone,
            initial[-1].ts,
            uuid.UUID(initial[-1].event_id),
        )

        async def rows_arrive(pages: int, seen: list[dict]) -> None:
            cursor_ts = parse(seen[-1]["ts_event"])
            ahead = [
                reading(base + timedelta(minutes=30, seconds=pages)),
                reading(cursor_ts + timedelta(seconds=1)),
            ]
            behind = [reading(base - timedelta(minutes=1)), reading(cursor_ts - timedelta(seconds=1))]
            arrived_ahead.extend(ahead)
            await write_readings(conn, ahead + behind)

        params = {
            "start": (base - timedelta(hours=1)).isoformat(),
            "end": (base + timedelta(hours=2)).isoformat(),
        }
        items = await page_through(client, f"/devices/{device}/readings", params | {"limit": 7}, rows_arrive)
    finally:
        await conn.close()

    keys = [order_key(i) for i in items]
    assert len(set(keys)) == len(keys), "a reading listed twice"
    assert keys == sorted(keys), "not oldest first"
    listed = {i["event_id"] for i in items}
    assert {r.event_id for r in initial} <= listed, "a reading present from the start was skipped"
    assert {r.event_id for r in arrived_ahead} <= listed, (
        "a reading that arrived ahead of the cursor was skipped"
    )
    # Rows that arrived behind the cursor are not listed (but are there for a new listing).
    everything = await page_through(client, f"/devices/{device}/readings", params | {"limit": 1000})
    assert len(everything) == len(initial) + 2 * len(arrived_ahead)
    assert listed < {i["event_id"] for i in everything}


# ---------------------------------------------------------------- CSV = JSON


@pytest.mark.parametrize("window", ["5m", "15m", "1h", "1d"])
async def test_trends_csv_is_the_json_flattened(client, dataset, window):
    params = {"site_id": "site-a", "window": window, "start": DAY_START, "end": DAY_END}
    body = (await client.get("/trends", params=params)).json()
    rows = csv_rows(await client.get("/trends", params=params | {"format": "csv"}))
    columns = ["sensor_type", "unit", "window_start", "window_end", "count_events", "avg_value", "min_value",
               "max_value", "stddev_value", "device_count"]  # fmt: skip
    flat = [
        {"sensor_type": s["sensor_type"], "unit": s["unit"], **point}
        for s in body["series"]
        for point in s["points"]
    ]
    assert flat, "the dataset has windows in this range"
    assert_rows_equal(rows, flat, columns)


async def test_alerts_csv_is_the_json_of_every_page(client, dataset):
    columns = list((await client.get("/alerts", params={"limit": 1})).json()["items"][0])
    for params in ({}, {"status": "resolved"}, {"site_id": "site-b", "sensor_type": "co2"}):
        pages = await page_through(client, "/alerts", params | {"limit": 4})
        assert_rows_equal(
            csv_rows(await client.get("/alerts", params=params | {"format": "csv"})), pages, columns
        )
    # With limit and cursor, the CSV is exactly that JSON page.
    first = (await client.get("/alerts", params={"limit": 5})).json()
    second = (await client.get("/alerts", params={"limit": 5, "cursor": first["next_cursor"]})).json()
    page = await client.get("/alerts", params={"limit": 5, "cursor": first["next_cursor"], "format": "csv"})
    assert_rows_equal(csv_rows(page), second["items"], columns)


async def test_readings_csv_is_the_json_of_every_page(client, dataset):
    device = "site-a.z1.d0"
    columns = ["ts_event", "event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "unit", "late",
               "ts_ingest"]  # fmt: skip
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}
    for extra in ({}, {"sensor_type": "temperature"}):
        pages = await page_through(client, f"/devices/{device}/readings", params | extra | {"limit": 50})
        rows = csv_rows(
            await client.get(f"/devices/{device}/readings", params=params | extra | {"format": "csv"})
        )
        assert_rows_equal(rows, pages, columns)
    first = (await client.get(f"/devices/{device}/readings", params=params | {"limit": 30})).json()
    after = params | {"limit": 30, "cursor": first["next_cursor"]}
    second = (await client.get(f"/devices/{device}/readings", params=after)).json()
    rows = csv_rows(await client.get(f"/devices/{device}/readings", params=after | {"format": "csv"}))
    assert_rows_equal(rows, second["items"], columns)


async def test_csv_is_rfc_4180(client, api_dsn, dataset):
    """A header row, CRLF line ends, and quoting only where a field needs it — doubled quotes inside."""
    alert = dataset.alerts[3]
    tricky = 'O"Brien, Ann\nnight shift'
    conn = await asyncpg.connect(api_dsn)
    try:
        await conn.execute(
            "INSERT INTO alert_acknowledgements (alert_id, acknowledged_by) VALUES ($1, $2)"
            " ON CONFLICT (alert_id) DO UPDATE SET acknowledged_by = excluded.acknowledged_by",
            alert["alert_id"],
            tricky,
        )
    finally:
        await conn.close()
    response = await client.get("/alerts", params={"device_id": alert["device_id"], "format": "csv"})
    text = response.text
    assert text.startswith("alert_id,status,rule,alert_type,device_id,")
    assert '"O""Brien, Ann\nnight shift"' in text
    assert (
        text.endswith("\r\n") and text.count("\r\n") == text.count("\n") - 1
    )  # the one LF inside the quotes
    rows = csv_rows(response)
    mine = next(r for r in rows if r["alert_id"] == str(alert["alert_id"]))
    assert mine["acknowledged_by"] == tricky and mine["acknowledged"] == "true"
    readings = await client.get(
        "/devices/site-a.z1.d0/readings", params={"start": T0.isoformat(), "format": "csv", "limit": 3}
    )
    lines = readings.content.split(b"\r\n")
    assert lines[0] == b"ts_event,event_id,device_id,site_id,zone_id,sensor_type,value,unit,late,ts_ingest"
    assert (
        len(lines) == 5 and lines[-1] == b"" and b"\n" not in b"".join(lines) and b'"' not in readings.content
    )


async def test_a_days_long_csv_export_is_streamed_in_chunks(stack, api_dsn):
    """Served by uvicorn: chunked, without a Content-Length, and complete."""
    device = "stream.d0"
    start = datetime(2024, 8, 1, tzinfo=UTC)
    readings = [
        Reading(device, "stream", "z", "temperature", 20 + (i % 100) / 10, start + timedelta(seconds=5 * i))
        for i in range(3 * 17280)  # three days, one reading every 5 s
    ]
    conn = await asyncpg.connect(api_dsn)
    try:
        await write_readings(conn, readings)
        await conn.execute(
            "INSERT INTO telemetry_device_latest (device_id, sensor_type, site_id, zone_id, value, ts_event, event_id,"
            " version) VALUES ($1, 'temperature', 'stream', 'z', 20, $2, $3, 1)",
            device,
            readings[-1].ts,
            uuid.UUID(readings[-1].event_id),
        )
    finally:
        await conn.close()
    params = {"start": start.isoformat(), "end": (start + timedelta(days=3)).isoformat(), "format": "csv"}
    with live_api(live_api_env(stack, api_dsn), "csv-stream") as api:
        async with (
            httpx.AsyncClient(base_url=api.url, timeout=60) as http,
            http.stream("GET", f"/devices/{device}/readings", params=params) as response,
        ):
            assert response.status_code == 200
            assert "content-length" not in response.headers
            assert response.headers["transfer-encoding"] == "chunked"
            chunks = [chunk async for chunk in response.aiter_raw()]
    body = b"".join(chunks)
    assert len(chunks) > 10
    lines = body.split(b"\r\n")
    assert len(lines) == 1 + len(readings) + 1
    assert [line.split(b",")[1].decode() for line in lines[1:-1]] == [r.event_id for r in readings]
