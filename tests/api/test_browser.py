"""The dashboard in headless Chromium against a running stack: real worker, real API, real Kafka and
PostgreSQL. Events go in through `POST /ingest`; the heatmap must show the values PostgreSQL holds, and
an alert opened by the worker during the test must appear in the list without a page reload.

Reads are protected here (a key with the read scope exists), so the page must ask for the key once, keep
it in sessionStorage only, read the live stream with it, and let the operator acknowledge the alert and
add a note (operate scope), which the API then holds.

Chromium is Debian's (`/usr/bin/chromium`, `make install` puts it there); never `playwright install`.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devkit.paths import TEST_OUTPUT
from devkit.waiting import wait_for
from tests.api.conftest import live_api

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SITES = {"hq": ["lobby", "floor-1"], "lab": ["floor-1", "clean-room"]}
OPERATOR_KEY = "ops-browser-7f3e2d1c"
DECIMALS = {"co2": 0, "temperature": 1}


def reading(device: str, site: str, zone: str, sensor: str, value: float, ts: datetime) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "device_id": device,
        "site_id": site,
        "zone_id": zone,
        "sensor_type": sensor,
        "value": value,
        "ts_event": ts.isoformat(),
    }


def baseline(now: datetime) -> list[dict]:
    """Three readings per device and sensor, all in the current 5-minute window (the heatmap shows one)."""
    window_start = now - timedelta(seconds=now.timestamp() % 300)
    events = []
    for s, (site, zones) in enumerate(SITES.items()):
        for z, zone in enumerate(zones):
            for d in range(2):
                device = f"{site}-{zone}-{d}"
                for k in range(3):
                    ts = window_start + timedelta(seconds=k)
                    events.append(reading(device, site, zone, "co2", 500 + 100 * s + 40 * z + 10 * d + k, ts))
                    events.append(reading(device, site, zone, "temperature", 21 + s + 0.5 * z + 0.1 * k, ts))
    return events


async def poll(fetch, predicate, timeout_s: float, what: str):
    async def check():
        value = await fetch()
        return value if predicate(value) else None

    return await wait_for(check, timeout_s, interval_s=0.5, what=what)


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium not installed (make install)")
async def test_dashboard_shows_heatmap_values_and_a_live_alert(pipeline):
    from playwright.async_api import async_playwright

    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    now = datetime.now(UTC).replace(microsecond=0)
    events = baseline(now)

    env = pipeline.env(9, LOG_LEVEL="warning", API_KEYS=f"ops:{OPERATOR_KEY}:read+operate")
    with live_api(env, "browser") as api:
        async with httpx.AsyncClient(
            base_url=api.url, timeout=30, headers={"X-API-Key": OPERATOR_KEY}
        ) as http:
            accepted = await http.post("/ingest/batch", json=events)
            assert accepted.status_code == 202 and accepted.json()["accepted"] == len(events), accepted.text

            async def heatmap():
                return (await http.get("/heatmap", params={"sensor_type": "co2"})).json()

            def complete(body) -> bool:
                cells = [c for row in body["cells"] for c in row if c]
                return len(cells) == 4 and sum(c["count_events"] for c in cells) == len(events) // 2

            held = await poll(heatmap, complete, 90, "the worker to aggregate the baseline")

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                    console_errors: list[str] = []
                    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                    await page.goto(api.url + "/")

                    # Reads are protected: the page asks for the key, once.
                    await page.locator("[data-testid=key-prompt]").wait_for(state="visible", timeout=20_000)
                    await page.fill("[data-testid=key-name]", "tester")
                    await page.fill("[data-testid=key-input]", OPERATOR_KEY)
                    await page.click("[data-testid=key-save]")
                    await page.locator("[data-testid=key-prompt]").wait_for(state="hidden", timeout=5_000)
                    console_errors.clear()  # the refused requests before the key was typed

                    # The heatmap renders one cell per zone with data, showing the value PostgreSQL holds.
                    await page.wait_for_selector("[data-testid=heatmap-cell]", timeout=20_000)
                    shown = await page.eval_on_selector_all(
                        "[data-testid=heatmap-cell]",
                        "cells => cells.map(c => [c.dataset.site, c.dataset.zone, c.querySelector('.v').textContent])",
                    )
                    expected = {
                        (site, zone): f"{cell['value']:.0f}"
                        for i, site in enumerate(held["sites"])
                        for j, zone in enumerate(held["zones"])
                        if (cell := held["cells"][i][j])
                    }
                    assert {(s, z): v for s, z, v in shown} == expected

                    # The trend range picks the window size that fits it, and the CSV link downloads what the
                    # chart shows (fetched with the key: reads are protected here).
                    await page.select_option("[data-testid=trend-range]", "7d")
                    await page.wait_for_function(
                        "document.querySelector('#tr-meta').textContent.includes('1h window')", timeout=10_000
                    )
                    href = await page.get_attribute("[data-testid=trend-csv]", "href")
                    assert "window=1h" in href and "format=csv" in href
                    async with page.expect_download(timeout=15_000) as download_info:
                        await page.click("[data-testid=trend-csv]")
                    download = await download_info.value
                    csv_text = Path(await download.path()).read_text()
                    assert csv_text.startswith("sensor_type,unit,window_start,window_end,count_events,")
                    assert len(csv_text.strip().splitlines()) >= 2  # the header and the current hour
                    await page.select_option("[data-testid=trend-range]", "1h")
                    await page.wait_for_function(
                        "document.querySelector('#tr-meta').textContent.includes('5m window')", timeout=10_000
                    )

                    # An alert opened during the test arrives over SSE: no reload (the marker survives).
                    await page.evaluate("window.__noReload = true")
                    hot = reading(
                        "lab-clean-room-1", "lab", "clean-room", "co2", 1850.0, now + timedelta(seconds=5)
                    )
                    assert (await http.post("/ingest", json=hot)).status_code == 202
                    item = page.locator('#alerts li[data-device="lab-clean-room-1"][data-status="open"]')
                    await item.wait_for(timeout=60_000)
                    assert "CO2_HIGH" in await item.inner_text()
                    assert await page.evaluate("window.__noReload === true")

                    # Drill down into the alert's device.
                    await item.click()
                    detail = page.locator("[data-testid=device-detail] h3").first
                    await detail.wait_for(timeout=10_000)
                    assert "lab-clean-room-1" in await detail.inner_text()
                    await page.wait_for_function(
                        "document.querySelectorAll('#trend-chart *').length > 0", timeout=10_000
                    )

                    # Acknowledge it from the list: marked at once, and the API holds it.
                    alert_id = await item.get_attribute("data-alert-id")
                    assert await item.get_attribute("data-acknowledged") == "false"
                    await item.locator("[data-testid=ack-button]").click()
                    acked = page.locator(f'#alerts li[data-alert-id="{alert_id}"][data-acknowledged="true"]')
                    await acked.wait_for(timeout=10_000)
                    assert "acknowledged by tester" in await acked.inner_text()
                    ack_state = page.locator("[data-testid=alert-detail] [data-testid=ack-state]")
                    await page.wait_for_function(
                        "document.querySelector('[data-testid=ack-state]')?.textContent.includes('tester')",
                        timeout=10_000,
                    )
                    assert "acknowledged by tester" in await ack_state.inner_text()

                    # A note, through the alert's panel; it shows in its notes and timeline.
                    await page.fill("[data-testid=note-input]", "checked the ventilation")
                    await page.click("[data-testid=note-submit]")
                    note = page.locator("[data-testid=notes] [data-testid=note]").first
                    await note.wait_for(timeout=10_000)
                    assert "checked the ventilation" in await note.inner_text()
                    kinds = await page.eval_on_selector_all(
                        "[data-testid=timeline] li", "items => items.map(i => i.dataset.kind)"
                    )
                    assert kinds[0] == "opened" and {"acknowledged", "note"} <= set(kinds)
                    held = (await http.get(f"/alerts/{alert_id}")).json()
                    assert (
                        held["acknowledged_by"] == "tester" and held["acknowledgement"]["key_name"] == "ops"
                    )
                    assert [(n["by"], n["text"]) for n in held["notes"]] == [
                        ("tester", "checked the ventilation")
                    ]

                    # The "unacknowledged" filter hides it.
                    await page.check("[data-testid=unacked-filter]")
                    await acked.wait_for(state="detached", timeout=5_000)
                    await page.uncheck("[data-testid=unacked-filter]")
                    await acked.wait_for(timeout=5_000)

                    # The key lives in sessionStorage only, and survives a reload of the tab.
                    storage = await page.evaluate(
                        "[sessionStorage.getItem('telemetrypulse.apiKey'), localStorage.length, document.cookie]"
                    )
                    assert storage == [OPERATOR_KEY, 0, ""]
                    await asyncio.sleep(0.5)
                    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(TEST_OUTPUT / "dashboard.png"), full_page=True)
                    await page.reload()
                    await page.wait_for_selector("[data-testid=heatmap-cell]", timeout=20_000)
                    assert await page.locator("[data-testid=key-prompt]").is_hidden()
                    assert not console_errors, console_errors
                    assert OPERATOR_KEY not in api.log_text()
                finally:
                    await browser.close()
