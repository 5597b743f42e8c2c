"""API phase: read latency of `/status/live`, `/trends` and `/devices/{id}` under concurrent clients, then history
(issue 14): `/trends` of hourly and daily windows over 30 days, and a month's CSV export (bench/history.py).

The database is filled the product's way (simulator events through the worker), the worker is then stopped
so that only the API and PostgreSQL share the machine with the load generator, and `devkit.api_load` keeps
`concurrency` clients busy against a real `telemetrypulse api` process. The month of history is then written
into the same database directly (bench/history.py says why and how) and measured against the same process.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import harness
from bench import history as month
from bench.data import Expected
from bench.throughput import dataset
from devkit import kafka_io
from devkit.api_load import run_api_load
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


async def run(stack: dict[str, str], opts: ApiOptions) -> dict:
    dep = await harness.BenchDeployment(stack, "api", opts.partitions).setup()
    try:
        topology = Topology()
        expected = Expected()
        sim = dataset(opts.events, opts.seed, topology)
        await kafka_io.produce_burst(
            dep.bootstrap, dep.topic_events, sim.pairs(), opts.events, on_value=expected.add, desc="api data"
        )
        worker = dep.new_pipeline()
        worker.start()
        await worker.wait_ready()
        await harness.wait_processed(dep, opts.events, timeout_s=120 + opts.events / 1000, desc="api data in")
        worker.stop()

        api = dep.add_api(LOG_LEVEL="warning").start()
        await api.wait_ready(60, interval_s=0.5)
        load = await run_api_load(api.url, opts.seconds, opts.concurrency, seed=opts.seed)
        conn = await dep.connect()
        try:
            raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
        finally:
            await conn.close()
        history = await month.synthesize(dep.dsn, opts.seed)
        trends = await month.trends_load(api.url, history, opts.seconds / 2, opts.seed)
        exports = await month.csv_exports(api.url, history, api.pid, opts.exports)
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
        await dep.close(keep=opts.keep)  # stops the API too
