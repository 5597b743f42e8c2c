"""`make run` (`python -m devkit run`): worker, API and simulator on the running stack serve live data, and one
Ctrl-C stops every process it started and leaves the stack it found running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from devkit import kafka_io
from devkit.local_stack import LocalStack
from devkit.paths import ROOT, TEST_OUTPUT
from devkit.ports import free_port
from devkit.waiting import wait_for

pytestmark = pytest.mark.integration

SIMULATED_DEVICES = 3 * 5 * 3  # the simulator's default topology: sites × zones × devices


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_make_run_serves_simulated_devices_and_ctrl_c_stops_everything(pipeline):
    port = free_port()
    log_path = TEST_OUTPUT / "logs" / f"{pipeline.app_id}-make-run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stack = LocalStack()
    stack_pids = {stack.kafka.pid(), stack.postgres.pid()}
    # With DATABASE_URL set (this test's own database), `up` records it in .devstack/env as a user's
    # external database would be; the shared stack's files are put back afterwards.
    saved = {path: path.read_bytes() for path in (stack.env_file, stack.state_file)}
    with log_path.open("wb") as log:
        # Its own session, as a terminal's foreground job; the signal below is the terminal's Ctrl-C.
        run = subprocess.Popen(
            [sys.executable, "-m", "devkit", "run"],
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
    assert {stack.kafka.pid(), stack.postgres.pid()} == stack_pids  # the stack it found stays up


# `run_system` on a stack that is already there (nothing started or stopped by it): the shared test
# stack must never be brought up or down by a test, and this is all `make run` adds on top of `up`.
STUB_STACK = """
import sys
from pathlib import Path
from devkit.local_stack import LocalStack
from devkit.supervisor import run_system

class RunningStack(LocalStack):
    def up(self):
        return {"kafka": False, "postgres": False}

    def stop_started(self, started):
        pass

sys.exit(run_system(RunningStack(Path(sys.argv[1]))))
"""


async def test_make_run_supervises_an_idle_notifier_that_takes_a_webhook_without_restart(pipeline, tmp_path):
    import asyncio
    import uuid

    import orjson

    from tests.webhook_receiver import WebhookReceiver

    port = free_port()
    log_path = TEST_OUTPUT / "logs" / f"{pipeline.app_id}-make-run-notifier.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = pipeline.env(PORT=str(port), EVENTS_PER_SECOND="2", WEBHOOK_POLL_S="1")
    for name in ("API_KEYS", "WEBHOOK_URLS", "WEBHOOK_SECRET"):
        env.pop(name, None)
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-c", STUB_STACK, str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: set[int] = set()
    receiver = None
    try:

        def output() -> str:
            if run.poll() is not None:
                raise RuntimeError(f"make run exited:\n{log_path.read_text()[-4000:]}")
            started.update(p.pid for p in psutil.Process(run.pid).children(recursive=True))
            return log_path.read_text(errors="replace")

        idle = "no webhook receivers configured"
        await wait_for(lambda: idle in output() and "[api]" in output(), 120, what="the notifier idling")
        await wait_for(lambda: _api_up(port), 60, what="the API")
        assert "[notifier]" in output() and "notifier started" in output()
        key = (tmp_path / ".devstack" / "operator-key").read_text().strip()
        secret = (tmp_path / ".devstack" / "webhook-secret").read_text().strip()
        assert key not in output() and secret not in output()

        # A webhook added over the API reaches the running notifier; an alert then reaches the receiver, signed.
        receiver = await WebhookReceiver(secret.encode(), "make-run").start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            put = await http.put("/webhooks/local", json={"url": receiver.url}, headers={"X-API-Key": key})
            assert put.status_code == 201, put.text
            assert (await http.get("/sites")).status_code == 200  # reads stay open: no key has `read`
        await wait_for(
            lambda: "receiver local added" in output(), 30, what="the notifier to pick the webhook up"
        )
        alert_id = str(uuid.uuid4())
        body = orjson.dumps({"alert_id": alert_id, "status": "open", "site_id": "site-01", "device_id": "d"})
        await kafka_io.produce(pipeline.bootstrap, pipeline.topic_alerts, [(b"d", body)])
        await wait_for(lambda: receiver.delivered() == {f"{alert_id}:open"}, 30, what="the delivery")
        assert all(r.signature_ok for r in receiver.requests)
        assert output().count(idle) == 1  # said once, not every poll

        os.kill(run.pid, signal.SIGINT)
        assert await asyncio.to_thread(run.wait, 90) == 0, log_path.read_text()[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if receiver is not None:
            await receiver.stop()
    left = [pid for pid in started if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"still running after Ctrl-C: {left}"
    assert {"worker", "api", "notifier", "simulator"} <= {
        line.split("]")[0].lstrip("[") for line in log_path.read_text().splitlines() if line.startswith("[")
    }


def _api_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
