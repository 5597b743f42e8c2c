"""One clone's local stack: the broker (`local_kafka`) and the cluster (`local_postgres`) together, under
`<repo>/.devstack/` — `state.json` (what was started), configs, logs, and the `env` file every project command reads.

`up` starts what is not running and reuses what is; `down` stops only what `up` recorded; two clones may run their
stacks on one machine at the same time, so nothing here assumes a fixed port or looks a process up by name.
The fault tests crash and restart the services through `kill_kafka`, `start_kafka`, `stop_postgres`,
`start_postgres`; tests and bench find the stack through `stack_env`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from devkit.errors import StackError
from devkit.local_kafka import KAFKA_STOP_S, LocalKafka, kafka_jars
from devkit.local_postgres import LocalPostgres, postgres_ready, private_dsn
from devkit.paths import ROOT
from devkit.pids import wait_gone, write_atomic
from devkit.stack_record import StackRecord, say

# Port choice is machine-wide: held from picking a port until the process listens on it, so two
# clones starting at once never pick the same free port.
MACHINE_LOCK = Path(tempfile.gettempdir()) / "telemetrypulse-devstack.lock"
STACK_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")


class LocalStack:
    """One clone's stack; every path and pid it uses is under `root/.devstack` or recorded there."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root.resolve()
        self.dir = self.root / ".devstack"
        self.record = StackRecord(self.dir)
        self.state_file = self.record.file
        self.env_file = self.dir / "env"
        self.logs = self.dir / "logs"
        self.kafka = LocalKafka(
            self.record,
            self.dir / "kafka",
            self.logs / "kafka.log",
            seed=str(self.root),
            machine_lock=MACHINE_LOCK,
        )
        self.postgres = LocalPostgres(self.record, self.dir, owner=self.root, machine_lock=MACHINE_LOCK)

    def state(self) -> dict:
        return self.record.read()

    def env(self) -> dict[str, str]:
        """The `.devstack/env` variables."""
        values = {}
        with contextlib.suppress(OSError):
            for line in self.env_file.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.startswith("#"):
                    values[key.strip()] = value.strip()
        return values

    def up(self) -> dict[str, bool]:
        """Start what is not running, reuse what is; write `.devstack/env`. Returns what this call started."""
        self.dir.mkdir(parents=True, exist_ok=True)
        started = {"kafka": False, "postgres": False}
        with self.record.locked():
            try:
                self._up(started)
            except BaseException:
                # Half a stack is no use and must not outlive a failed `make test`.
                if started["kafka"]:
                    self.kafka.down()
                if started["postgres"]:
                    self.postgres.down("fast")
                raise
        return started

    def _up(self, started: dict[str, bool]) -> None:
        started["kafka"] = self.kafka.up()
        external = os.environ.get("DATABASE_URL", "").strip()
        # A shell that sourced `.devstack/env` passes our own URL back in: that is not "external".
        own = private_dsn(self.record.section("postgres").get("port", 0))
        external = "" if external == own else external
        if external:
            # Set in the real environment: use it (a private cluster from earlier stays recorded for `down`).
            error = postgres_ready(external)
            if error is not None:
                raise StackError(f"DATABASE_URL (from the environment) does not answer: {error}")
            say("postgres: using DATABASE_URL from the environment")
            dsn = external
        else:
            started["postgres"] = self.postgres.up()
            dsn = self.postgres.dsn()
        self.record.update("env", database_url_external=bool(external))
        write_atomic(
            self.env_file,
            "# written by `python -m devkit up`; project commands read it for unset variables\n"
            f"KAFKA_BOOTSTRAP_SERVERS={self.kafka.bootstrap()}\nDATABASE_URL={dsn}\n",
        )

    def down(self, only: Sequence[str] = ("kafka", "postgres")) -> None:
        """Stop what `up` recorded (Kafka by pid, PostgreSQL by data dir); never anything else."""
        with self.record.locked():
            if "kafka" in only:
                pid = self.kafka.down()
                say(f"kafka stopped (pid {pid})" if pid else "kafka not running")
            if "postgres" in only:
                pid = self.postgres.down("fast")
                say(f"postgres stopped (pid {pid})" if pid else "postgres (private) not running")

    def status(self) -> bool:
        """Print what runs; True when Kafka and the database in `.devstack/env` are both up."""
        kafka, postgres = self.kafka.pid(), self.postgres.pid()
        external = self.record.section("env").get("database_url_external", False)
        if kafka:
            say(f"kafka running on {self.kafka.bootstrap()} (pid {kafka})")
        else:
            say("kafka stopped")
        pg = self.record.section("postgres")
        if postgres:
            say(f"postgres running on 127.0.0.1:{pg['port']} (pid {postgres}, data {pg['home']}/data)")
        elif not external:
            say("postgres stopped")
        if external:
            say("postgres: DATABASE_URL from the environment at the last `up` (not managed here)")
        return kafka is not None and (external or postgres is not None)

    def stop_started(self, started: dict[str, bool]) -> None:
        only = [name for name, yes in started.items() if yes]
        if only:
            self.down(only)

    def owns(self, stack: dict[str, str]) -> dict[str, bool]:
        """Which services of `stack` (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL) are this clone's own, running ones:
        only those may a fault test crash."""
        postgres = self.postgres.pid() is not None
        return {
            "kafka": self.kafka.pid() is not None
            and self.kafka.bootstrap() == stack["KAFKA_BOOTSTRAP_SERVERS"],
            "postgres": postgres and self.postgres.dsn() == stack["DATABASE_URL"],
        }


def stack_env(root: Path = ROOT) -> dict[str, str]:
    """KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL of the stack tests and bench run on: the environment first, then
    `.devstack/env` (written by `make up`)."""
    values = LocalStack(root).env()
    for name in STACK_VARIABLES:
        if os.environ.get(name):
            values[name] = os.environ[name]
    missing = [n for n in STACK_VARIABLES if n not in values]
    if missing:
        raise StackError(f"{', '.join(missing)} unknown: run `make up` first")
    return {name: values[name] for name in STACK_VARIABLES}


# --------------------------------------------------------------------------------------------- the fault tests'


def kill_kafka(sig: int = signal.SIGKILL) -> int:
    """Send `sig` to our broker (default: crash it); for SIGKILL/SIGTERM wait until it is gone. Returns its pid."""
    s = LocalStack()
    with s.record.locked():
        pid = s.kafka.pid()
        if pid is None:
            raise StackError("kafka is not running (recorded pid gone)")
        os.kill(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM) and not wait_gone(pid, KAFKA_STOP_S):
            raise StackError(f"kafka (pid {pid}) survived signal {sig}")
    return pid


def start_kafka() -> int:
    """Start our broker again with the same data and ports and wait until it answers; returns its pid."""
    s = LocalStack()
    with s.record.locked():
        pid = s.kafka.pid()
        if pid is not None:
            s.kafka.wait(pid)
            return pid
        return s.kafka.start(kafka_jars())


def stop_postgres(mode: str = "immediate") -> int:
    """Stop our private PostgreSQL (`immediate` = like a crash: no checkpoint, recovery at start). Returns its pid."""
    s = LocalStack()
    with s.record.locked():
        pid = s.postgres.down(mode)
    if pid is None:
        raise StackError("private postgres is not running")
    return pid


def start_postgres() -> int:
    """Start our private PostgreSQL again on the same port and data dir and wait until it answers."""
    s = LocalStack()
    with s.record.locked():
        pid = s.postgres.pid()
        return pid if pid is not None else s.postgres.start()
