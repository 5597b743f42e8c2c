"""Throughput phase, on one dataset: N pre-produced simulator events through the pipeline into PostgreSQL, beside
the baselines measured on the same topic in the same run — the bare-consumer ceiling, the Faust floor, the batch
baseline (batch + PostgreSQL transaction) and the naive per-event pipeline. `make bench` runs it on two datasets
(45 and 1,000 devices); every pass is checked exactly.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from bench import harness
from bench.data import Expected
from bench.profile import Profiler, render, summarize
from devkit import kafka_io
from devkit.databases import create_database, drop_database
from telemetrypulse.simulator import Simulator, Topology


@dataclass
class Options:
    events: int
    naive_events: int
    partitions: int
    seed: int
    profile: bool
    keep: bool
    topology: Topology = field(default_factory=Topology)
    faust_floor: bool = True  # the quick run leaves it out: ~20 s a dataset, and the batch engine bypasses it


def dataset(events: int, seed: int, topology: Topology, interval_s: float = 10.0) -> Simulator:
    """Simulated event time ending a few minutes before now: old enough to be valid, recent like a backlog."""
    readings = -(-events // (topology.device_count * 4))
    span = timedelta(seconds=readings * interval_s)
    start = (datetime.now(UTC) - span - timedelta(minutes=10)).replace(second=0, microsecond=0)
    return Simulator(seed=seed, start=start, interval=interval_s, topology=topology)


async def verify_exact(conn, expected: Expected) -> dict:
    """Every event once in raw storage, none late; each window's count, min and max as computed from the data."""
    raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
    late = await conn.fetchval("SELECT count(*) FROM telemetry_events WHERE late")
    mismatches = []
    for size, table in ((300, "telemetry_device_agg_5m"), (900, "telemetry_device_agg_15m")):
        rows = await conn.fetch(
            f"SELECT device_id, sensor_type, window_start, count_events, sum_value, min_value, max_value FROM {table}"
        )
        got = {
            (size, r["device_id"], r["sensor_type"], int(r["window_start"].timestamp()) * 1_000_000): r
            for r in rows
        }
        want = {k: v for k, v in expected.windows.items() if k[0] == size}
        if set(got) != set(want):
            mismatches.append(f"{table}: {len(set(want) ^ set(got))} window keys differ")
            continue
        for key, (n, total, low, high) in want.items():
            r = got[key]
            if (r["count_events"], r["min_value"], r["max_value"]) != (n, low, high) or abs(
                r["sum_value"] - total
            ) > 1e-6 * max(1.0, abs(total)):
                mismatches.append(f"{table} {key}: {dict(r)} != {(n, total, low, high)}")
                break
    if raw != expected.events:
        mismatches.append(f"raw rows {raw} != {expected.events}")
    if late:
        mismatches.append(f"{late} rows marked late")
    return {"exact": not mismatches, "raw_rows": raw, "mismatches": mismatches[:5]}


async def profile_pass(stack: dict[str, str], topic: str, opts: Options, seconds: float = 20.0) -> dict:
    """py-spy on a second worker (own APP_ID and database) reading the same topic from the start.

    A pass of its own, so that sampling (py-spy pauses the worker ~97 times a second) cannot slow the pass
    whose rate is reported.
    """
    dep = await harness.BenchDeployment(stack, "tput-profile", opts.partitions, events_topic=topic).setup()
    out = harness.RESULTS / "profile-throughput.folded"
    try:
        worker = dep.new_pipeline()
        worker.start()
        await worker.wait_ready()
        profiler = Profiler(worker.pid, out).start()  # the worker only: where Faust and our batch work run
        try:
            with contextlib.suppress(TimeoutError):
                await harness.wait_processed(dep, opts.events, timeout_s=seconds, desc="profile pass")
        finally:
            profiler.stop()
    finally:
        await dep.close(keep=opts.keep)
    if profiler.error:
        return {"profile_error": profiler.error}
    summary = summarize(out)
    title = (
        f"worker profile: {seconds:.0f} s of a second pass over the throughput topic ({opts.events:,} events)"
    )
    (harness.RESULTS / "profile-throughput.txt").write_text(render(summary, title))
    return {"profile": summary}


async def run_batch_baseline(
    stack: dict[str, str], dep: harness.BenchDeployment, events: int, expected: Expected
) -> dict:
    """The batch baseline over the whole topic, into its own database, checked exactly like the pipeline."""
    name, dsn = await create_database(stack["DATABASE_URL"], "tp_bench_batch")
    try:
        ledger = harness.CpuLedger()
        child = harness.run_module(
            "bench.batch_baseline",
            ["--bootstrap", dep.bootstrap, "--topic", dep.topic_events, "--dsn", dsn, "--count", str(events)],
        )
        result = await harness.wait_module(child, timeout_s=120 + events / 1000)
        result["cpu"] = ledger.stop()
        conn = await asyncpg.connect(dsn)
        try:
            result["check"] = await verify_exact(conn, expected)
        finally:
            await conn.close()
    finally:
        await drop_database(stack["DATABASE_URL"], name)
    result["exact"] = result["check"]["exact"]
    return result


async def run(stack: dict[str, str], opts: Options) -> dict:
    result: dict = {"processes": harness.pipeline_description(), "stage_s": {}}
    clock = [time.monotonic()]

    def stage(name: str) -> None:
        """Where a pass's wall time goes (the quick run has a budget of minutes)."""
        now = time.monotonic()
        result["stage_s"][name] = now - clock[0]
        clock[0] = now

    dep = await harness.BenchDeployment(stack, f"tput{opts.topology.device_count}", opts.partitions).setup()
    try:
        topology = opts.topology
        sim = dataset(opts.events, opts.seed, topology)
        expected = Expected()
        result["produce_rate"] = await kafka_io.produce_burst(
            dep.bootstrap,
            dep.topic_events,
            sim.pairs(),
            opts.events,
            on_value=expected.add,
            desc="pre-produce",
        )
        result["dataset"] = {
            "events": opts.events,
            "devices": topology.device_count,
            "windows_5m": sum(1 for k in expected.windows if k[0] == 300),
            "windows_15m": sum(1 for k in expected.windows if k[0] == 900),
            "event_time_hours": (expected.last_us - expected.first_us) / 3.6e9,
        }

        # The ceiling first, on the same topic, with the machine otherwise idle (as the worker will have it).
        child = harness.run_module(
            "bench.ceiling",
            ["--bootstrap", dep.bootstrap, "--topic", dep.topic_events, "--expect", str(opts.events)],
        )
        result["ceiling"] = await harness.wait_module(child, timeout_s=600)
        stage("produce and ceiling")
        if opts.faust_floor:
            # Faust's own floor: the same delivery path as the worker's, with nothing done per event.
            child = harness.run_module(
                "bench.faust_floor",
                [
                    "--bootstrap", dep.bootstrap, "--topic", dep.topic_events, "--expect", str(opts.events),
                    "--data-dir", str(dep.tmp / "faust-floor"), "--app-id", f"{dep.app_id}-floor",
                ],
            )  # fmt: skip
            result["faust_floor"] = await harness.wait_module(child, timeout_s=600)
            stage("Faust floor")

        worker = dep.new_pipeline()
        worker.start()
        sampler = harness.Sampler(worker, 0.5).start()
        result["ready_s"] = await worker.wait_ready()
        ready_at = time.monotonic()
        ledger = harness.CpuLedger(worker)
        progress: list[tuple[float, int]] = []
        done_at = await harness.wait_processed(
            dep, opts.events, timeout_s=300 + opts.events / 1000, desc="pipeline", progress=progress
        )
        cpu = ledger.stop()
        samples = await sampler.stop()
        peak = worker.peak_rss_bytes()
        elapsed = done_at - ready_at
        # When the first events reached PostgreSQL: a start-up delay after `Ready` weighs on a short (quick) pass.
        first_at = next((t for t, n in progress if n > 0), done_at)
        result["pipeline"] = {
            "seconds": elapsed,
            "seconds_from_spawn": done_at - worker.started_at,
            "rate": opts.events / elapsed,
            "rate_from_spawn": opts.events / (done_at - worker.started_at),
            "first_rows_s": first_at - ready_at,
            "rate_from_first_rows": opts.events / max(1e-3, done_at - first_at),
            "cpu": cpu,
            "worker_cpu_s_per_100k": cpu["worker"] / opts.events * 100_000,
            # Issue 11's "worker CPU µs per event": every process of the pipeline (the sink too, when separate).
            "cpu_us_per_event": cpu["pipeline"] / opts.events * 1e6,
            "peak_rss_bytes": peak or max(s.rss_bytes for s in samples),
            "progress": [(t - ready_at, n) for t, n in progress],
            "rss": [(s.t - samples[0].t, s.rss_bytes) for s in samples],
        }
        conn = await dep.connect()
        try:
            result["pipeline"]["check"] = await verify_exact(conn, expected)
            result["pipeline"]["alerts"] = await conn.fetchval("SELECT count(*) FROM telemetry_alerts")
        finally:
            await conn.close()
        worker.stop()
        stage("pipeline")
        result["batch"] = await run_batch_baseline(stack, dep, opts.events, expected)
        stage("batch baseline")
        if opts.profile:
            result.update(await profile_pass(stack, dep.topic_events, opts))
            stage("profile")

        # The naive pipeline on a prefix of the same topic, into a database of its own.
        name, dsn = await create_database(stack["DATABASE_URL"], "tp_bench_naive")
        try:
            child = harness.run_module(
                "bench.naive",
                [
                    "--bootstrap",
                    dep.bootstrap,
                    "--topic",
                    dep.topic_events,
                    "--dsn",
                    dsn,
                    "--count",
                    str(opts.naive_events),
                ],
            )
            naive = await harness.wait_module(child, timeout_s=1800)
        finally:
            await drop_database(stack["DATABASE_URL"], name)
        naive["exact"] = (
            naive["raw_rows"] == naive["window_5m_events"] == naive["window_15m_events"] == naive["events"]
        )
        result["naive"] = naive
        stage("naive")
        p = result["pipeline"]
        result["ratios"] = {
            "batch": p["rate"] / result["batch"]["rate"],
            "naive": p["rate"] / naive["rate"],
            "ceiling": p["rate"] / result["ceiling"]["rate"],
        }
        if "faust_floor" in result:
            result["ratios"]["faust_floor"] = p["rate"] / result["faust_floor"]["rate"]
        result["exact"] = bool(p["check"]["exact"] and result["batch"]["exact"] and naive["exact"])
    finally:
        await dep.close(keep=opts.keep)
    return result
