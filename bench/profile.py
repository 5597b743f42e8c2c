"""Where the worker's time goes: py-spy samples the running worker and the folded stacks are summarised as a
`top`-style table of self and total time.

py-spy pauses the process for each sample (~97 a second, well under 1 % of its time): `--nonblocking` would cost
less but tears many stacks, which made the table misleading.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from devkit.processes import ChildProcess


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record --format raw` on a pid until `stop()`; `summary()` reads the folded stacks it wrote."""

    def __init__(self, pid: int, out: Path, rate: int = 97) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.process: ChildProcess | None = None
        self.error: str | None = None

    def start(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw"]
        log = self.out.with_suffix(".log")
        self.process = ChildProcess(
            "py-spy", [*argv, "--output", str(self.out)], dict(os.environ), log
        ).start()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        self.process.wait(30)
        if not self.out.exists():
            self.error = self.process.current_log().strip()[-500:] or "py-spy wrote nothing"


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """`handle_batch (telemetrypulse/agents/process.py:83)` -> `handle_batch (agents/process.py)`."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "telemetrypulse/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


# Each sample goes to the first component whose marker is on its stack (checked in this order; a tuple of markers
# must all be there), so the shares add up to 100 % and say what the time is spent for, callees included.
# Faust runs the per-message callback and the three events `wait_first` races it against as tasks of their own,
# so their stacks start at the conductor / Event.wait rather than under `_drain_messages`.
COMPONENTS: tuple[tuple[str, tuple[str | tuple[str, ...], ...]], ...] = (
    (
        "Faust: handing each message to the stream (_drain_messages, wait_first, conductor)",
        (
            "_drain_messages",
            "Conductor._compile_message_handler",
            "Event.wait (",
            "_wait.<locals>._on_completion",
        ),
    ),
    ("worker: validation (models.validate_event)", ("validate_event",)),
    ("worker: device state (state.apply_events, record encode/decode)", ("apply_events", "DeviceState.")),
    ("worker: PostgreSQL sink (sink.py, asyncpg)", ("write_changes",)),
    ("worker: rest of the process agent (grouping, publish, table writes)", ("handle_batch", "_publish")),
    (
        "Faust: stream iteration, take buffer, acks",
        ("_c_aiter", "take_events", "Stream.ack", "process_events"),
    ),
    (
        "Kafka producer (aiokafka sender, Faust producer buffer)",
        ("aiokafka/producer", "ProducerBuffer", "Producer."),
    ),
    ("Kafka consumer thread: in select (mostly waiting)", (("WorkerThread", "EpollSelector.select"),)),
    ("Kafka consumer thread: fetching and decoding", ("WorkerThread",)),
    ("main event loop: in select (mostly waiting)", ("EpollSelector.select",)),
)


def _component(stack: str) -> str:
    for name, markers in COMPONENTS:
        for marker in markers:
            if all(m in stack for m in marker) if isinstance(marker, tuple) else marker in stack:
                return name
    return "other (timers, commits, monitor, …)"


def summarize(folded: Path, top: int = 25) -> dict:
    """Self and total share of samples per function, per component (callees included) and per leaf area."""
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    components: Counter[str] = Counter()
    samples = 0
    with contextlib.suppress(OSError):
        for line in folded.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_short(f) for f in stack.split(";")]
            # py-spy puts the thread name first when it is known.
            frames = [f for f in frames if not f.startswith(("process ", "thread "))] or frames
            samples += n
            self_time[frames[-1]] += n
            for f in set(frames):
                total_time[f] += n
            areas[_area(stack.split(";")[-1])] += n
            components[_component(stack)] += n
    return {
        "samples": samples,
        "self": [(f, n / samples) for f, n in self_time.most_common(top)] if samples else [],
        "total": [(f, n / samples) for f, n in total_time.most_common(top)] if samples else [],
        "areas": [(a, n / samples) for a, n in areas.most_common()] if samples else [],
        "components": [(c, n / samples) for c, n in components.most_common()] if samples else [],
    }


_AREAS = (
    ("telemetrypulse/models.py", "validation (models.py, decode*.py)"),
    ("telemetrypulse/decode", "validation (models.py, decode*.py)"),
    ("telemetrypulse/state", "partition state (state.py)"),  # state.py and its state_*.py steps
    ("telemetrypulse/dedup_ids.py", "partition state (state.py)"),
    ("telemetrypulse/open_windows.py", "partition state (state.py)"),
    ("telemetrypulse/batch_result.py", "partition state (state.py)"),
    ("telemetrypulse/windows.py", "partition state (state.py)"),
    ("telemetrypulse/alerts.py", "partition state (state.py)"),
    ("telemetrypulse/changes.py", "change records (changes.py)"),
    ("telemetrypulse/agents/", "agents (agents/)"),
    ("asyncpg/", "asyncpg"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "aiokafka"),
    ("faust/", "faust"),
    ("mode/", "faust"),
    ("rocksdict", "rocksdb"),
    ("asyncio/", "asyncio event loop"),
    ("orjson", "orjson"),
)


def _area(leaf: str) -> str:
    for marker, area in _AREAS:
        if marker in leaf:
            return area
    match = _FRAME.match(leaf)
    return f"other ({_short(leaf).split(' (')[-1].rstrip(')')})" if match else "other"


def render(summary: dict, title: str) -> str:
    lines = [f"# {title}", f"{summary['samples']} samples (py-spy, ~97 Hz, active threads only)", ""]
    lines.append("## time by component (first match on the stack, callees included)")
    lines += [f"{share * 100:6.1f}%  {name}" for name, share in summary["components"]]
    lines += ["", "## self time by area (leaf frame)"]
    lines += [f"{share * 100:6.1f}%  {area}" for area, share in summary["areas"]]
    lines += ["", "## self time (leaf frame)"]
    lines += [f"{share * 100:6.1f}%  {func}" for func, share in summary["self"]]
    lines += ["", "## total time (frame anywhere on the stack)"]
    lines += [f"{share * 100:6.1f}%  {func}" for func, share in summary["total"]]
    return "\n".join(lines) + "\n"
