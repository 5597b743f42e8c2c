"""`make run` and `with-stack`: the stack, then the system's processes (or one command) on it, and afterwards only
what this call started is stopped — on Ctrl-C, when a process exits, or when the command fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devkit.errors import StackError
from devkit.local_stack import LocalStack
from devkit.stack_record import say


def _prefix_output(name: str, stream: Any) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(f"[{name}] ".encode() + line)
        sys.stdout.flush()


def _bin(name: str) -> str:
    """A console script of this venv (the faust and telemetrypulse commands)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def system_commands() -> dict[str, list[str]]:
    """What `make run` supervises, in start order (stopped in reverse: the worker last, it drains)."""
    return {
        "worker": [_bin("faust"), "-A", "telemetrypulse.app", "worker", "-l", "info"],
        "sink": [_bin("telemetrypulse"), "sink"],
        "api": [_bin("telemetrypulse"), "api"],
        "notifier": [_bin("telemetrypulse"), "notify"],
        "simulator": [_bin("telemetrypulse"), "simulate"],
    }


def _local_secret(s: LocalStack, name: str) -> str:
    """A random secret kept in `.devstack/<name>` (0600), made once and reused by every `make run`."""
    path = s.dir / name
    if not path.exists():
        s.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"local-{uuid.uuid4().hex}\n")
    return path.read_text().strip()


def local_secrets(s: LocalStack) -> dict[str, str]:
    """What `make run` adds when the user configured none, so the lifecycle works out of the box:
    - `API_KEYS`: one local key with scopes operate and admin (the dashboard's acknowledge button, webhooks
      over the API); reads and ingest stay open, as no key has those scopes;
    - `WEBHOOK_SECRET`: so a webhook added with `PUT /webhooks/{name}` is signed and sent.
    Both are kept in `.devstack/` (0600) and reused; their values are never printed."""
    from telemetrypulse.settings import Settings

    try:
        configured = Settings()
    except Exception:
        return {}  # a bad setting: the processes report it themselves, with its name
    env = {}
    if configured.api_keys is None:
        env["API_KEYS"] = f"local:{_local_secret(s, 'operator-key')}:operate+admin"
        say(
            f"dashboard key (scopes operate + admin: acknowledge, notes, webhooks): in {s.dir / 'operator-key'}"
        )
    if configured.webhook_secret is None:
        env["WEBHOOK_SECRET"] = _local_secret(s, "webhook-secret")
        say(f"webhook signing secret: in {s.dir / 'webhook-secret'}")
    return env


def run_system(s: LocalStack) -> int:
    """`make run`: the stack, migrations, then worker + sink + API + notifier + simulator until Ctrl-C or one
    exits."""
    started = s.up()
    children: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        subprocess.run([_bin("telemetrypulse"), "migrate"], cwd=s.root, check=True)
        env = {**os.environ, **local_secrets(s)}
        for name, cmd in system_commands().items():
            # Own sessions: the terminal's Ctrl-C reaches only us; we stop the children in order, gracefully.
            child = subprocess.Popen(
                cmd,
                cwd=s.root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            children[name] = child
            threading.Thread(target=_prefix_output, args=(name, child.stdout), daemon=True).start()
            say(f"{name} started (pid {child.pid}): {' '.join(cmd)}")
        api = f"http://127.0.0.1:{os.environ.get('PORT') or 8000}"
        say(f"running: API on {api} (dashboard /, Swagger /docs); Ctrl-C stops everything")
        while not stopping.wait(0.5):
            exited = [(name, c.returncode) for name, c in children.items() if c.poll() is not None]
            if exited:
                say(f"{exited[0][0]} exited with code {exited[0][1]}; stopping the rest")
                code = 1
                break
    except subprocess.CalledProcessError as e:
        say(f"`{' '.join(e.cmd)}` failed with code {e.returncode}")
        code = 1
    finally:
        if children:
            say(f"stopping {', '.join(reversed(children))}")
        for child in reversed(children.values()):  # simulator first, the worker last: it drains
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child in reversed(children.items()):
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                say(f"{name} (pid {child.pid}) ignored SIGTERM for 30s; SIGKILL")
                child.kill()
                child.wait()
        s.stop_started(started)
        kept = [name for name, yes in started.items() if not yes]
        if kept:
            say(f"left running (they were up before): {', '.join(kept)}")
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return code


def with_stack(s: LocalStack, command: Sequence[str]) -> int:
    """Run `command` with the stack up; afterwards stop only what this call started (also on failure)."""
    if not command:
        raise StackError("with-stack needs a command after `--`")
    started = s.up()
    try:
        # Same process group: Ctrl-C reaches the command itself (pytest reports and exits); we only wait.
        child = subprocess.Popen(command, cwd=s.root)
        forwarded = {
            signal.SIGTERM: lambda signum, _f: child.send_signal(signum),
            signal.SIGINT: signal.SIG_IGN,
        }
        old = {sig: signal.signal(sig, handler) for sig, handler in forwarded.items()}
        try:
            code = child.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    finally:
        s.stop_started(started)
    return code
