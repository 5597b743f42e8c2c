"""`make run` (devstack run): worker, API and simulator on the running stack serve live data, and one
Ctrl-C stops every process it started and leaves the stack it found running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from telemetrypulse import devstack
from tests.support import OUTPUT, ROOT, free_port, wait_for

pytestmark = pytest.mark.integration

SIMULATED_DEVICES = 3 * 5 * 3  # the simulator's default topology: sites × zones × devices


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_make_run_serves_simulated_devices_and_ctrl_c_stops_everything(pipeline):
    port = free_port()
    log_path = OUTPUT / "logs" / f"{pipeline.app_id}-make-run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stack = devstack.stack()
    stack_pids = {stack.kafka_pid(), stack.postgres_pid()}
    # With DATABASE_URL set (this test's own database), `up` records it in .devstack/env as a user's
    # external database would be; the shared stack's files are put back afterwards.
    saved = {path: path.read_bytes() for path in (stack.env_file, stack.state_file)}
    with log_path.open("wb") as log:
        # Its own session, as a terminal's foreground job; the signal below is the terminal's Ctrl-C.
        run = subprocess.Popen(
            [sys.executable, "-m", "telemetrypulse.devstack", "run"],
            cwd=ROOT,
            env=pipeline.env(PORT=str(port)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: set[int] = set()
    try:

        async def devices_listed() -> int:
            if run.poll() is not None:
                raise RuntimeError(f"make run exited:\n{log_path.read_text()[-4000:]}")
            started.update(p.pid for p in psutil.Process(run.pid).children(recursive=True))
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(f"http://127.0.0.1:{port}/devices?limit=1000")
            except httpx.HTTPError:
                return 0
            found = len(response.json()["items"]) if response.status_code == 200 else 0
            return found if found == SIMULATED_DEVICES else 0

        await wait_for(
            devices_listed, timeout_s=150, interval_s=2, what="GET /devices to list every simulated device"
        )
        assert len(started) >= 3  # worker, API, simulator
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(90) == 0, log_path.read_text()[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for path, content in saved.items():
            path.write_bytes(content)
    left = [pid for pid in started if _running(pid)]
    for pid in left:  # never leave them behind, but fail
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"still running after Ctrl-C: {left}"
    assert {stack.kafka_pid(), stack.postgres_pid()} == stack_pids  # the stack it found stays up
