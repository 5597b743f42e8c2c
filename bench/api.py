"""API phase: read latency of `/status/live`, `/trends` and `/devices/{id}` under concurrent clients, then history
(issue 14): `/trends` of hourly and daily windows over 30 days, and a month's CSV export (bench/history.py).

The database is filled the product's way (simulator events through the worker), the worker is then stopped
so that only the API and PostgreSQL share the machine with the load generator, and `bench.api_load` keeps
`concurrency` clients busy against a real `telemetrypulse api` process. The month of history is then written
into the same database directly (bench/history.py says why and how) and measured against the same process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

import httpx

from bench import harness
from bench import history as month
from bench.api_load import run_api_load
from bench.data import Expected, burst_produce
from bench.throughput import dataset
from telemetrypulse.simulator import Topology


@dataclass
class ApiOptions:
    events: int
    seconds: float
    concurrency: int
    partitions: int
    seed: int
    keep: bool
    exports: int = 3  # downloads of the month's CSV (the median is reported)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_ready(base_url: str, api: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while asyncio.get_running_loop().time() < deadline:
            if api.poll() is not None:
                raise RuntimeError(f"the API exited with {api.returncode}")
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError("the API was not ready within 60 s")


async def run(stack: dict[str, str], opts: ApiOptions) -> dict:
    dep = await harness.Deployment(stack, "api", opts.partitions).setup()
    api: subprocess.Popen | None = None
    try:
        topology = Topology()
        expected = Expected()
        sim = dataset(opts.events, opts.seed, topology)
        await burst_produce(
            dep.bootstrap, dep.topic_events, sim.pairs(), opts.events, expected=expected, desc="api data"
        )
        worker = dep.new_worker()
        worker.start()
        await worker.wait_ready()
        await harness.wait_processed(dep, opts.events, timeout_s=120 + opts.events / 1000, desc="api data in")
        worker.stop()

        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = (harness.LOGS / "api.log").open("wb")
        api = subprocess.Popen(
            [sys.executable, "-m", "telemetrypulse.cli", "api", "--port", str(port)],
            env=dict(dep.env(), LOG_LEVEL="warning"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        await _wait_ready(base_url, api)
        load = await run_api_load(base_url, opts.seconds, opts.concurrency, seed=opts.seed)
        conn = await dep.connect()
        try:
            raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
        finally:
            await conn.close()
        history = await month.synthesize(dep.dsn, opts.seed)
        trends = await month.trends_load(base_url, history, opts.seconds / 2, opts.seed)
        exports = await month.csv_exports(base_url, history, api.pid, opts.exports)
        errors = load["all"]["errors"] + sum(
            by_clients["all"]["errors"] for by_window in trends.values() for by_clients in by_window.values()
        )
        history.pop("zones")
        return {
            "events": opts.events,
            "devices": topology.device_count,
            "seconds": opts.seconds,
            "concurrency": opts.concurrency,
            "routes": load,
            "history": {"data": history, "trends": trends, "csv": exports},
            "check": {
                "exact": raw == expected.events
                and errors == 0
                and exports["rows"] == history["raw_rows"] // len(history["exported_sensors"]),
                "raw_rows": raw,
                "errors": errors,
            },
        }
    finally:
        if api is not None and api.poll() is None:
            os.kill(api.pid, signal.SIGTERM)
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
        await dep.close(keep=opts.keep)
