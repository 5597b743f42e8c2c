"""Live phases: simulator events at a steady rate (bench/pace.py) into a running worker — latency (produce → row
visible in PostgreSQL, produce → alert on the alerts topic) and, over a long run, the worker's memory.

How latency is measured:
* Produce time is the Kafka record timestamp, set when the event is appended to the producer's batch (sent in
  the same 10 ms tick); the worker stores it as `telemetry_events.ts_ingest`, so every row carries its own.
* Row visibility: every `poll` seconds one query fetches the new rows of a fixed sample of 96 devices (spread
  over the id range; devices hash to partitions, so the sample spans all of them) through the (device_id,
  ts_event) index.
  A row returned by a query that started at T was committed before T, so `T - ts_ingest` is its latency, over-
  stated by at most one poll interval (reported). Sampling keeps the probe's own load on PostgreSQL small.
* Alerts: a consumer on the alerts topic stamps each `open` message when it arrives; its `event_id` names the
  opening reading, whose `ts_ingest` gives the produce time.
Same machine, same clock for all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from bench import harness
from bench.profile import Profiler
from telemetrypulse.simulator import Topology

PROBE_DEVICES = 96  # a sample: each costs PostgreSQL one index probe per poll

PROBE_SQL = """
SELECT e.event_id, e.device_id, e.ts_event, e.ts_ingest
FROM unnest($1::text[], $2::timestamptz[]) AS p(device_id, since)
CROSS JOIN LATERAL (
    SELECT t.event_id, t.device_id, t.ts_event, t.ts_ingest FROM telemetry_events t
    WHERE t.device_id = p.device_id AND t.ts_event >= p.since
) e
"""


@dataclass
class LiveOptions:
    label: str
    seconds: float
    rate: float
    topology: Topology
    anomalies_per_hour: float
    poll_s: float
    rss_every_s: float
    seed: int
    partitions: int
    keep: bool
    profile: Path | None = None  # py-spy folded stacks of the worker while producing
    # How long to wait for the backlog after the producer stops; None: until it is done (counts then exact).
    drain_limit_s: float | None = None


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": len(values),
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


@dataclass
class RowProbe:
    dsn: str
    devices: list[str]
    interval_s: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (produce time, latency s)
    polls: int = 0
    errors: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        since = dict.fromkeys(self.devices, epoch)
        seen: set = set()
        conn: asyncpg.Connection | None = None
        try:
            while not self._stop.is_set():
                started = time.time()
                try:
                    # A fresh table has no statistics yet, and the planner then scans partitions sequentially
                    # once per device and poll: that made the probe PostgreSQL's biggest load. Index scans only.
                    conn = conn or await asyncpg.connect(
                        self.dsn, server_settings={"enable_seqscan": "off", "enable_bitmapscan": "off"}
                    )
                    rows = await conn.fetch(PROBE_SQL, self.devices, [since[d] for d in self.devices])
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    conn = None  # the database restarting is not a latency sample; ask again
                    self.errors += 1
                    await asyncio.sleep(self.interval_s)
                    continue
                self.polls += 1
                for r in rows:
                    if r["event_id"] in seen:
                        continue
                    seen.add(r["event_id"])
                    produced = r["ts_ingest"].timestamp()
                    self.samples.append((produced, started - produced))
                    if r["ts_event"] > since[r["device_id"]]:
                        since[r["device_id"]] = r["ts_event"]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), max(0.0, self.interval_s - (time.time() - started))
                    )
        finally:
            if conn is not None:
                await conn.close()

    def stop(self) -> None:
        self._stop.set()


@dataclass
class AlertProbe:
    bootstrap: str
    topic: str
    # alert_id -> (opening event_id, arrival here, Kafka timestamp of the alert = when the worker produced it)
    opened: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    resolved: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        partitions = await harness.partitions_of(self.bootstrap, self.topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                arrived = time.time()
                for records in batch.values():
                    for r in records:
                        message = orjson.loads(r.value)
                        if message["status"] == "open":
                            self.opened.setdefault(
                                message["alert_id"], (message["event_id"], arrived, r.timestamp / 1000)
                            )
                        else:
                            self.resolved += 1
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stop.set()


async def state_sample(dep: harness.Deployment) -> dict:
    """How big the device records have grown: the latest record of the most recently written devices, and
    how many bytes the device-state changelog took on the broker's disk over the run."""
    values = await harness.tail_values(dep.bootstrap, dep.changelog_topic, per_partition=300)
    records = [orjson.loads(v) for v in values.values()]
    n = max(1, len(records))
    return {
        "devices_sampled": len(records),
        "record_bytes_avg": sum(map(len, values.values())) / n,
        "seen_ids_avg": sum(len(r.get("seen", ())) for r in records) / n,
        "seen_bytes_share": sum(len(orjson.dumps(r.get("seen", {}))) for r in records)
        / max(1, sum(map(len, values.values()))),
        "windows_avg": sum(len(r.get("win", ())) for r in records) / n,
        "changelog_disk_bytes": harness.topic_disk_bytes(dep.changelog_topic),
        "changes_disk_bytes": harness.topic_disk_bytes(f"{dep.app_id}-changes"),
        "events_disk_bytes": harness.topic_disk_bytes(dep.topic_events),
    }


def pace_command(opts: LiveOptions, count: int, bootstrap: str, topic: str) -> list[str]:
    t = opts.topology
    return [
        str(harness.VENV_BIN / "python"), "-m", "bench.pace", "--bootstrap", bootstrap, "--topic", topic,
        "--rate", str(opts.rate), "--count", str(count), "--seed", str(opts.seed),
        "--sites", str(t.sites), "--zones", str(t.zones), "--devices-per-zone", str(t.devices_per_zone),
        "--anomalies-per-hour", str(opts.anomalies_per_hour),
    ]  # fmt: skip


def expected_probe_rows(count: int, devices: int, probe_indexes: set[int]) -> int:
    """The simulator emits four events (one per sensor) per device in device order, round after round."""
    readings, rest = divmod(count, 4)
    full_rounds, partial = divmod(readings, devices)
    n = 4 * full_rounds * len(probe_indexes) + 4 * sum(1 for i in probe_indexes if i < partial)
    if rest and partial in probe_indexes:
        n += rest
    return n


async def run(stack: dict[str, str], opts: LiveOptions) -> dict:
    dep = await harness.Deployment(stack, opts.label, opts.partitions).setup()
    result: dict = {}
    producer: subprocess.Popen | None = None
    try:
        worker = dep.new_worker()
        worker.start()
        result["ready_s"] = await worker.wait_ready()
        ids = [device for _, _, device in opts.topology.ids()]
        probe_indexes = {i * len(ids) // PROBE_DEVICES for i in range(min(PROBE_DEVICES, len(ids)))}
        rows = RowProbe(dep.dsn, [ids[i] for i in sorted(probe_indexes)], opts.poll_s)
        alerts = AlertProbe(dep.bootstrap, dep.topic_alerts)
        tasks = [asyncio.create_task(alerts.run())]
        if opts.poll_s > 0:
            tasks.append(asyncio.create_task(rows.run()))
        sampler = harness.Sampler(worker.pid, opts.rss_every_s).start()

        count = int(opts.rate * opts.seconds)
        log_path = harness.LOGS / f"{opts.label}-producer.log"
        ledger = harness.CpuLedger(worker.pid)
        profiler = Profiler(worker.pid, opts.profile).start() if opts.profile else None
        began = time.monotonic()
        with log_path.open("wb") as log:
            producer = subprocess.Popen(
                pace_command(opts, count, dep.bootstrap, dep.topic_events),
                cwd=harness.ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        with tqdm(
            total=round(opts.seconds), desc=f"{opts.label} @ {opts.rate:g}/s", unit="s", leave=False
        ) as bar:
            while producer.poll() is None:
                await asyncio.sleep(0.5)
                bar.update(min(round(opts.seconds), int(time.monotonic() - began)) - bar.n)
                if sampler.samples:
                    bar.set_postfix(rss=f"{sampler.samples[-1].rss_bytes / 2**20:.0f}MiB", refresh=False)
                if not worker.alive():
                    raise RuntimeError(f"worker died; see {worker.log_path}")
        if producer.returncode != 0:
            raise RuntimeError(f"producer exited with {producer.returncode}; see {log_path}")
        produce_s = time.monotonic() - began
        assert producer.stdout is not None
        produced = orjson.loads(producer.stdout.read().decode().strip().splitlines()[-1])
        if profiler is not None:
            profiler.stop()
        # What the worker had done when the producer finished: it kept up if little was left.
        conn = await dep.connect()
        try:
            processed_at_end = min(await harness.window_sums(conn))
        finally:
            await conn.close()

        # Drain: the last events through to PostgreSQL and every probe row seen.
        limit = 120 + (count - processed_at_end) / 1000
        drained = True
        try:
            await harness.wait_processed(
                dep, count, timeout_s=min(limit, opts.drain_limit_s or limit), desc=f"{opts.label} drain"
            )
        except TimeoutError:
            if opts.drain_limit_s is None:
                raise
            drained = False
        drained_s = time.monotonic() - began - produce_s
        want_rows = expected_probe_rows(count, len(ids), probe_indexes)
        deadline = time.monotonic() + 10
        while drained and opts.poll_s > 0 and len(rows.samples) < want_rows and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # alerts of the last batches
        cpu = ledger.stop()
        rows.stop()
        alerts.stop()
        await asyncio.gather(*tasks)
        samples = await sampler.stop()

        state = await state_sample(dep)
        conn = await dep.connect()
        try:
            event_ids = [event_id for event_id, _, _ in alerts.opened.values()]
            ingest = {
                str(r["event_id"]): r["ts_ingest"].timestamp()
                for r in await conn.fetch(
                    "SELECT event_id, ts_ingest FROM telemetry_events WHERE event_id = ANY($1::uuid[])",
                    event_ids,
                )
            }
            # One snapshot: with the worker still writing, counts read one after another would disagree.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
                w5, w15 = await harness.window_sums(conn)
                alert_rows = await conn.fetchval("SELECT count(*) FROM telemetry_alerts")
        finally:
            await conn.close()
        alert_lat = [
            (ingest[event_id], arrived - ingest[event_id])
            for event_id, arrived, _ in alerts.opened.values()
            if event_id in ingest
        ]
        # Where the alert time goes: produce -> the worker publishing the alert -> arrival at a consumer.
        alert_published = [
            published - ingest[event_id]
            for event_id, _, published in alerts.opened.values()
            if event_id in ingest
        ]
        mismatches = []
        if not drained:
            # Mid-backlog, in any committed state, a batch's raw rows are in PostgreSQL before (or with) its
            # windows: the changes records put them first, and the sink writes each partition in order. So
            # neither window size may count more events than there are raw rows; whether every event arrives
            # exactly once is left unverified.
            if not (w5 <= raw and w15 <= raw <= count):
                mismatches.append(f"raw {raw}, windows {w5}/{w15} disagree (produced {count})")
            exact = False if mismatches else None
            mismatches.append(
                f"not verified to the end: {count - w5:,} of {count:,} events still queued "
                f"{opts.drain_limit_s:.0f} s after the producer stopped (windows never ahead of raw rows so far)"
            )
        else:
            if not raw == w5 == w15 == count:
                mismatches.append(f"raw {raw}, windows {w5}/{w15}, produced {count}")
            if alert_rows != len(alerts.opened):
                mismatches.append(f"{alert_rows} alert rows, {len(alerts.opened)} opened on the topic")
            if opts.poll_s > 0 and len(rows.samples) != want_rows:
                mismatches.append(f"probe saw {len(rows.samples)} of {want_rows} rows")
            exact = not mismatches
        result.update(
            produced=count,
            produce_s=produced["seconds"],
            rate=produced["rate"],
            late_ticks=produced["late_ticks"],
            drain_after_produce_s=drained_s,
            backlog_at_end=count - processed_at_end,
            processed_rate=processed_at_end / produce_s,
            row_latency=percentiles([lat for _, lat in rows.samples]),
            alert_latency=percentiles([lat for _, lat in alert_lat]),
            alert_publish_latency=percentiles(alert_published),
            row_series=sorted(rows.samples),
            alert_series=sorted(alert_lat),
            poll_s=opts.poll_s,
            polls=rows.polls,
            probe_errors=rows.errors,
            devices=len(ids),
            probe_devices=len(probe_indexes),
            alerts_opened=len(alerts.opened),
            alerts_resolved=alerts.resolved,
            cpu=cpu,
            worker_cpu_share=cpu["worker"] / (produce_s + drained_s),
            rss=[(s.t, s.rss_bytes) for s in samples],
            peak_rss_bytes=(harness.proc_status_kb(worker.pid, "VmHWM") or 0) * 1024,
            check={"exact": exact, "mismatches": mismatches},
            drained=drained,
            state=state,
        )
    finally:
        if producer is not None and producer.poll() is None:
            producer.terminate()
            producer.wait(10)
        await dep.close(keep=opts.keep)
    return result
