"""Live phases: simulator events at a steady rate (bench/pace.py) into a running pipeline — the keep-up phase
(backlog every second, latency produce → row visible in PostgreSQL and produce → alert on the alerts topic, Kafka
bytes written per input byte, then a rate ladder while each rate holds) and, over a long run, the pipeline's memory.

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
* Backlog: every second, events produced (end offsets of the events topic) minus events counted in PostgreSQL,
  in seconds of production at the step's rate.
Same machine, same clock for all of it. A rate ladder runs each rung on the same deployment right after the one
before (same 12,500 devices reporting more often), each with its own producer seed (new event ids).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tqdm import tqdm

from bench import harness, kafka_sizes
from bench.profile import Profiler
from devkit import kafka_io
from devkit.databases import window_sums
from devkit.epoch import EPOCH
from devkit.processes import ChildProcess
from telemetrypulse.aio import wait_set
from telemetrypulse.simulator import Topology
from telemetrypulse.state_records import PARTITION_KEY, decode_device_record

PROBE_DEVICES = 96  # a sample: each costs PostgreSQL one index probe per poll

# Rows at or after each device's newest event time seen, except those already seen at that very time (a device's
# sensors report with one timestamp): without the exclusion every poll fetched each device's last report again —
# ~350 rows per poll, 40 polls a second, the bench's own load on PostgreSQL and on its Python.
PROBE_SQL = """
SELECT e.event_id, e.device_id, e.ts_event, e.ts_ingest
FROM unnest($1::text[], $2::timestamptz[]) AS p(device_id, since)
CROSS JOIN LATERAL (
    SELECT t.event_id, t.device_id, t.ts_event, t.ts_ingest FROM telemetry_events t
    WHERE t.device_id = p.device_id AND t.ts_event >= p.since AND NOT t.event_id = ANY($3::uuid[])
) e
"""


TARGET_ROW_P99_S = 1.0  # issue 11: p99 produce→PostgreSQL; the rate ladder's criterion
ABORT_BACKLOG_S = (
    5.0  # a ladder rung this far behind has failed: stop producing instead of growing the backlog
)


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
    warmup_s: float = 10.0  # the verdicts judge what is produced after it
    backlog_every_s: float = 1.0
    # Rates tried after the main run, on the same deployment, while each still holds (stop at the first failure).
    ladder: tuple[float, ...] = ()
    ladder_seconds: float = 30.0
    ladder_warmup_s: float = 5.0
    ladder_drain_limit_s: float = 60.0
    kafka_bytes: bool = False  # measure the worker's Kafka bytes per input byte after the main run


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
        since = dict.fromkeys(self.devices, EPOCH)
        at_since: dict[str, list] = {d: [] for d in self.devices}  # ids seen at exactly since[device]
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
                    boundary = [i for d in self.devices for i in at_since[d]]
                    rows = await conn.fetch(
                        PROBE_SQL, self.devices, [since[d] for d in self.devices], boundary
                    )
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
                    device = r["device_id"]
                    if r["ts_event"] > since[device]:
                        since[device] = r["ts_event"]
                        at_since[device] = [r["event_id"]]
                    elif r["ts_event"] == since[device]:
                        at_since[device].append(r["event_id"])
                await wait_set(self._stop, max(0.0, self.interval_s - (time.time() - started)))
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
        partitions = await kafka_io.partitions_of(self.bootstrap, self.topic)
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


# The 15-minute windows: the same events as the 5-minute ones (one transaction writes both), a third of the rows
# to sum every second.
STORED_SQL = "SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_15m"


@dataclass
class BacklogMonitor:
    """Every `interval_s`, at the same moment: events produced (the events topic's end offsets) and events in
    PostgreSQL (counted in the 5-minute device windows — a sum over a few rows per series; counting raw rows would
    scan the whole growing table every second, a load of its own on a shared 2-core machine). The run's exactness
    check compares the two counts with the raw rows at the end."""

    bootstrap: str
    topic: str
    dsn: str
    interval_s: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (wall time, produced, stored)
    errors: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        tps = [
            TopicPartition(self.topic, p) for p in await kafka_io.partitions_of(self.bootstrap, self.topic)
        ]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        conn: asyncpg.Connection | None = None
        try:
            while not self._stop.is_set():
                started = time.time()
                try:
                    conn = conn or await asyncpg.connect(self.dsn)
                    ends, stored = await asyncio.gather(consumer.end_offsets(tps), conn.fetchval(STORED_SQL))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError):
                    conn = None
                    self.errors += 1
                else:
                    self.samples.append((started, sum(ends.values()), int(stored)))
                await wait_set(self._stop, max(0.0, self.interval_s - (time.time() - started)))
        finally:
            await consumer.stop()
            if conn is not None:
                await conn.close()

    def backlog_s(self, rate: float, since: float) -> float:
        """The latest backlog in seconds of production at `rate`, if sampled after `since` (else 0)."""
        if not self.samples or self.samples[-1][0] < since:
            return 0.0
        _, produced, stored = self.samples[-1]
        return max(0, produced - stored) / rate

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Step:
    """One steady rate for a while: the main run, or a rung of the rate ladder."""

    rate: float
    seconds: float
    seed: int
    produced: dict = field(default_factory=dict)  # bench/pace.py's summary
    aborted: str | None = None

    @property
    def began_at(self) -> float:
        return self.produced["began_at"]

    @property
    def ended_at(self) -> float:
        return self.produced["began_at"] + self.produced["seconds"]

    @property
    def sent(self) -> int:
        return self.produced["sent"]


async def state_sample(dep: harness.BenchDeployment) -> dict:
    """How big the worker's device records are (the latest snapshot record of the most recently written devices,
    from the partition-state changelog): bytes, dedup ids and open windows per device."""
    try:
        values, _, _ = await kafka_io.latest_per_key(
            dep.bootstrap, dep.names.partition_state_changelog, tail=300
        )
    except (KafkaError, TimeoutError):
        return {}
    records = {key: value for key, value in values.items() if key != PARTITION_KEY}
    if not records:
        return {}
    decoded = [decode_device_record(v) for v in records.values()]
    n = len(decoded)
    total = sum(map(len, records.values()))
    return {
        "devices_sampled": n,
        "record_bytes_avg": total / n,
        "seen_ids_avg": sum(len(r.ids) // 16 for r in decoded) / n,
        "seen_bytes_share": sum(len(r.ids) + len(r.id_age) for r in decoded) / max(1, total),
        "windows_avg": sum(len(r.window_rows()) for r in decoded) / n,
    }


def _short_name(dep: harness.BenchDeployment, topic: str) -> str:
    names = {dep.topic_alerts: "alerts (TOPIC_ALERTS)", dep.topic_dlq: "dead letters (TOPIC_DLQ)"}
    return names.get(topic) or topic.replace(dep.app_id, "<APP_ID>")


async def kafka_output_bytes(dep: harness.BenchDeployment) -> dict:
    """Kafka bytes written by the worker per input byte: its output topics (changes, table changelogs, alerts,
    dead letters) over the events topic, as the broker stores them. Internal topics are found by name, so the
    engine's own set of tables needs no list here."""
    internal = await kafka_io.topics_with_prefix(dep.bootstrap, dep.names.prefix)
    changes = [n for n in internal if n == dep.names.changes_topic or n.endswith("-changelog")]
    outputs = [*changes, dep.topic_alerts, dep.topic_dlq]
    sizes = await kafka_sizes.topic_sizes(dep.bootstrap, [dep.topic_events, *outputs])
    events = sizes.pop(dep.topic_events)
    written = sum(sizes.values())
    return {
        "events_bytes": events,
        "written_bytes": written,
        "per_input_byte": written / events if events else None,
        "topics": {_short_name(dep, name): size for name, size in sizes.items()},
    }


def pace_command(
    opts: LiveOptions, step: Step, count: int, bootstrap: str, topic: str, summary: Path
) -> list[str]:
    t = opts.topology
    return [
        sys.executable, "-m", "bench.pace", "--bootstrap", bootstrap, "--topic", topic, "--summary", str(summary),
        "--rate", str(step.rate), "--count", str(count), "--seed", str(step.seed),
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


async def produce_step(
    opts: LiveOptions,
    dep: harness.BenchDeployment,
    step: Step,
    monitor: BacklogMonitor,
    abort_after_s: float | None = None,
) -> None:
    """Run bench/pace.py at the step's rate; with `abort_after_s`, stop it early (SIGTERM: it still reports what it
    sent) once the backlog exceeds `ABORT_BACKLOG_S` after that many seconds: the rung has failed either way."""
    pipeline = dep.pipeline
    assert pipeline is not None
    count = int(step.rate * step.seconds)
    summary = dep.tmp / f"{opts.label}-producer-{step.seed}.json"
    producer = ChildProcess(
        "producer",
        pace_command(opts, step, count, dep.bootstrap, dep.topic_events, summary),
        dict(os.environ),
        harness.LOGS / f"{opts.label}-producer.log",
    ).start()
    spawned = time.time()
    try:
        total = round(step.seconds)
        with tqdm(total=total, desc=f"{opts.label} @ {step.rate:,.0f}/s", unit="s", leave=False) as bar:
            while producer.alive():
                await asyncio.sleep(0.5)
                bar.update(min(total, int(time.time() - spawned)) - bar.n)
                if died := pipeline.dead():
                    raise RuntimeError(died)
                if abort_after_s is not None and step.aborted is None:
                    behind = monitor.backlog_s(step.rate, since=spawned + abort_after_s)
                    if behind > ABORT_BACKLOG_S:
                        step.aborted = f"stopped after {time.time() - spawned:.0f} s: backlog {behind:.1f} s"
                        producer.signal(signal.SIGTERM)
        if producer.returncode != 0:
            raise RuntimeError(f"producer exited with {producer.returncode}; see {producer.log_path}")
        step.produced = orjson.loads(summary.read_bytes())
    finally:
        producer.kill()


def step_figures(
    step: Step,
    warmup_s: float,
    rows: list[tuple[float, float]],
    alerts: list[tuple[float, float]],
    monitor: BacklogMonitor,
) -> dict:
    """A step's latencies (all, and produced after the warm-up) and its backlog series, from the run's samples."""
    start, end, judged = step.began_at, step.ended_at, step.began_at + warmup_s
    backlog = [
        (t - start, max(0, produced - stored) / step.rate)
        for t, produced, stored in monitor.samples
        if start <= t <= end
    ]
    after = [b for t, b in backlog if t >= warmup_s]
    return {
        "target_rate": step.rate,
        "began_at": start,
        "rate": step.produced["rate"],
        "produced": step.sent,
        "produce_s": step.produced["seconds"],
        "late_ticks": step.produced["late_ticks"],
        "aborted": step.aborted,
        "warmup_s": warmup_s,
        "row_latency": percentiles([lat for t, lat in rows if start <= t < end]),
        "row_latency_judged": percentiles([lat for t, lat in rows if judged <= t < end]),
        "alert_latency": percentiles([lat for t, lat in alerts if start <= t < end]),
        "alert_latency_judged": percentiles([lat for t, lat in alerts if judged <= t < end]),
        "backlog_series": backlog,
        "backlog_max_judged_s": max(after) if after else None,
    }


def rung_held(figures: dict) -> tuple[bool, str]:
    """A rate holds if the producer kept it, nothing stopped it, and p99 produce→PostgreSQL after the warm-up is
    within the target."""
    p99 = figures["row_latency_judged"].get("p99")
    if figures["aborted"]:
        return False, figures["aborted"]
    if figures["rate"] < 0.95 * figures["target_rate"]:
        return False, f"the producer reached only {figures['rate']:,.0f}/s (the machine, not the pipeline)"
    if p99 is None:
        return False, "no row latency sampled"
    if p99 > TARGET_ROW_P99_S:
        return False, f"p99 produce→PostgreSQL {p99 * 1000:,.0f} ms"
    return True, f"p99 produce→PostgreSQL {p99 * 1000:,.0f} ms"


async def counts_check(
    dep: harness.BenchDeployment,
    produced: int,
    drained: bool,
    alerts: AlertProbe,
    rows_seen: int,
    want_rows: int | None,
) -> dict:
    """Exact counts once drained (raw rows, both window sizes, alert rows, every probe row); mid-backlog only that
    no window is ahead of the raw rows (then `exact` is None: not verified to the end)."""
    conn = await dep.connect()
    try:
        # One snapshot: with the pipeline still writing, counts read one after another would disagree.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
            w5, w15 = await window_sums(conn)
            alert_rows = await conn.fetchval("SELECT count(*) FROM telemetry_alerts")
    finally:
        await conn.close()
    mismatches = []
    if not drained:
        # Mid-backlog, in any committed state, a batch's raw rows are in PostgreSQL before (or with) its
        # windows: the changes records put them first, and the sink writes each partition in order. So
        # neither window size may count more events than there are raw rows; whether every event arrives
        # exactly once is left unverified.
        if not (w5 <= raw and w15 <= raw <= produced):
            mismatches.append(f"raw {raw}, windows {w5}/{w15} disagree (produced {produced})")
        exact = False if mismatches else None
        mismatches.append(
            f"{produced - w5:,} of {produced:,} events still queued when the bench stopped waiting; "
            "windows never ahead of raw rows so far"
        )
    else:
        if not raw == w5 == w15 == produced:
            mismatches.append(f"raw {raw}, windows {w5}/{w15}, produced {produced}")
        if alert_rows != len(alerts.opened):
            mismatches.append(f"{alert_rows} alert rows, {len(alerts.opened)} opened on the topic")
        if want_rows is not None and rows_seen != want_rows:
            mismatches.append(f"probe saw {rows_seen} of {want_rows} rows")
        exact = not mismatches
    return {"exact": exact, "mismatches": mismatches, "raw_rows": raw}


async def processed_now(dep: harness.BenchDeployment) -> int:
    conn = await dep.connect()
    try:
        return min(await window_sums(conn))
    finally:
        await conn.close()


async def drain(
    dep: harness.BenchDeployment, produced: int, limit_s: float | None, desc: str
) -> tuple[bool, float]:
    """Wait until every produced event is counted in PostgreSQL: (drained, seconds waited). The wait is bounded by
    `limit_s`, and always by 120 s + 1 ms per event still to do (a pipeline draining slower than 1,000 events/s)."""
    began = time.monotonic()
    limit = 120 + (produced - await processed_now(dep)) / 1000
    try:
        await harness.wait_processed(dep, produced, timeout_s=min(limit, limit_s or limit), desc=desc)
    except TimeoutError:
        return False, time.monotonic() - began
    return True, time.monotonic() - began


async def wait_probe_rows(rows: RowProbe, want: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(rows.samples) < want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def alert_latencies(
    dep: harness.BenchDeployment, alerts: AlertProbe
) -> tuple[list[tuple[float, float]], list[float]]:
    """(produce time, produce → arrival at a consumer) of every alert opened, and produce → the worker publishing
    it (the alert record's own Kafka timestamp): where the alert time goes."""
    conn = await dep.connect()
    try:
        ingest = {
            str(r["event_id"]): r["ts_ingest"].timestamp()
            for r in await conn.fetch(
                "SELECT event_id, ts_ingest FROM telemetry_events WHERE event_id = ANY($1::uuid[])",
                [event_id for event_id, _, _ in alerts.opened.values()],
            )
        }
    finally:
        await conn.close()
    opened = [(e, arrived, published) for e, arrived, published in alerts.opened.values() if e in ingest]
    return (
        [(ingest[e], arrived - ingest[e]) for e, arrived, _ in opened],
        [published - ingest[e] for e, _, published in opened],
    )


async def run(stack: dict[str, str], opts: LiveOptions) -> dict:
    dep = await harness.BenchDeployment(stack, opts.label, opts.partitions).setup()
    result: dict = {"processes": harness.pipeline_description()}
    probes: list = []
    tasks: list[asyncio.Task] = []
    sampler: harness.Sampler | None = None
    try:
        pipeline = dep.new_pipeline()
        pipeline.start()
        result["ready_s"] = await pipeline.wait_ready()
        ids = [device for _, _, device in opts.topology.ids()]
        probe_indexes = {i * len(ids) // PROBE_DEVICES for i in range(min(PROBE_DEVICES, len(ids)))}
        rows = RowProbe(dep.dsn, [ids[i] for i in sorted(probe_indexes)], opts.poll_s)
        alerts = AlertProbe(dep.bootstrap, dep.topic_alerts)
        monitor = BacklogMonitor(dep.bootstrap, dep.topic_events, dep.dsn, opts.backlog_every_s)
        probes = [alerts, monitor, *([rows] if opts.poll_s > 0 else [])]
        tasks = [asyncio.create_task(p.run()) for p in probes]
        sampler = harness.Sampler(pipeline, opts.rss_every_s).start()

        # The main run: its figures carry the verdicts (backlog, p99 to PostgreSQL and to the alert).
        ledger = harness.CpuLedger(pipeline)
        profiler = Profiler(pipeline.pid, opts.profile).start() if opts.profile else None
        main = Step(opts.rate, opts.seconds, opts.seed)
        try:
            await produce_step(opts, dep, main, monitor)
        finally:
            if profiler is not None:
                profiler.stop()
        produced = main.sent
        processed_at_end = await processed_now(dep)
        drained, drain_s = await drain(dep, produced, opts.drain_limit_s, f"{opts.label} drain")
        want_rows = expected_probe_rows(produced, len(ids), probe_indexes) if opts.poll_s > 0 else None
        if drained and want_rows is not None:
            await wait_probe_rows(rows, want_rows)
        await asyncio.sleep(1.0)  # alerts of the last batches
        cpu = ledger.stop()
        check = await counts_check(dep, produced, drained, alerts, len(rows.samples), want_rows)
        if not drained and opts.drain_limit_s is None:
            # Only the soak may stop waiting (a long run's backlog); here not draining in time fails the phase,
            # with its figures kept.
            check["exact"] = False
            check["mismatches"].insert(0, f"the backlog did not drain within {drain_s:.0f} s")
        if opts.kafka_bytes:
            result["kafka_bytes"] = await kafka_output_bytes(dep)
            result["kafka_bytes"]["drained"] = drained  # else the worker has not written everything yet
        result["state"] = await state_sample(dep)
        alert_lat, _ = await alert_latencies(dep, alerts)
        figures = step_figures(main, opts.warmup_s, rows.samples, alert_lat, monitor)
        held, why = rung_held(figures)

        if opts.ladder:
            ladder: dict = {"rates": list(opts.ladder), "seconds": opts.ladder_seconds, "rungs": []}
            ladder["highest_held"] = opts.rate if held else None
            ladder["stopped"] = None if held else f"{opts.rate:,.0f}/s: {why}"
            for i, rate in enumerate(opts.ladder if held and drained else (), start=1):
                step = Step(rate, opts.ladder_seconds, opts.seed + 1000 * i)
                rung_ledger = harness.CpuLedger(pipeline)
                await produce_step(opts, dep, step, monitor, abort_after_s=opts.ladder_warmup_s)
                produced += step.sent
                if want_rows is not None:
                    want_rows += expected_probe_rows(step.sent, len(ids), probe_indexes)
                rung_drained, _ = await drain(dep, produced, opts.ladder_drain_limit_s, f"{opts.label} drain")
                if rung_drained and want_rows is not None:
                    await wait_probe_rows(rows, want_rows)
                rung_cpu = rung_ledger.stop()
                rung = step_figures(step, opts.ladder_warmup_s, rows.samples, [], monitor)
                rung_ok, rung_why = rung_held(rung)
                rung.update(
                    held=rung_ok,
                    why=rung_why,
                    drained=rung_drained,
                    cpu_us_per_event=rung_cpu["pipeline"] / max(1, step.sent) * 1e6,
                )
                ladder["rungs"].append(rung)
                if not rung_ok or not rung_drained:
                    ladder["stopped"] = f"{rate:,.0f}/s: {rung_why}" + (
                        "" if rung_drained else ", backlog not drained"
                    )
                    break
                ladder["highest_held"] = rate
            else:
                if held and drained:
                    ladder["stopped"] = "not stopped: every rate of the ladder held (more with --ladder)"
            if ladder["rungs"]:
                await asyncio.sleep(1.0)
                ladder["check"] = await counts_check(
                    dep, produced, rung_drained, alerts, len(rows.samples), want_rows
                )
                last = ladder["rungs"][-1]
                if last["held"] and not rung_drained:
                    # Its latency held, yet events never arrived: lost, or a stalled pipeline, not a slow one.
                    ladder["check"]["exact"] = False
                    ladder["check"]["mismatches"].insert(
                        0,
                        f"{last['target_rate']:,.0f}/s held its p99 but did not drain within "
                        f"{opts.ladder_drain_limit_s:.0f} s",
                    )
                alert_lat, _ = await alert_latencies(dep, alerts)
                for rung in ladder["rungs"]:
                    start, end = rung["began_at"] + opts.ladder_warmup_s, rung["began_at"] + rung["produce_s"]
                    rung["alert_latency_judged"] = percentiles(
                        [lat for t, lat in alert_lat if start <= t < end]
                    )
            result["ladder"] = ladder

        for p in probes:
            p.stop()
        await asyncio.gather(*tasks)
        tasks = []
        samples = await sampler.stop()
        alert_lat, alert_published = await alert_latencies(dep, alerts)
        result.update(
            figures,
            held=held,
            held_why=why,
            produced=main.sent,
            drain_after_produce_s=drain_s,
            backlog_at_end=main.sent - processed_at_end,
            processed_rate=processed_at_end / main.produced["seconds"],
            alert_publish_latency=percentiles(alert_published),
            row_series=sorted(rows.samples),
            alert_series=sorted(alert_lat),
            poll_s=opts.poll_s,
            polls=rows.polls,
            probe_errors=rows.errors,
            backlog_errors=monitor.errors,
            devices=len(ids),
            probe_devices=len(probe_indexes),
            alerts_opened=len(alerts.opened),
            alerts_resolved=alerts.resolved,
            cpu=cpu,
            worker_cpu_share=cpu["pipeline"] / (main.produced["seconds"] + drain_s),
            cpu_us_per_event=cpu["pipeline"] / max(1, main.sent) * 1e6,
            # Seconds from the start of production: the verdicts judge the producing span after a warm-up.
            rss=[(s.t - main.began_at, s.rss_bytes) for s in samples],
            peak_rss_bytes=pipeline.peak_rss_bytes(),
            check=check,
            drained=drained,
        )
    finally:
        if sampler is not None:
            await sampler.stop()
        for p in probes:
            p.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dep.close(keep=opts.keep)
    return result
