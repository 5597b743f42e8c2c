"""The benchmark's edge to the local stack: isolated deployments (own APP_ID, topics, database, state folder),
the pipeline's processes as real children (the `faust … worker`, and `telemetrypulse sink` where the installed engine
has its sink as a process of its own), and the resource meters read from /proc.

Adapted from tests/support.py (bench must not import tests). Every process started here is stopped here, by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm

from bench import kafka_sizes

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".devstack" / "env"
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
VENV_BIN = Path(sys.executable).parent


def stack_env() -> dict[str, str]:
    """KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL: the environment first, then `.devstack/env`."""
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                name, _, value = line.partition("=")
                values[name.strip()] = value.strip()
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        if os.environ.get(name):
            values[name] = os.environ[name]
    missing = [n for n in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL") if n not in values]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} unknown: run `make up` first (or `make bench`)")
    return values


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, label: str) -> tuple[str, str]:
    name = f"tp_bench_{label}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
        # Creation is asynchronous: wait for a leader on every partition before producing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics(names)
            if all(
                t.get("error_code") == 0
                and len(t.get("partitions") or ()) == partitions
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"topics {names} not ready after 30 s")
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    except Exception:
        pass  # best effort: names are unique per run anyway
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described for p in t.get("partitions") or ())


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    partitions = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_latest_per_key(bootstrap: str, topic: str) -> tuple[dict[bytes, bytes], int, int]:
    """The last value per key of a (changelog) topic, with the number of records and bytes read."""
    ends = await end_offsets(bootstrap, topic)
    latest: dict[bytes, bytes] = {}
    records = size = 0
    tps = [TopicPartition(topic, p) for p in ends if ends[p] > 0]
    if not tps:
        return latest, 0, 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
            for tp, items in batch.items():
                for r in items:
                    records += 1
                    size += len(r.value or b"")
                    if r.value is None:
                        latest.pop(r.key, None)
                    else:
                        latest[r.key] = r.value
                if items and items[-1].offset + 1 >= ends[tp.partition]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return latest, records, size


async def tail_values(bootstrap: str, topic: str, per_partition: int) -> dict[bytes, bytes]:
    """The last value per key among the last `per_partition` records of each partition."""
    ends = await end_offsets(bootstrap, topic)
    tps = {TopicPartition(topic, p): end for p, end in ends.items() if end > 0}
    latest: dict[bytes, bytes] = {}
    if not tps:
        return latest
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        consumer.assign(list(tps))
        for tp, end in tps.items():
            consumer.seek(tp, max(0, end - per_partition))
        remaining = set(tps)
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, items in batch.items():
                for r in items:
                    if r.value is not None:
                        latest[r.key] = r.value
                if items and items[-1].offset + 1 >= tps[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return latest


# ---------------------------------------------------------------------------------------------------------------
# Processes and their resources.


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A `/proc/<pid>/status` field in kB (VmHWM is the peak RSS the kernel recorded)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (PostgreSQL is a postmaster and one backend per connection), the children
    already reaped included: a backend whose connection closed mid-span must not take its CPU away with it."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        t = root.cpu_times()
        total += t.children_user + t.children_system
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def stack_pids() -> dict[str, int]:
    """Pids of the local Kafka and PostgreSQL, only to read their CPU time: the processes listening on the
    bootstrap and database ports when those are on this host (works for a stack started by any checkout)."""
    stack = stack_env()
    ports = {"kafka": int(stack["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)[1])}
    db = urlsplit(stack["DATABASE_URL"])
    if db.hostname in ("127.0.0.1", "localhost", "::1"):
        ports["postgres"] = db.port or 5432
    pids: dict[str, int] = {}
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            for name, port in ports.items():
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                    pids.setdefault(name, conn.pid)
    return pids


class CpuLedger:
    """CPU seconds spent by the pipeline's processes, Kafka, PostgreSQL, this process and the whole machine over
    a span. `pipeline` is the sum over the pipeline's processes (worker, and the sink when it is a process)."""

    def __init__(self, pipeline: Pipeline | None = None) -> None:
        self.pipeline = pipeline
        self.stack = stack_pids()
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        times = psutil.cpu_times()
        me = psutil.Process().cpu_times()
        out = {
            "machine": times.user + times.system + times.nice + getattr(times, "softirq", 0) + times.irq,
            "bench": me.user + me.system,
            # Children of the bench once reaped (the simulator, the baselines); the pipeline is reaped later.
            "bench_children": me.children_user + me.children_system,
        }
        if self.pipeline is not None:
            for service in self.pipeline.services:
                out[service.name] = tree_cpu_seconds(service.pid)
        if "kafka" in self.stack:
            out["kafka"] = cpu_seconds(self.stack["kafka"])
        if "postgres" in self.stack:
            out["postgres"] = tree_cpu_seconds(self.stack["postgres"])
        return out

    def stop(self) -> dict[str, float]:
        end = self._read()
        spent = {k: end[k] - self.start.get(k, 0.0) for k in end}
        known = sum(v for k, v in spent.items() if k != "machine")
        spent["other"] = max(0.0, spent["machine"] - known)
        if self.pipeline is not None:
            spent["pipeline"] = sum(spent.get(s.name, 0.0) for s in self.pipeline.services)
        return spent


# The new engine's PostgreSQL sink is a process of its own, `telemetrypulse sink`; today's worker holds the sink.
# BENCH_SINK_COMMAND replaces the command (a sink started another way, or a stand-in to test the bench itself).
SINK_COMMAND = shlex.split(os.environ.get("BENCH_SINK_COMMAND", "")) or [
    str(VENV_BIN / "telemetrypulse"),
    "sink",
]


@functools.cache
def sink_process_available() -> bool:
    """Whether the installed `telemetrypulse` has a `sink` sub-command (asked once per bench run).

    `telemetrypulse sink --help` against unreachable services: today's CLI hands the unknown command to Faust's,
    which answers "No such command"; anything else — help printed, a sink that ignores `--help` and fails on the
    unreachable services, or one still waiting for them after 20 s — means the command exists (a broken sink then
    fails the run loudly instead of being silently left out). BENCH_SINK_PROCESS=yes|no overrides the detection.
    """
    forced = os.environ.get("BENCH_SINK_PROCESS", "auto").lower()
    if forced in ("yes", "no"):
        return forced == "yes"
    with tempfile.TemporaryDirectory(prefix="tp-bench-detect-") as tmp:
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
            DATABASE_URL="postgresql://nobody:nobody@127.0.0.1:9/nothing",
            APP_ID="tp-bench-detect",
            DATA_DIR=tmp,
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        )
        child = subprocess.Popen(
            [*SINK_COMMAND, "--help"],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = child.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
            return True
    return b"No such command" not in out


def pipeline_description() -> str:
    return (
        "worker (`faust -A telemetrypulse.app worker`) + sink (`telemetrypulse sink`), two processes"
        if sink_process_available()
        else "worker (`faust -A telemetrypulse.app worker`), one process with the PostgreSQL sink inside"
    )


class ServiceProcess:
    """One long-running child of the pipeline with its own log file; ready once its log shows `ready_when`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        ready_when: Callable[[str], bool],
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready_when = ready_when
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def current_log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text.split(f"===== start {self.starts - 1} =====")[-1]

    def ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited; log {self.log_path}:\n{self.current_log()[-3000:]}")
        return self.ready_when(self.current_log())

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> None:
        """Wait for the exit; SIGKILL past the timeout."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(10)


def _sink_positioned(log: str) -> bool:
    # The sink's interface: a line with "sink" and "start" once it has positioned its partitions.
    return any("sink" in line and "start" in line for line in log.lower().splitlines())


class Pipeline:
    """The pipeline's processes, started, stopped and metered together: the Faust worker, and the PostgreSQL
    sink (`telemetrypulse sink`) when the installed engine has it as a process of its own.

    Ready = the worker's `Ready` and, when there is one, the sink's start line. `kill()`/`stop()` end both, so a
    restart phase restarts the whole pipeline as a deploy or a host crash would.
    """

    def __init__(self, env: dict[str, str], label: str) -> None:
        faust = [str(VENV_BIN / "faust"), "-A", "telemetrypulse.app", "worker", "-l", "info"]
        self.worker = ServiceProcess(
            "worker", faust, env, LOGS / f"{label}-worker.log", lambda log: "Ready" in log
        )
        self.sink = (
            ServiceProcess("sink", SINK_COMMAND, env, LOGS / f"{label}-sink.log", _sink_positioned)
            if sink_process_available()
            else None
        )
        for service in self.services:
            service.log_path.unlink(missing_ok=True)

    @property
    def services(self) -> list[ServiceProcess]:
        return [self.worker, *([self.sink] if self.sink else [])]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.services]

    @property
    def pid(self) -> int:
        """The worker's pid (what the profiler samples)."""
        return self.worker.pid

    @property
    def started_at(self) -> float:
        return self.worker.started_at

    @property
    def log_path(self) -> Path:
        return self.worker.log_path

    def start(self) -> None:
        for service in self.services:
            service.start()

    def alive(self) -> bool:
        return all(s.alive() for s in self.services)

    def dead(self) -> str | None:
        """Which process died, with its log, or None."""
        for s in self.services:
            if not s.alive():
                return f"{s.name} died; see {s.log_path}"
        return None

    def ready(self) -> bool:
        return all([s.ready() for s in self.services])

    async def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds from spawn to every process ready (the worker's recovery done, the sink positioned)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                logs = ", ".join(str(s.log_path) for s in self.services)
                raise TimeoutError(f"pipeline not ready after {timeout_s:.0f} s; logs {logs}")
            await asyncio.sleep(0.05)
        return time.monotonic() - self.started_at

    def kill(self) -> None:
        for s in self.services:
            s.signal(signal.SIGKILL)
        for s in self.services:
            s.wait(10)

    def stop(self, timeout: float = 60) -> None:
        for s in self.services:
            s.signal(signal.SIGTERM)
        for s in self.services:
            if s.alive():
                s.wait(timeout)

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def peak_rss_bytes(self) -> int:
        """Sum of the processes' peaks (VmHWM): an upper bound of the pipeline's peak."""
        return sum((proc_status_kb(pid, "VmHWM") or 0) * 1024 for pid in self.pids)


@dataclass
class Sample:
    t: float  # wall clock (time.time()), as Kafka record timestamps and the producer's summary
    cpu_s: float
    rss_bytes: int


@dataclass
class Sampler:
    """Samples the summed CPU seconds and RSS of the pipeline's processes at a fixed interval, in the background."""

    pipeline: Pipeline
    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _task: asyncio.Task | None = None

    def start(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        procs = [psutil.Process(pid) for pid in self.pipeline.pids]
        while True:
            cpu = 0.0
            rss = 0
            try:
                for proc in procs:
                    with proc.oneshot():
                        t = proc.cpu_times()
                        cpu += t.user + t.system
                        rss += proc.memory_info().rss
            except psutil.Error:
                return
            self.samples.append(Sample(time.time(), cpu, rss))
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> list[Sample]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.samples


# ---------------------------------------------------------------------------------------------------------------
# A deployment.


class Deployment:
    """One isolated pipeline: its own APP_ID, topics, database and worker state folder; `close()` removes all."""

    def __init__(
        self,
        stack: dict[str, str],
        label: str,
        partitions: int,
        events_topic: str | None = None,
        **worker_env: str,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.stack = stack
        self.label = label
        self.bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
        self.partitions = partitions
        self.app_id = f"tp-bench-{label}-{tag}"
        # A second deployment may read the events topic of another (same data): then it is not ours to delete.
        self.shared_events = events_topic is not None
        self.topic_events = events_topic or f"bench-{label}-{tag}.events"
        self.topic_alerts = f"bench-{label}-{tag}.alerts"
        self.topic_dlq = f"bench-{label}-{tag}.dlq"
        self.worker_env = worker_env
        self.db_name = ""
        self.dsn = ""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"tp-bench-{label}-"))
        self.data_dir = self.tmp / "worker"
        self.worker: Pipeline | None = None

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-partition-state-changelog"

    async def worker_output_topics(self) -> list[str]:
        """What the worker writes to Kafka: its changes topic, its tables' changelogs, alerts and dead letters
        (internal topics are found by name, so the engine's own set of tables needs no list here)."""
        internal = await kafka_sizes.topics_with_prefix(self.bootstrap, f"{self.app_id}-")
        changes = [n for n in internal if n == f"{self.app_id}-changes" or n.endswith("-changelog")]
        return [*changes, self.topic_alerts, self.topic_dlq]

    async def setup(self) -> Deployment:
        self.db_name, self.dsn = await create_database(self.stack["DATABASE_URL"], self.label)
        mine = [self.topic_alerts, self.topic_dlq] + ([] if self.shared_events else [self.topic_events])
        await create_topics(self.bootstrap, mine, self.partitions)
        return self

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # WORKER_BATCH_* pass through: they are the tunables one may want to try from the shell.
            if not k.startswith(("KAFKA_", "TOPIC_", "APP_ID", "DATA_DIR", "DATABASE_URL", "WINDOW_"))
        }
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            DATABASE_URL=self.dsn,
            APP_ID=self.app_id,
            TOPIC_EVENTS=self.topic_events,
            TOPIC_ALERTS=self.topic_alerts,
            TOPIC_DLQ=self.topic_dlq,
            TOPIC_PARTITIONS=str(self.partitions),
            DATA_DIR=str(self.data_dir),
            WORKER_WEB_PORT="0",
            PYTHONUNBUFFERED="1",
            # The worker runs the code of the tree the bench lives in (a clean worktree, say), not whatever an
            # editable install points at.
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        )
        env.update(self.worker_env)
        return env

    def new_worker(self) -> Pipeline:
        """The pipeline's processes for this deployment (not started)."""
        self.worker = Pipeline(self.env(), self.label)
        return self.worker

    def wipe_state(self) -> None:
        """Worker state folder gone, as on a new host: the state comes back from the changelog."""
        shutil.rmtree(self.data_dir, ignore_errors=True)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def close(self, keep: bool = False) -> None:
        if self.worker is not None:
            self.worker.stop()
        if keep:
            return
        # Every internal topic by its APP_ID prefix: the engine's set of tables and topics may change.
        internal = await kafka_sizes.topics_with_prefix(self.bootstrap, f"{self.app_id}-")
        own = [] if self.shared_events else [self.topic_events]
        await delete_topics(self.bootstrap, [*own, self.topic_alerts, self.topic_dlq, *internal])
        if self.db_name:
            await drop_database(self.stack["DATABASE_URL"], self.db_name)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def window_sums(conn: asyncpg.Connection) -> tuple[int, int]:
    """Events counted in the 5 m and 15 m device windows (each accepted event is in exactly one of each)."""
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_5m) AS w5,"
        " (SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_15m) AS w15"
    )
    return int(row["w5"]), int(row["w15"])


async def schema_ready(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('telemetry_device_agg_15m') IS NOT NULL"))


def run_module(module: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m <module> args…` as a child whose last stdout line is its JSON result; stderr is shared."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )


async def wait_module(child: subprocess.Popen, timeout_s: float) -> dict:
    import json

    loop = asyncio.get_running_loop()
    try:
        out, _ = await loop.run_in_executor(None, lambda: child.communicate(timeout=timeout_s))
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        raise
    if child.returncode != 0:
        raise RuntimeError(f"{child.args[2]} exited with {child.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


# How often wait_processed asks PostgreSQL: fine enough for a pass of a few seconds (a fast engine on 100k events).
POLL_S = 0.1


async def wait_processed(
    dep: Deployment, total: int, timeout_s: float, desc: str, progress: list | None = None
) -> float:
    """Poll until every event is counted in both window sizes; returns the monotonic time it was seen."""
    conn: asyncpg.Connection | None = None
    began = time.monotonic()
    w5 = w15 = 0
    try:
        with tqdm(total=total, desc=desc, unit="ev", unit_scale=True, leave=False, mininterval=0.5) as bar:
            while True:
                now = time.monotonic()
                try:
                    conn = conn or await dep.connect()
                    w5, w15 = await window_sums(conn) if await schema_ready(conn) else (0, 0)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    # A lost connection is the probe's problem, not the pipeline's: ask again.
                    conn = None
                else:
                    if progress is not None:
                        progress.append((now, min(w5, w15)))
                    bar.update(min(w5, w15) - bar.n)
                    if w5 == total and w15 == total:
                        return now
                    if w5 > total or w15 > total:
                        raise RuntimeError(f"windows count more events than produced: {w5}, {w15} > {total}")
                if now - began > timeout_s:
                    raise TimeoutError(f"{desc}: windows hold {w5}/{w15} of {total} after {timeout_s:.0f} s")
                if dep.worker is not None and (died := dep.worker.dead()):
                    raise RuntimeError(died)
                await asyncio.sleep(POLL_S)
    finally:
        if conn is not None:
            await conn.close()
