"""`devkit/api_load.run_api_load` (the benchmark's API phase) works against a running API (the figures themselves are not asserted)."""

from __future__ import annotations

import pytest

from devkit.api_load import ROUTES, run_api_load
from tests.api.conftest import live_api, live_api_env

pytestmark = pytest.mark.integration


async def test_run_api_load_reports_every_route(stack, api_dsn, dataset):
    with live_api(live_api_env(stack, api_dsn), "load") as api:
        result = await run_api_load(api.url, duration_s=1.0, concurrency=3)

    assert set(result) == {*ROUTES, "all"}
    for route in ROUTES:
        figures = result[route]
        assert figures["requests"] > 0 and figures["errors"] == 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
        assert figures["rps"] > 0
    assert result["all"]["requests"] == sum(result[r]["requests"] for r in ROUTES)
