"""Children of a test or a benchmark — the pipeline's own processes, the API, a producer — each in its own session
(a terminal's Ctrl-C or a test's SIGKILL reaches it alone), writing to its own log file with a marker per start,
waited ready by what it prints or answers, and stopped by its pid: SIGTERM, then SIGKILL past a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from devkit.paths import ROOT

ReadyCheck = Callable[["ChildProcess"], bool]


def console_script(name: str) -> str:
    """A console script of the running virtualenv (`faust`, `telemetrypulse`)."""
    return str(Path(sys.executable).with_name(name))


def worker_command() -> list[str]:
    return [console_script("faust"), "-A", "telemetrypulse.app", "worker", "-l", "info"]


def telemetrypulse_command(*args: str) -> list[str]:
    return [console_script("telemetrypulse"), *args]


def child_env(drop: tuple[str, ...] = (), **values: str) -> dict[str, str]:
    """This process's environment without the variables starting with `drop`, plus `values`; output unbuffered,
    so that a log shows what happened up to a SIGKILL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)} if drop else dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", **values)
    return env


def log_says(text: str) -> ReadyCheck:
    """Ready once the current start's log holds `text`."""
    return lambda child: text in child.current_log()


def http_ok(path: str) -> ReadyCheck:
    """Ready once GET `path` answers 200."""

    def check(child: ChildProcess) -> bool:
        try:
            return httpx.get(f"{child.url}{path}", timeout=8).status_code == 200
        except httpx.HTTPError:
            return False

    return check


# What the runtime's processes say once they work.
WORKER_READY = log_says("Ready")  # Faust: recovery done, agents started
SINK_READY = log_says("sink started")
NOTIFIER_READY = log_says("notifier ready")


class ChildProcess:
    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        ready: ReadyCheck | None = None,
        url: str | None = None,
        fresh_log: bool = False,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready_check = ready
        self.url = url  # where it serves HTTP, if it does
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = 0.0  # time.monotonic() of the latest start
        if fresh_log:
            log_path.unlink(missing_ok=True)

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Wait for the exit (SIGKILL past `timeout`); the exit code."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to flush or commit."""
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            self.wait(timeout)
        return self.returncode

    def log_text(self, start: int | None = None) -> str:
        """The whole log, or only what the given start (0, 1, …) wrote."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text if start is None else text.split(f"===== start {start} =====")[-1]

    def current_log(self) -> str:
        """What the latest start wrote."""
        return self.log_text(self.starts - 1)

    def is_ready(self) -> bool:
        """Whether it says it is ready; raises, with the log's tail, if it exited."""
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.returncode}; {self.log_path} ends with:\n{self.current_log()[-4000:]}"
            )
        return self.ready_check is None or self.ready_check(self)

    async def wait_ready(self, timeout_s: float = 90, interval_s: float = 0.2) -> float:
        """Seconds from the latest start until ready. The check runs on a thread: an HTTP probe must not stall the
        caller's loop (a fault test producing and sampling meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(self.is_ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")
            await asyncio.sleep(interval_s)
        return time.monotonic() - self.started_at

    def wait_ready_blocking(self, timeout_s: float = 60, interval_s: float = 0.2) -> float:
        """`wait_ready` for plain code (a synchronous fixture)."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")
            time.sleep(interval_s)
        return time.monotonic() - self.started_at


def stop_together(processes: list[ChildProcess], timeout: float = 30) -> None:
    """SIGTERM to all at once, then wait for each (SIGKILL past `timeout`): they shut down in parallel."""
    for process in processes:
        process.signal(signal.SIGTERM)
    for process in processes:
        if process.alive():
            process.wait(timeout)


def api_process(
    env: dict[str, str], log_path: Path, port: int, *, ready_path: str = "/health/ready"
) -> ChildProcess:
    """`telemetrypulse api` on `port`, ready once `ready_path` answers 200."""
    return ChildProcess(
        "api",
        telemetrypulse_command("api", "--port", str(port)),
        dict(env, PORT=str(port)),
        log_path,
        ready=http_ok(ready_path),
        url=f"http://127.0.0.1:{port}",
    )
