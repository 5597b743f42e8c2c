"""The benchmark's edge to the local stack: isolated deployments (own APP_ID, topics, database, state folder),
the worker as a real `faust … worker` child process, and the resource meters read from /proc.

Adapted from tests/support.py (bench must not import tests). Every process started here is stopped here, by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm

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


def topic_disk_bytes(topic: str) -> int | None:
    """Bytes of a topic's log segments on the local broker's disk (devstack only), compressed as stored."""
    props = ROOT / ".devstack" / "kafka" / "server.properties"
    try:
        dirs = [
            line.split("=", 1)[1].strip()
            for line in props.read_text().splitlines()
            if line.startswith("log.dirs=")
        ]
    except OSError:
        return None
    total = 0
    for folder in dirs:
        for part in Path(folder).glob(f"{topic}-*"):
            if part.name.rsplit("-", 1)[0] == topic:
                total += sum(f.stat().st_size for f in part.glob("*.log"))
    return total


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
    """CPU of a process and its children (PostgreSQL is a postmaster and one backend per connection)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def stack_pids() -> dict[str, int]:
    """Pids of the local Kafka and PostgreSQL (from devstack's records), only to read their CPU time."""
    from telemetrypulse.devstack import stack

    s = stack()
    pids = {"kafka": s.kafka_pid(), "postgres": s.postgres_pid()}
    return {name: pid for name, pid in pids.items() if pid and psutil.pid_exists(pid)}


class CpuLedger:
    """CPU seconds spent by the worker, Kafka, PostgreSQL, this process and the whole machine over a span."""

    def __init__(self, worker_pid: int | None = None) -> None:
        self.worker_pid = worker_pid
        self.stack = stack_pids()
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        times = psutil.cpu_times()
        me = psutil.Process().cpu_times()
        out = {
            "machine": times.user + times.system + times.nice + getattr(times, "softirq", 0) + times.irq,
            "bench": me.user + me.system,
            # Children of the bench once reaped (the simulator, the baselines); the worker is reaped later.
            "bench_children": me.children_user + me.children_system,
        }
        if self.worker_pid:
            out["worker"] = cpu_seconds(self.worker_pid)
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
        return spent


class WorkerProcess:
    """`faust -A telemetrypulse.app worker` as a child process with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
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
                [str(VENV_BIN / "faust"), "-A", "telemetrypulse.app", "worker", "-l", "info"],
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
            raise RuntimeError(f"worker exited; log {self.log_path}:\n{self.current_log()[-3000:]}")
        return "Ready" in self.current_log()

    async def wait_ready(self, timeout_s: float = 180) -> float:
        """Seconds from spawn to Faust's `Ready` (recovery done, agents started)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout_s:.0f} s; log {self.log_path}")
            await asyncio.sleep(0.05)
        return time.monotonic() - self.started_at

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 60) -> None:
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    cpu_s: float
    rss_bytes: int


@dataclass
class Sampler:
    """Samples one process's CPU seconds and RSS at a fixed interval, in the background."""

    pid: int
    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _task: asyncio.Task | None = None

    def start(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        proc = psutil.Process(self.pid)
        began = time.monotonic()
        while True:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss = proc.memory_info().rss
            except psutil.Error:
                return
            self.samples.append(Sample(time.monotonic() - began, t.user + t.system, rss))
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
        self.worker: WorkerProcess | None = None

    @property
    def topics(self) -> list[str]:
        return [
            *([] if self.shared_events else [self.topic_events]),
            self.topic_alerts,
            self.topic_dlq,
            f"{self.app_id}-changes",
            f"{self.app_id}-device-state-changelog",
            f"{self.app_id}-partition-fence-changelog",
            f"{self.app_id}-__assignor-__leader",
        ]

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-device-state-changelog"

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

    def new_worker(self) -> WorkerProcess:
        self.worker = WorkerProcess(self.env(), LOGS / f"{self.label}-worker.log")
        if self.worker.log_path.exists():
            self.worker.log_path.unlink()
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
        await delete_topics(self.bootstrap, self.topics)
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
                if dep.worker is not None and not dep.worker.alive():
                    raise RuntimeError(f"worker died; see {dep.worker.log_path}")
                await asyncio.sleep(0.25)
    finally:
        if conn is not None:
            await conn.close()
