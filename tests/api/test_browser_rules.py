"""The dashboard's alert severities, stale sensors list and rules page in headless Chromium, against the real API,
PostgreSQL and Kafka: alerts are shown with their severity and filtered by it, open stale alerts are listed, and an
operator with the admin key lists the rules, writes a new one and turns it off from the page — the API then holds
its two versions, in the order of the rules topic."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from devkit import kafka_io
from devkit.paths import TEST_OUTPUT
from telemetrypulse.names import internal_names
from tests.api.conftest import live_api, live_api_env
from tests.api.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ADMIN_KEY = "adm-browser-9a8b7c6d"
NOW = datetime.now(UTC).replace(microsecond=0)


def alert(n: int, severity: str, rule: str = "threshold", status: str = "open") -> dict:
    alert_type = "SENSOR_STALE" if rule == "stale" else "TEMPERATURE_LOW"
    return {
        "alert_id": uuid.uuid4(), "status": status, "rule": rule, "alert_type": alert_type,
        "device_id": f"dev-{n}", "site_id": "lab", "zone_id": "cold", "sensor_type": "temperature",
        "threshold": 900.0 if rule == "stale" else 2.0, "value": 1.5, "peak_value": 1.2,
        "opened_at": NOW - timedelta(minutes=n), "event_id": uuid.uuid4(),
        "rule_id": None if rule == "stale" else "cold-low", "severity": severity,
    }  # fmt: skip


ALERTS = [alert(1, "critical"), alert(2, "info"), alert(3, "warning", rule="stale"), alert(4, "critical")]


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian chromium not installed (make install)")
async def test_severities_stale_sensors_and_rules_on_the_dashboard(stack, migrated_database):
    from playwright.async_api import async_playwright

    conn = await asyncpg.connect(migrated_database)
    try:
        for row in ALERTS:
            await conn.execute(
                f"INSERT INTO telemetry_alerts ({', '.join(row)}) VALUES "
                f"({', '.join(f'${i}' for i in range(1, len(row) + 1))})",
                *row.values(),
            )
    finally:
        await conn.close()
    env = live_api_env(stack, migrated_database, API_KEYS=f"root:{ADMIN_KEY}:admin", LOG_LEVEL="warning")
    rules_topic = internal_names(env["APP_ID"]).rules_topic
    try:
        with live_api(env, "browser-rules") as api:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1400, "height": 1600})
                    errors: list[str] = []
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    await page.goto(api.url + "/")
                    alerts = page.locator("[data-testid=alerts] li")
                    await alerts.first.wait_for(timeout=20_000)
                    assert sorted(await page.locator("[data-testid=alerts] [data-testid=severity]").all_inner_texts()) == [
                        "critical", "critical", "info", "warning",
                    ]  # fmt: skip
                    await page.select_option("[data-testid=severity-filter]", "critical")
                    assert await alerts.count() == 2
                    assert set(await alerts.evaluate_all("els => els.map(e => e.dataset.severity)")) == {
                        "critical"
                    }
                    assert "< 2" in await alerts.first.inner_text()  # a below rule's condition

                    stale = page.locator("[data-testid=stale-sensors] li")
                    await stale.first.wait_for(timeout=15_000)
                    assert (
                        await stale.count() == 1 and "dev-3 · temperature" in await stale.first.inner_text()
                    )

                    # Rules need the admin key: the page asks for it, then lists the defaults.
                    await page.click("[data-testid=rules-load]")
                    await page.locator("[data-testid=key-prompt]").wait_for(state="visible", timeout=10_000)
                    await page.fill("[data-testid=key-name]", "tester")
                    await page.fill("[data-testid=key-input]", ADMIN_KEY)
                    await page.click("[data-testid=key-save]")
                    errors.clear()  # the refusal before the key was typed
                    await page.click("[data-testid=rules-load]")
                    rows = page.locator("[data-testid=rules] tr.rule")
                    await rows.first.wait_for(timeout=10_000)
                    assert set(await rows.evaluate_all("els => els.map(e => e.dataset.ruleId)")) == {
                        "default-co2-high", "default-temperature-high", "default-humidity-high",
                    }  # fmt: skip

                    form = "[data-testid=rule-form]"
                    await page.fill(f"{form} [name=rule_id]", "cold-low")
                    await page.select_option(f"{form} [name=sensor_type]", "temperature")
                    await page.select_option(f"{form} [name=direction]", "below")
                    await page.fill(f"{form} [name=open_at]", "2")
                    await page.fill(
                        f"{form} [name=resolve_at]", "1"
                    )  # wrong way round for below: a 422 shown
                    await page.fill(f"{form} [name=site_id]", "lab")
                    await page.fill(f"{form} [name=zone_id]", "cold")
                    await page.select_option(f"{form} [name=severity]", "critical")
                    await page.click("[data-testid=rule-save]")
                    error = page.locator("[data-testid=rule-error]")
                    await error.filter(has_text="resolve_at").wait_for(timeout=10_000)
                    errors.clear()
                    await page.fill(f"{form} [name=resolve_at]", "3")
                    await page.click("[data-testid=rule-save]")
                    await page.locator("[data-testid=rules] tr[data-rule-id=cold-low]").wait_for(
                        timeout=10_000
                    )
                    await page.click("[data-testid=rule-off]")
                    versions = page.locator("[data-testid=rule-versions] tr")
                    await page.locator("[data-testid=rules] tr.off[data-rule-id=cold-low]").wait_for(
                        timeout=10_000
                    )
                    assert await versions.count() == 3  # a header and two versions
                    assert not errors, errors
                    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(TEST_OUTPUT / "dashboard-rules.png"), full_page=True)
                finally:
                    await browser.close()
            async with httpx.AsyncClient(base_url=api.url, headers={"X-API-Key": ADMIN_KEY}) as http:
                detail = (await http.get("/rules/cold-low")).json()
            assert [
                (v["enabled"], v["direction"], v["open_at"], v["resolve_at"]) for v in detail["versions"]
            ] == [
                (True, "below", 2, 3),
                (False, "below", 2, 3),
            ]
            assert detail["created_by"] == "root" and detail["severity"] == "critical"
            records = await kafka_io.read_topic(stack["KAFKA_BOOTSTRAP_SERVERS"], rules_topic)
            assert len(records) == 2
    finally:
        await kafka_io.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [rules_topic])
