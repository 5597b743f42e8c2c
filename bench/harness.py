"""The benchmark's edge to the local stack, on the dev kit: its deployments (`BenchDeployment`: the kit's `Deployment`
with the pipeline's processes metered as one), the resource meters read from /proc, baselines run as child modules,
and the wait until a pass's events are all counted in PostgreSQL. Every process started here is stopped here, by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psutil
from tqdm import tqdm

from devkit.databases import schema_ready, window_sums
from devkit.deployment import Deployment
from devkit.errors import StackError
from devkit.local_stack import stack_env
from devkit.paths import ROOT
from devkit.processes import ChildProcess, stop_together, telemetrypulse_command

RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"


def bench_stack() -> dict[str, str]:
    """KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL: the environment first, then `.devstack/env`."""
    try:
        return stack_env()
    except StackError as e:
        raise SystemExit(f"bench: {e} (or `make bench`)") from None


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
    stack = bench_stack()
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
            for role, service in self.pipeline.roles.items():
                out[role] = tree_cpu_seconds(service.pid)
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
            spent["pipeline"] = sum(spent.get(role, 0.0) for role in self.pipeline.roles)
        return spent


# The engine's PostgreSQL sink is a process of its own, `telemetrypulse sink`; an engine before it held the sink in
# the worker. BENCH_SINK_COMMAND replaces the command (a sink started another way, or a stand-in to test the bench).
SINK_COMMAND = shlex.split(os.environ.get("BENCH_SINK_COMMAND", "")) or telemetrypulse_command("sink")


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


class Pipeline:
    """The pipeline's processes, started, stopped and metered together: the Faust worker, and the PostgreSQL
    sink (`telemetrypulse sink`) when the installed engine has it as a process of its own.

    Ready = the worker's `Ready` and, when there is one, the sink's start line. `kill()`/`stop()` end both, so a
    restart phase restarts the whole pipeline as a deploy or a host crash would.
    """

    def __init__(self, worker: ChildProcess, sink: ChildProcess | None) -> None:
        self.worker = worker
        self.sink = sink

    @property
    def roles(self) -> dict[str, ChildProcess]:
        """The processes by role, `worker` and `sink`: the keys of the CPU figures."""
        return {"worker": self.worker, **({"sink": self.sink} if self.sink else {})}

    @property
    def services(self) -> list[ChildProcess]:
        return list(self.roles.values())

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
        return all([s.is_ready() for s in self.services])

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
        stop_together(self.services, timeout)

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


class BenchDeployment(Deployment):
    """One isolated pipeline of a phase (the kit's `Deployment`: own APP_ID, topics, database, state folder; logs in
    bench/results/logs, one file per label and process, rewritten by each run); `close()` removes all."""

    def __init__(
        self,
        stack: dict[str, str],
        label: str,
        partitions: int,
        events_topic: str | None = None,
        **worker_env: str,
    ) -> None:
        super().__init__(
            stack,
            logs=LOGS,
            kind="bench",
            label=label,
            partitions=partitions,
            events_topic=events_topic,
            fresh_logs=True,
            **worker_env,
        )
        self.pipeline: Pipeline | None = None

    def new_pipeline(self) -> Pipeline:
        """The pipeline's processes for this deployment (not started)."""
        worker = self.add_worker(with_sink=False)
        sink = self.add_sink(command=SINK_COMMAND) if sink_process_available() else None
        self.pipeline = Pipeline(worker, sink)
        return self.pipeline


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
    dep: BenchDeployment, total: int, timeout_s: float, desc: str, progress: list | None = None
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
                if dep.pipeline is not None and (died := dep.pipeline.dead()):
                    raise RuntimeError(died)
                await asyncio.sleep(POLL_S)
    finally:
        if conn is not None:
            await conn.close()
