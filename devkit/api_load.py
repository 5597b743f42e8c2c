"""API latency under concurrent load: `/status/live`, `/trends` and `/devices/{id}`.

`run_api_load(base_url, duration_s, concurrency)` discovers real ids from the running API, warms up,
then keeps `concurrency` clients busy for `duration_s`, rotating over the three routes, and returns per
route (and over all) the request count, errors, p50/p99 latency in ms and requests per second.

    python -m devkit.api_load --base-url http://127.0.0.1:8000 --duration 10 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import time
from collections.abc import Callable

import httpx

ROUTES = ("/status/live", "/trends", "/devices/{device_id}")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


async def _targets(client: httpx.AsyncClient) -> dict[str, Callable[[random.Random], str]]:
    devices = (await client.get("/devices", params={"limit": 1000})).raise_for_status().json()["items"]
    sites = (await client.get("/sites")).raise_for_status().json()["items"]
    if not devices or not sites:
        raise RuntimeError(f"{client.base_url} has no devices yet: load data first (simulator or worker)")
    zones = [(s["site_id"], z) for s in sites for z in s["zones"]]
    site_ids = [s["site_id"] for s in sites]
    sensors = sorted({t for d in devices for t in d["sensor_types"]})

    def status(rng: random.Random) -> str:
        # Half the calls ask for the whole fleet, half for one site.
        return "/status/live" if rng.random() < 0.5 else f"/status/live?site_id={rng.choice(site_ids)}"

    def trends(rng: random.Random) -> str:
        site, zone = rng.choice(zones)
        return f"/trends?site_id={site}&zone_id={zone}&sensor_type={rng.choice(sensors)}&window={rng.choice(['5m', '15m'])}"

    def device(rng: random.Random) -> str:
        return f"/devices/{rng.choice(devices)['device_id']}"

    return {"/status/live": status, "/trends": trends, "/devices/{device_id}": device}


def _summary(latencies: list[float], errors: int, seconds: float) -> dict:
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else math.nan,
        "rps": round(len(latencies) / seconds, 1) if seconds > 0 else math.nan,
    }


async def run_api_load(base_url: str, duration_s: float, concurrency: int, *, seed: int = 1) -> dict:
    """Latency and throughput of the three read routes under `concurrency` concurrent clients.

    Returns `{route: {requests, errors, p50_ms, p99_ms, max_ms, rps}}` for each of ROUTES, plus
    `"all"`. An error is any non-200 answer or transport failure; its latency is not counted.
    """
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        targets = await _targets(client)
    return await run_url_load(base_url, targets, duration_s, concurrency, seed=seed)


async def run_url_load(
    base_url: str,
    targets: dict[str, Callable[[random.Random], str]],
    duration_s: float,
    concurrency: int,
    *,
    seed: int = 1,
) -> dict:
    """`concurrency` clients rotating over `targets` (name -> a function drawing a URL) for `duration_s`, after one
    warm-up call of each per client; the figures of each target and of `"all"`, as run_api_load's."""
    names = list(targets)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)
    # One single-connection client per simulated user: httpx's shared pool costs the load generator
    # more CPU per request as connections grow, and on a small machine that CPU is taken from the API.
    clients = [
        httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=1))
        for _ in range(concurrency)
    ]
    try:

        async def hit(client: httpx.AsyncClient, name: str, rng: random.Random, record: bool) -> None:
            url = targets[name](rng)
            started = time.perf_counter()
            try:
                response = await client.get(url)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            if record:
                if ok:
                    latencies[name].append(elapsed)
                else:
                    errors[name] += 1

        warm_rng = random.Random(seed)
        await asyncio.gather(*(hit(client, name, warm_rng, False) for client in clients for name in names))

        deadline = time.perf_counter() + duration_s

        async def client_loop(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            # Clients start at different targets so every one is under load all the time.
            for name in itertools.islice(itertools.cycle(names), index % len(names), None):
                if time.perf_counter() >= deadline:
                    return
                await hit(clients[index], name, rng, True)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))

    result = {name: _summary(latencies[name], errors[name], seconds) for name in names}
    result["all"] = _summary([x for name in names for x in latencies[name]], sum(errors.values()), seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.api_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    result = asyncio.run(run_api_load(args.base_url, args.duration, args.concurrency))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
