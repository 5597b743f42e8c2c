"""Every read route of SPEC §8 on a known dataset: expected values are computed here from the raw
readings (tests/api/conftest.py) and must also equal what PostgreSQL's own roll-up views hold."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta
from statistics import fmean

import asyncpg
import pytest

from tests.api.conftest import T0, floor, summarize

pytestmark = pytest.mark.integration

APPROX = {"rel": 1e-12, "abs": 1e-9}


def parse(text: str) -> datetime:
    assert text.endswith("Z"), f"not ISO-8601 UTC with Z: {text}"
    return datetime.fromisoformat(text)


def iter_times(node, key=""):
    """Every value under a key that names a time, anywhere in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from iter_times(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from iter_times(v, key)
    elif isinstance(node, str) and (
        key.endswith(("_at", "_ts", "_start", "_end", "last_seen", "ts_event")) or key in ("start", "end")
    ):
        yield node


def assert_window_equal(point: dict, expected: dict) -> None:
    assert point["count_events"] == expected["count_events"]
    assert point["device_count"] == expected["device_count"]
    assert point["avg_value"] == pytest.approx(expected["avg_value"], **APPROX)
    assert point["min_value"] == expected["min_value"]
    assert point["max_value"] == expected["max_value"]


async def view_rows(dsn: str, view: str, **filters) -> dict[tuple, asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT * FROM {view}")
    finally:
        await conn.close()
    return {
        (r["site_id"], r["zone_id"], r["sensor_type"], r["window_start"]): r
        for r in rows
        if all(r[k] == v for k, v in filters.items())
    }


# ---------------------------------------------------------------- sites and devices


async def test_sites(client, dataset):
    latest = dataset.latest()
    expected = defaultdict(lambda: {"zones": set(), "devices": set(), "sensors": set(), "last": None})
    for (device, sensor), r in latest.items():
        e = expected[r.site_id]
        e["zones"].add(r.zone_id)
        e["devices"].add(device)
        e["sensors"].add(sensor)
        e["last"] = max(e["last"] or r.ts, r.ts)

    response = await client.get("/sites")

    assert response.status_code == 200
    items = response.json()["items"]
    assert [s["site_id"] for s in items] == sorted(expected)
    for site in items:
        e = expected[site["site_id"]]
        assert site["zones"] == sorted(e["zones"])
        assert site["device_count"] == len(e["devices"])
        assert site["sensor_types"] == sorted(e["sensors"])
        assert parse(site["last_seen"]) == e["last"]


async def test_devices_filter_and_keyset_pages(client, dataset):
    devices = sorted({r.device_id for r in dataset.readings if r.site_id == "site-a"})

    pages, after = [], None
    while True:
        params = {"site_id": "site-a", "limit": 3} | ({"after": after} if after else {})
        body = (await client.get("/devices", params=params)).json()
        pages.append([d["device_id"] for d in body["items"]])
        after = body["next_cursor"]
        if after is None:
            break

    assert [d for page in pages for d in page] == devices
    assert [len(p) for p in pages] == [3, 1]
    zone = (await client.get("/devices", params={"site_id": "site-b", "zone_id": "z3"})).json()["items"]
    assert [d["device_id"] for d in zone] == ["site-b.z3.d0", "site-b.z3.d1"]
    assert zone[0]["sensor_types"] == ["co2", "humidity", "occupancy", "temperature"]
    assert zone[1]["sensor_types"] == ["co2", "humidity", "temperature"]


async def test_device_detail(client, dataset):
    device = "site-a.z1.d0"
    latest = {s: r for (d, s), r in dataset.latest().items() if d == device}
    open_alerts = sorted(
        (a for a in dataset.alerts if a["device_id"] == device and a["status"] == "open"),
        key=lambda a: (a["opened_at"], a["alert_id"]),
        reverse=True,
    )
    assert open_alerts, "the dataset must give this device an open alert"

    response = await client.get(f"/devices/{device}")

    assert response.status_code == 200
    body = response.json()
    assert (body["site_id"], body["zone_id"]) == ("site-a", "z1")
    assert parse(body["last_seen"]) == max(r.ts for r in latest.values())
    assert [s["sensor_type"] for s in body["sensors"]] == sorted(latest)
    for sensor in body["sensors"]:
        r = latest[sensor["sensor_type"]]
        assert sensor["value"] == r.value
        assert parse(sensor["ts_event"]) == r.ts
        assert sensor["event_id"] == r.event_id
    assert {s["sensor_type"]: s["unit"] for s in body["sensors"]} == {
        "co2": "ppm",
        "temperature": "celsius",
        "humidity": "percent",
        "occupancy": "count",
    }
    assert [a["alert_id"] for a in body["open_alerts"]] == [str(a["alert_id"]) for a in open_alerts]


async def test_unknown_device_is_404(client, dataset):
    response = await client.get("/devices/no-such-device")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "no-such-device" in response.json()["detail"]


# ---------------------------------------------------------------- live status


@pytest.mark.parametrize("site", [None, "site-b"])
async def test_status_live(client, dataset, api_dsn, site):
    by_zone = defaultdict(list)
    for (_, sensor), r in dataset.latest().items():
        if site is None or r.site_id == site:
            by_zone[(r.site_id, r.zone_id, sensor)].append(r)
    zone_windows = dataset.zone_windows(300)
    view = await view_rows(api_dsn, "telemetry_agg_5m")

    response = await client.get("/status/live", params={"site_id": site} if site else {})

    assert response.status_code == 200
    body = response.json()
    assert body["site_id"] == site
    items = {(i["site_id"], i["zone_id"], i["sensor_type"]): i for i in body["items"]}
    assert sorted(items) == sorted(by_zone)
    for key, readings in by_zone.items():
        item = items[key]
        latest_ts = max(r.ts for r in readings)
        window = floor(latest_ts, 300)
        expected_window = zone_windows[(*key, window)]
        assert item["latest_value"] == pytest.approx(fmean(r.value for r in readings), **APPROX)
        assert parse(item["latest_ts"]) == latest_ts
        assert item["device_count"] == len(readings)
        assert parse(item["window_start"]) == window
        assert parse(item["window_end"]) == window + timedelta(minutes=5)
        assert item["window_count"] == expected_window["count_events"]
        assert item["window_avg"] == pytest.approx(expected_window["avg_value"], **APPROX)
        assert item["window_min"] == expected_window["min_value"]
        assert item["window_max"] == expected_window["max_value"]
        held = view[(*key, window)]
        assert item["window_avg"] == pytest.approx(held["avg_value"], **APPROX)
        assert item["window_count"] == held["count_events"]


# ---------------------------------------------------------------- trends


@pytest.mark.parametrize(
    "window,seconds,view", [("5m", 300, "telemetry_agg_5m"), ("15m", 900, "telemetry_agg_15m")]
)
async def test_trends_of_a_zone_equal_the_zone_view(client, dataset, api_dsn, window, seconds, view):
    expected = {k[3]: v for k, v in dataset.zone_windows(seconds).items() if k[:3] == ("site-a", "z2", "co2")}
    held = {k[3]: v for k, v in (await view_rows(api_dsn, view)).items() if k[:3] == ("site-a", "z2", "co2")}
    params = {
        "site_id": "site-a",
        "zone_id": "z2",
        "sensor_type": "co2",
        "window": window,
        "start": T0.isoformat(),
        "end": (T0 + timedelta(minutes=90)).isoformat(),
    }

    response = await client.get("/trends", params=params)

    assert response.status_code == 200
    body = response.json()
    assert body["window"] == window
    assert body["scope"] == {"site_id": "site-a", "zone_id": "z2", "device_id": None}
    [series] = body["series"]
    assert series["sensor_type"] == "co2" and series["unit"] == "ppm"
    starts = [parse(p["window_start"]) for p in series["points"]]
    assert starts == sorted(expected) == sorted(held)
    assert len(starts) == 90 * 60 // seconds
    for point in series["points"]:
        start = parse(point["window_start"])
        assert parse(point["window_end"]) == start + timedelta(seconds=seconds)
        assert_window_equal(point, expected[start])
        assert point["avg_value"] == pytest.approx(held[start]["avg_value"], **APPROX)
        assert point["count_events"] == held[start]["count_events"]


async def test_trends_of_a_device_site_and_fleet(client, dataset):
    def expected(pred):
        grouped = defaultdict(list)
        for r in dataset.readings:
            if r.sensor_type == "humidity" and pred(r):
                grouped[floor(r.ts, 900)].append(r)
        return {k: summarize(v) for k, v in grouped.items()}

    span = {
        "window": "15m",
        "sensor_type": "humidity",
        "start": "2024-05-01T12:00:00Z",
        "end": "2024-05-01T13:30:00Z",
    }
    scopes = [
        ({"device_id": "site-b.z1.d1"}, lambda r: r.device_id == "site-b.z1.d1"),
        ({"site_id": "site-b"}, lambda r: r.site_id == "site-b"),
        ({}, lambda r: True),
    ]
    for params, pred in scopes:
        body = (await client.get("/trends", params=span | params)).json()
        [series] = body["series"]
        want = expected(pred)
        assert [parse(p["window_start"]) for p in series["points"]] == sorted(want)
        for point in series["points"]:
            assert_window_equal(point, want[parse(point["window_start"])])


async def test_trends_every_sensor_when_none_is_named(client, dataset):
    body = (
        await client.get("/trends", params={"device_id": "site-a.z2.d0", "start": "2024-05-01T12:00:00Z"})
    ).json()
    assert [s["sensor_type"] for s in body["series"]] == ["co2", "humidity", "occupancy", "temperature"]


async def test_trends_default_range_ends_at_the_newest_window(client, dataset):
    newest = max(floor(r.ts, 300) for r in dataset.readings if r.zone_id == "z3") + timedelta(minutes=5)

    body = (
        await client.get("/trends", params={"site_id": "site-b", "zone_id": "z3", "sensor_type": "co2"})
    ).json()

    assert parse(body["end"]) == newest
    assert parse(body["start"]) == newest - timedelta(hours=6)
    assert len(body["series"][0]["points"]) == 18
    only_start = (
        await client.get("/trends", params={"start": "2024-05-01T12:00:00+02:00", "window": "15m"})
    ).json()
    assert parse(only_start["start"]) == T0 - timedelta(hours=2)
    assert parse(only_start["end"]) == T0 + timedelta(hours=22)


# ---------------------------------------------------------------- heatmap


@pytest.mark.parametrize("metric", ["avg", "max"])
async def test_heatmap_at_a_time(client, dataset, api_dsn, metric):
    at = T0 + timedelta(minutes=7, seconds=30)
    window = T0 + timedelta(minutes=5)
    expected = {
        k[:2]: v for k, v in dataset.zone_windows(300).items() if k[2] == "temperature" and k[3] == window
    }
    held = {
        k[:2]: v
        for k, v in (await view_rows(api_dsn, "telemetry_agg_5m")).items()
        if k[2] == "temperature" and k[3] == window
    }

    response = await client.get(
        "/heatmap", params={"sensor_type": "temperature", "metric": metric, "at": at.isoformat()}
    )

    assert response.status_code == 200
    body = response.json()
    assert parse(body["window_start"]) == window
    assert parse(body["window_end"]) == window + timedelta(minutes=5)
    assert body["unit"] == "celsius"
    assert body["thresholds"] == {"open_above": 30.0, "resolve_at_or_below": 29.0}
    assert body["sites"] == ["site-a", "site-b"]
    assert body["zones"] == ["z1", "z2", "z3"]
    for i, site in enumerate(body["sites"]):
        for j, zone in enumerate(body["zones"]):
            cell = body["cells"][i][j]
            if (site, zone) not in expected:
                assert cell is None
                continue
            want = expected[(site, zone)]
            assert_window_equal(cell, want)
            value = want["avg_value"] if metric == "avg" else want["max_value"]
            assert cell["value"] == pytest.approx(value, **APPROX)
            assert cell["value"] == pytest.approx(held[(site, zone)][f"{metric}_value"], **APPROX)
            assert cell["level"] == ("alert" if value > 30 else "warn" if value > 29 else "ok")


async def test_heatmap_defaults_to_the_newest_window(client, dataset):
    newest = max(floor(r.ts, 900) for r in dataset.readings if r.sensor_type == "occupancy")

    body = (await client.get("/heatmap", params={"sensor_type": "occupancy", "window": "15m"})).json()

    assert parse(body["window_start"]) == newest
    assert body["thresholds"] is None
    cells = [c for row in body["cells"] for c in row if c]
    assert cells and all(c["level"] is None for c in cells)
    expected = {
        k[:2]: v for k, v in dataset.zone_windows(900).items() if k[2] == "occupancy" and k[3] == newest
    }
    assert sum(c["count_events"] for c in cells) == sum(v["count_events"] for v in expected.values())


async def test_heatmap_of_an_empty_window(client, dataset):
    body = (await client.get("/heatmap", params={"sensor_type": "co2", "at": "2030-01-01T00:00:00Z"})).json()
    assert body["sites"] == ["site-a", "site-b"]
    assert all(cell is None for row in body["cells"] for cell in row)


# ---------------------------------------------------------------- alerts


def newest_first(alerts):
    return sorted(alerts, key=lambda a: (a["opened_at"], a["alert_id"]), reverse=True)


@pytest.mark.parametrize(
    "params,pred",
    [
        ({}, lambda a: True),
        ({"status": "open"}, lambda a: a["status"] == "open"),
        (
            {"status": "resolved", "site_id": "site-a"},
            lambda a: a["status"] == "resolved" and a["site_id"] == "site-a",
        ),
        ({"sensor_type": "humidity"}, lambda a: a["sensor_type"] == "humidity"),
        ({"site_id": "site-a", "zone_id": "z2"}, lambda a: (a["site_id"], a["zone_id"]) == ("site-a", "z2")),
        ({"since": "2024-05-01T13:00:00Z"}, lambda a: a["opened_at"] >= T0 + timedelta(hours=1)),
        ({"device_id": "site-b.z1.d0"}, lambda a: a["device_id"] == "site-b.z1.d0"),
    ],
)
async def test_alerts_newest_first_through_every_page(client, dataset, params, pred):
    expected = [str(a["alert_id"]) for a in newest_first(a for a in dataset.alerts if pred(a))]
    assert expected

    seen, cursor, pages = [], None, 0
    while True:
        body = (
            await client.get("/alerts", params=params | {"limit": 4} | ({"cursor": cursor} if cursor else {}))
        ).json()
        seen += [a["alert_id"] for a in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert seen == expected
    assert pages == -(-len(expected) // 4)  # a full last page already says next_cursor = null


async def test_alert_fields(client, dataset):
    by_id = {str(a["alert_id"]): a for a in dataset.alerts}
    body = (await client.get("/alerts", params={"limit": 1000})).json()
    assert body["next_cursor"] is None
    assert len(body["items"]) == len(dataset.alerts)
    for item in body["items"]:
        a = by_id[item["alert_id"]]
        for name in ("status", "rule", "alert_type", "device_id", "site_id", "zone_id", "sensor_type"):
            assert item[name] == a[name]
        for name in ("threshold", "value", "peak_value"):
            assert item[name] == a[name]
        assert parse(item["opened_at"]) == a["opened_at"]
        assert (item["resolved_at"] and parse(item["resolved_at"])) == a["resolved_at"]
        assert item["event_id"] == str(a["event_id"])
        assert isinstance(item["change_seq"], int)


# ---------------------------------------------------------------- format, health, metrics, dashboard


async def test_every_time_is_iso_utc_with_z(client, dataset):
    for path, params in [
        ("/sites", {}),
        ("/devices", {}),
        ("/devices/site-a.z1.d0", {}),
        ("/status/live", {}),
        ("/trends", {"start": "2024-05-01T14:00:00+02:00"}),
        ("/heatmap", {"sensor_type": "co2"}),
        ("/alerts", {}),
    ]:
        times = list(iter_times((await client.get(path, params=params)).json()))
        assert times, path
        for text in times:
            parse(text)


async def test_health(client):
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    for _ in range(50):  # the producer connects in the background after start
        response = await client.get("/health/ready")
        if response.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["postgres"]["ok"] and body["checks"]["kafka"]["ok"]


async def test_metrics_label_routes_by_template(client, dataset):
    await client.get("/devices/site-a.z1.d0")
    text = (await client.get("/metrics")).text
    assert 'telemetrypulse_api_requests_total{method="GET",route="/devices/{device_id}",status="200"}' in text
    assert "telemetrypulse_api_request_seconds_bucket" in text


async def test_dashboard_is_served_and_needs_no_internet(client):
    page = await client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        response = await client.get(asset)
        assert response.status_code == 200
        # The SVG namespace URL is an identifier, never fetched; anything else absolute would be.
        text = response.text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text
        for needle in ('src="http', 'href="http', "cdn", 'import("http', "url(http"):
            assert needle not in text.lower()
    for needle in ('src="http', 'href="http', "cdn."):
        assert needle not in page.text.lower()


async def test_openapi_documents_every_route(client):
    spec = (await client.get("/openapi.json")).json()
    expected = {
        "/health/live", "/health/ready", "/sites", "/devices", "/devices/{device_id}", "/devices/{device_id}/readings",
        "/status/live", "/trends",
        "/heatmap", "/alerts", "/alerts/stream", "/ingest", "/ingest/batch", "/metrics",
        "/alerts/{alert_id}", "/alerts/{alert_id}/ack", "/alerts/{alert_id}/notes",
        "/webhooks", "/webhooks/{name}", "/webhooks/deliveries", "/rules", "/rules/{rule_id}",
    }  # fmt: skip
    assert set(spec["paths"]) == expected
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            for parameter in operation.get("parameters", []):
                assert parameter.get("description"), f"{path}: parameter {parameter['name']} undocumented"
    assert spec["paths"]["/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "examples"
    ]


async def test_reads_run_as_the_read_only_role(client):
    reader = client.app.state.api.reader
    assert await reader.fetchval("SELECT current_user") == "telemetrypulse_reader"
    with pytest.raises(asyncpg.PostgresError) as refused:
        await reader.fetchval("DELETE FROM telemetry_alerts RETURNING 1")
    assert isinstance(refused.value, asyncpg.ReadOnlySQLTransactionError | asyncpg.InsufficientPrivilegeError)
    # Even a session that turns read-only off cannot write: the role has SELECT only.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with reader.pool.acquire() as conn, conn.transaction(readonly=False):
            await conn.execute("SET LOCAL transaction_read_only = off")
            await conn.execute("DELETE FROM telemetry_alerts")
