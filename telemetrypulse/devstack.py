"""The local stack without Docker: Apache Kafka 3.9.1 (KRaft, one node) and a private PostgreSQL 15.

Owns `<repo>/.devstack/` (state.json, configs, logs and the `env` file every project command reads)
and the Kafka jar cache in `~/.cache/telemetrypulse/`. Processes are started detached, recorded by pid
or data dir, and stopped only through that record: two clones of the repo may run their stacks on one
machine at the same time, so nothing here assumes a fixed port or looks a process up by name.

CLI: `python -m telemetrypulse.devstack up|down|status|run|with-stack -- CMD…` (also `telemetrypulse devstack`).
The fault tests use `kill_kafka`, `start_kafka`, `stop_postgres` and `start_postgres`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from telemetrypulse.exceptions import DevstackError

KAFKA_VERSION = "3.9.1"
KAFKA_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
)
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "telemetrypulse"
KAFKA_PORT, CONTROLLER_PORT, POSTGRES_PORT = 9092, 9093, 55432
PG_USER = PG_PASSWORD = PG_DATABASE = "telemetrypulse"
KAFKA_READY_S, POSTGRES_READY_S, KAFKA_STOP_S = 60.0, 60.0, 30.0
# Port choice is machine-wide: held from picking a port until the process listens on it, so two
# clones starting at once never pick the same free port.
MACHINE_LOCK = Path(tempfile.gettempdir()) / "telemetrypulse-devstack.lock"
PG_FALLBACK_PREFIX = "telemetrypulse-pg-"
# A Unix socket path is limited to 107 bytes; `.s.PGSQL.NNNNN` is appended to the directory.
MAX_SOCKET_DIR = 90


def say(message: str) -> None:
    print(f"devstack: {message}", flush=True)


def default_root() -> Path:
    """The repo this package was installed from (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd().resolve()


# --------------------------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    """True if pid runs and is not a zombie (a zombie's cmdline is empty, so it never matches)."""
    return bool(pid) and bool(_cmdline(pid))


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        # Reap it if it is our own child (start_kafka in a test process); otherwise it stays a zombie.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- ports


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be listened on (SO_REUSEADDR like Java and PostgreSQL, so TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _fallback_range() -> range:
    # Outside the ephemeral range: a stopped Kafka's port must not be taken by some client's
    # outgoing connection before a fault test starts it again.
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(20000, low) if low > 21000 else range(high + 1, 65536)


def pick_port(preferred: int | None, seed: str, taken: Sequence[int] = ()) -> int:
    if preferred and preferred not in taken and port_free(preferred):
        return preferred
    candidates = _fallback_range()
    start = int(hashlib.sha1(seed.encode()).hexdigest(), 16) % len(candidates)
    for i in range(len(candidates)):
        port = candidates[(start + i) % len(candidates)]
        if port not in taken and port_free(port):
            return port
    raise DevstackError("no free TCP port on 127.0.0.1")


# --------------------------------------------------------------------------------------------- kafka


def kafka_jars(cache_dir: Path = CACHE_DIR) -> Path:
    """The Kafka broker's jars, resolved once with Maven into the cache (a marker file says complete)."""
    home = cache_dir / f"kafka-{KAFKA_VERSION}"
    libs, marker = home / "libs", home / "COMPLETE"
    if marker.is_file():
        return libs
    with _flock(home / ".lock"):  # another clone may be resolving them right now
        if marker.is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise DevstackError("Maven (`mvn`) not found: it resolves the Kafka jars from Maven Central")
        say(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven (once) into {libs}")
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        deps = "".join(
            f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
            for g, a, v in KAFKA_ARTIFACTS
        )
        pom = (
            '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>local.telemetrypulse</groupId><artifactId>kafka-runtime</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
        )
        with tempfile.TemporaryDirectory(prefix="telemetrypulse-mvn-") as folder:
            Path(folder, "pom.xml").write_text(pom)
            cmd = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime"]
            cmd.append(f"-DoutputDirectory={partial}")
            done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if done.returncode != 0 or not (partial / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise DevstackError(f"Maven could not resolve the Kafka jars (exit {done.returncode}):\n{tail}")
        partial.replace(libs)
        marker.write_text(f"{KAFKA_VERSION}\n")
    return libs


def kafka_properties(*, port: int, controller_port: int, data_dir: Path) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "6",
        "offsets.topic.replication.factor": "1",
        # The default 50 partitions make every fresh consumer-group coordinator load slower on 2 cores.
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        # After a crash (the fault tests' kill -9) the controller refuses the restarted broker until the
        # dead incarnation's session expires: the 9 s default plus retry backoff made a restart take ~15 s
        # (now ~7 s). Heartbeats stay inside one process, so 3 s is still ample.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        "message.max.bytes": str(8 * 1024 * 1024),
        "replica.fetch.max.bytes": str(8 * 1024 * 1024),
    }
    return "# written by telemetrypulse.devstack; rewritten at every start\n" + "".join(
        f"{key}={value}\n" for key, value in settings.items()
    )


LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: 16 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _run_sync(make_coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    # Called from async code (a fault test): asyncio.run refuses a running loop, so use a thread of our own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


async def _kafka_metadata(bootstrap: str) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        return await asyncio.wait_for(admin.describe_cluster(), 10)
    finally:
        await admin.close()


def kafka_ready(bootstrap: str) -> bool:
    """One real metadata request; true once the broker lists itself (KRaft lists only unfenced brokers)."""
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # refused connections while the JVM starts are expected
    try:
        return bool(_run_sync(lambda: _kafka_metadata(bootstrap)).get("brokers"))
    except Exception:
        return False
    finally:
        quiet.setLevel(level)


# --------------------------------------------------------------------------------------------- postgres


def pg_bin(name: str) -> str:
    for folder in (os.environ.get("PG_BINDIR"), "/usr/lib/postgresql/15/bin"):
        if folder and Path(folder, name).is_file():
            return str(Path(folder, name))
    found = shutil.which(name)
    if found is None:
        raise DevstackError(f"PostgreSQL 15 `{name}` not found (install postgresql-15, or set DATABASE_URL)")
    return found


def _as_postgres() -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run_pg(args: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    # cwd=/ because pg_ctl and initdb fail when they cannot read their working directory (a 0700 root tree).
    done = subprocess.run(_as_postgres() + args, cwd="/", input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise DevstackError(f"`{' '.join(args[:2])}…` failed (exit {done.returncode}): {output[-1500:]}")
    return done


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def postgres_conf(*, port: int, socket_dir: Path) -> str:
    return (
        "# written by telemetrypulse.devstack; rewritten at every start\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "max_connections = 300\n"
        # Losing the OS page cache is not a case a throwaway test cluster must survive...
        "fsync = off\n"
        "full_page_writes = off\n"
        # ...but a killed server must keep every acknowledged commit: the fault tests count rows.
        "synchronous_commit = on\n"
        "password_encryption = 'scram-sha-256'\n"
    )


async def _pg_query(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def postgres_ready(dsn: str) -> str | None:
    """None once a real login and query work, else the error text."""
    try:
        _run_sync(lambda: _pg_query(dsn))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def private_dsn(port: int) -> str:
    return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DATABASE}"


BOOTSTRAP_SQL = f"""\
SELECT 'CREATE ROLE {PG_USER} LOGIN SUPERUSER CREATEDB CREATEROLE PASSWORD ''{PG_PASSWORD}'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}')\\gexec
SELECT 'CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{PG_DATABASE}')\\gexec
"""


# --------------------------------------------------------------------------------------------- the stack


class Devstack:
    """One clone's stack; every path and pid it uses is under `root/.devstack` or recorded there."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_root()).resolve()
        self.dir = self.root / ".devstack"
        self.state_file = self.dir / "state.json"
        self.env_file = self.dir / "env"
        self.logs = self.dir / "logs"
        self.kafka_dir = self.dir / "kafka"
        self.kafka_config = self.kafka_dir / "server.properties"
        self.kafka_log = self.logs / "kafka.log"

    # state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def _update(self, section: str, **values: Any) -> dict[str, Any]:
        state = self.state()
        state.setdefault(section, {}).update(values)
        self._save(state)
        return state[section]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _flock(self.dir / "lock"):
            yield

    def env(self) -> dict[str, str]:
        """The `.devstack/env` variables."""
        values = {}
        with contextlib.suppress(OSError):
            for line in self.env_file.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not key.startswith("#"):
                    values[key.strip()] = value.strip()
        return values

    # kafka --------------------------------------------------------------------------------------
    def kafka_pid(self) -> int | None:
        """The recorded Kafka pid if that process is still our broker (argv names our server.properties)."""
        pid = self.state().get("kafka", {}).get("pid")
        if pid and {"kafka.Kafka", str(self.kafka_config)} <= set(_cmdline(pid)):
            return pid
        return None

    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.state()['kafka']['port']}"

    def _kafka_up(self) -> bool:
        """Start Kafka unless our broker already runs; True if this call started it."""
        pid = self.kafka_pid()
        if pid is not None:
            self._wait_kafka(pid)
            say(f"kafka reused on {self.kafka_bootstrap()} (pid {pid})")
            return False
        libs = kafka_jars()
        with _flock(MACHINE_LOCK):
            recorded = self.state().get("kafka", {})
            seed = str(self.root)
            port = pick_port(recorded.get("port") or KAFKA_PORT, seed + ":kafka")
            controller = pick_port(recorded.get("controller_port") or CONTROLLER_PORT, seed + ":ctl", [port])
            self._update("kafka", port=port, controller_port=controller, pid=None)
            self._start_kafka(libs)
        return True

    def _start_kafka(self, libs: Path) -> int:
        kafka = self._update("kafka")
        data = self.kafka_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log4j = self.kafka_dir / "log4j.properties"
        log4j.write_text(LOG4J)
        self.kafka_config.write_text(
            kafka_properties(port=kafka["port"], controller_port=kafka["controller_port"], data_dir=data)
        )
        java = str(Path(os.environ["JAVA_HOME"], "bin", "java")) if os.environ.get("JAVA_HOME") else "java"
        base = [java, f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*"]
        if not (data / "meta.properties").is_file():
            cluster_id = kafka.get("cluster_id") or new_cluster_id()
            self._update("kafka", cluster_id=cluster_id)
            fmt = [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.kafka_config)]
            done = subprocess.run(fmt, capture_output=True, text=True)
            if done.returncode != 0:
                raise DevstackError(
                    f"kafka storage format failed: {(done.stdout + done.stderr).strip()[-1500:]}"
                )
        if self.kafka_log.is_file() and self.kafka_log.stat().st_size > 50 * 1024 * 1024:
            self.kafka_log.replace(self.kafka_log.with_suffix(".log.1"))
        heap_and_gc = [
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
        ]
        cmd = [base[0], *heap_and_gc, *base[1:], "kafka.Kafka", str(self.kafka_config)]
        with open(self.kafka_log, "ab") as log:
            # A new session: Ctrl-C in the terminal that ran `make up` must not reach the broker.
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.kafka_dir,
                start_new_session=True,
            )
        self._update("kafka", pid=process.pid)
        self._wait_kafka(process.pid)
        say(f"kafka ready on 127.0.0.1:{kafka['port']} (pid {process.pid})")
        return process.pid

    def _wait_kafka(self, pid: int) -> None:
        bootstrap = self.kafka_bootstrap()
        deadline = time.monotonic() + KAFKA_READY_S
        while not kafka_ready(bootstrap):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                raise DevstackError(
                    f"kafka (pid {pid}) exited; {self.kafka_log} ends with:\n{_log_tail(self.kafka_log)}"
                )
            if time.monotonic() > deadline:
                raise DevstackError(
                    f"kafka (pid {pid}) not ready on {bootstrap} after {KAFKA_READY_S:.0f}s; "
                    f"{self.kafka_log} ends with:\n{_log_tail(self.kafka_log)}"
                )
            time.sleep(0.5)

    def _kafka_down(self, sig: int = signal.SIGTERM, timeout: float = KAFKA_STOP_S) -> int | None:
        pid = self.kafka_pid()
        if pid is None:
            return None
        os.kill(pid, sig)
        if not _wait_gone(pid, timeout):
            say(f"kafka (pid {pid}) still running after {timeout:.0f}s; SIGKILL")
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
        self._update("kafka", pid=None)
        return pid

    # postgres -----------------------------------------------------------------------------------
    def pg_home(self) -> Path:
        """The private cluster's folder (data/ and postgres.log), chosen once and recorded."""
        recorded = self.state().get("postgres", {}).get("home")
        if recorded:
            return Path(recorded)
        local = self.dir / "postgres"
        if not self._postgres_can_reach(self.dir) or len(str(local / "data")) > MAX_SOCKET_DIR:
            # CI clones into a 0700 root-owned mktemp folder the postgres user cannot enter.
            digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
            local = Path("/var/tmp") / f"{PG_FALLBACK_PREFIX}{digest}"
        self._update("postgres", home=str(local))
        return local

    @staticmethod
    def _postgres_can_reach(path: Path) -> bool:
        if os.geteuid() != 0:
            return True
        return (
            subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], cwd="/").returncode
            == 0
        )

    def pg_data(self) -> Path:
        return self.pg_home() / "data"

    def postgres_pid(self) -> int | None:
        """The postmaster of our data dir, if it runs (its pid file, checked against /proc: cwd is the data dir)."""
        data = self.state().get("postgres", {}).get("home")
        if not data:
            return None
        data_dir = Path(data) / "data"
        try:
            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        argv = _cmdline(pid)
        try:
            same_dir = Path(os.readlink(f"/proc/{pid}/cwd")) == data_dir
        except OSError:
            same_dir = False
        return pid if argv and Path(argv[0]).name in ("postgres", "postmaster") and same_dir else None

    def _collect_orphans(self) -> None:
        """Remove fallback clusters in /var/tmp whose clone is gone and whose server is not running."""
        for home in Path("/var/tmp").glob(f"{PG_FALLBACK_PREFIX}*"):
            try:
                owner = Path((home / "owner").read_text().strip())
            except OSError:
                continue
            if owner.exists() or _alive(_pid_file(home / "data" / "postmaster.pid")):
                continue
            shutil.rmtree(home, ignore_errors=True)
            say(f"removed {home} (its clone {owner} no longer exists)")

    def _initdb(self, home: Path) -> None:
        say(f"initdb {home / 'data'}")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _chown_postgres(home)
        (home / "owner").write_text(f"{self.root}\n")
        fresh = home / "data.partial"  # renamed to data/ only when complete, so a crash mid-initdb is redone
        if fresh.exists():
            _run_pg(["rm", "-rf", str(fresh)])
        initdb = [
            pg_bin("initdb"),
            "-D",
            str(fresh),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        _run_pg([*initdb, "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions"])
        with open(fresh / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'telemetrypulse.conf'\n")
        fresh.replace(home / "data")

    def _postgres_up(self) -> bool:
        pid = self.postgres_pid()
        if pid is not None:
            port = self.state()["postgres"]["port"]
            self._wait_postgres(private_dsn(port))
            say(f"postgres reused on 127.0.0.1:{port} (pid {pid})")
            return False
        self._collect_orphans()
        home = self.pg_home()
        if not (home / "data" / "PG_VERSION").is_file():
            self._initdb(home)
        with _flock(MACHINE_LOCK):
            recorded = self.state().get("postgres", {}).get("port")
            port = pick_port(recorded or POSTGRES_PORT, str(self.root) + ":postgres")
            self._update("postgres", port=port)
            self._start_postgres()
        return True

    def _start_postgres(self) -> int:
        port = self.state()["postgres"]["port"]
        data = self.pg_data()
        conf = data / "telemetrypulse.conf"
        conf.write_text(postgres_conf(port=port, socket_dir=data))
        _chown_postgres(conf)
        log = self.pg_home() / "postgres.log"
        stale = _pid_file(data / "postmaster.pid")
        if stale and _alive(stale) and Path(_cmdline(stale)[0]).name not in ("postgres", "postmaster"):
            # Left by a killed server and its pid now taken by another program: the server would refuse to start.
            (data / "postmaster.pid").unlink(missing_ok=True)
        # pg_ctl detaches the server into its own session and waits (-w) until it accepts connections.
        done = _run_pg(
            [pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"], check=False
        )
        if done.returncode != 0:
            raise DevstackError(
                f"postgres did not start (exit {done.returncode}); {log} ends with:\n{_log_tail(log)}"
            )
        psql = [pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(data), "-p", str(port)]
        _run_pg([*psql, "-U", "postgres", "-d", "postgres", "-f", "-"], stdin=BOOTSTRAP_SQL)
        self._wait_postgres(private_dsn(port))
        pid = self.postgres_pid()
        say(f"postgres ready on 127.0.0.1:{port} (pid {pid}, data {data})")
        return pid or 0

    @staticmethod
    def _wait_postgres(dsn: str) -> None:
        deadline = time.monotonic() + POSTGRES_READY_S
        while (error := postgres_ready(dsn)) is not None:
            if time.monotonic() > deadline:
                raise DevstackError(f"postgres not ready after {POSTGRES_READY_S:.0f}s: {error}")
            time.sleep(0.5)

    def _postgres_down(self, mode: str = "fast") -> int | None:
        pid = self.postgres_pid()
        if pid is None:
            return None
        _run_pg([pg_bin("pg_ctl"), "-D", str(self.pg_data()), "-m", mode, "-w", "-t", "60", "stop"])
        _wait_gone(pid, 10)
        return pid

    # the commands -------------------------------------------------------------------------------
    def up(self) -> dict[str, bool]:
        """Start what is not running, reuse what is; write `.devstack/env`. Returns what this call started."""
        self.dir.mkdir(parents=True, exist_ok=True)
        started = {"kafka": False, "postgres": False}
        with self._locked():
            try:
                self._up(started)
            except BaseException:
                # Half a stack is no use and must not outlive a failed `make test`.
                if started["kafka"]:
                    self._kafka_down()
                if started["postgres"]:
                    self._postgres_down("fast")
                raise
        return started

    def _up(self, started: dict[str, bool]) -> None:
        started["kafka"] = self._kafka_up()
        external = os.environ.get("DATABASE_URL", "").strip()
        # A shell that sourced `.devstack/env` passes our own URL back in: that is not "external".
        external = (
            "" if external == private_dsn(self.state().get("postgres", {}).get("port", 0)) else external
        )
        if external:
            # Set in the real environment: use it (a private cluster from earlier stays recorded for `down`).
            error = postgres_ready(external)
            if error is not None:
                raise DevstackError(f"DATABASE_URL (from the environment) does not answer: {error}")
            say("postgres: using DATABASE_URL from the environment")
            dsn = external
        else:
            started["postgres"] = self._postgres_up()
            dsn = private_dsn(self.state()["postgres"]["port"])
        self._update("env", database_url_external=bool(external))
        _write_atomic(
            self.env_file,
            "# written by `python -m telemetrypulse.devstack up`; project commands read it for unset variables\n"
            f"KAFKA_BOOTSTRAP_SERVERS={self.kafka_bootstrap()}\nDATABASE_URL={dsn}\n",
        )

    def down(self, only: Sequence[str] = ("kafka", "postgres")) -> None:
        """Stop what `up` recorded (Kafka by pid, PostgreSQL by data dir); never anything else."""
        with self._locked():
            if "kafka" in only:
                pid = self._kafka_down()
                say(f"kafka stopped (pid {pid})" if pid else "kafka not running")
            if "postgres" in only:
                pid = self._postgres_down("fast")
                say(f"postgres stopped (pid {pid})" if pid else "postgres (private) not running")

    def status(self) -> bool:
        """Print what runs; True when Kafka and the database in `.devstack/env` are both up."""
        state = self.state()
        kafka, postgres = self.kafka_pid(), self.postgres_pid()
        external = state.get("env", {}).get("database_url_external", False)
        if kafka:
            say(f"kafka running on {self.kafka_bootstrap()} (pid {kafka})")
        else:
            say("kafka stopped")
        pg = state.get("postgres", {})
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


def _pid_file(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


# --------------------------------------------------------------------------------------------- fault-test API


def stack() -> Devstack:
    return Devstack()


def kill_kafka(sig: int = signal.SIGKILL) -> int:
    """Send `sig` to our broker (default: crash it); for SIGKILL/SIGTERM wait until it is gone. Returns its pid."""
    s = stack()
    with s._locked():
        pid = s.kafka_pid()
        if pid is None:
            raise DevstackError("kafka is not running (recorded pid gone)")
        os.kill(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM) and not _wait_gone(pid, KAFKA_STOP_S):
            raise DevstackError(f"kafka (pid {pid}) survived signal {sig}")
    return pid


def start_kafka() -> int:
    """Start our broker again with the same data and ports and wait until it answers; returns its pid."""
    s = stack()
    with s._locked():
        pid = s.kafka_pid()
        if pid is not None:
            s._wait_kafka(pid)
            return pid
        return s._start_kafka(kafka_jars())


def stop_postgres(mode: str = "immediate") -> int:
    """Stop our private PostgreSQL (`immediate` = like a crash: no checkpoint, recovery at start). Returns its pid."""
    s = stack()
    with s._locked():
        pid = s._postgres_down(mode)
    if pid is None:
        raise DevstackError("private postgres is not running")
    return pid


def start_postgres() -> int:
    """Start our private PostgreSQL again on the same port and data dir and wait until it answers."""
    s = stack()
    with s._locked():
        pid = s.postgres_pid()
        return pid if pid is not None else s._start_postgres()


# --------------------------------------------------------------------------------------------- supervisor


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


def _local_secret(s: Devstack, name: str) -> str:
    """A random secret kept in `.devstack/<name>` (0600), made once and reused by every `make run`."""
    path = s.dir / name
    if not path.exists():
        s.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"local-{uuid.uuid4().hex}\n")
    return path.read_text().strip()


def local_secrets(s: Devstack) -> dict[str, str]:
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


def run_system(s: Devstack) -> int:
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


def with_stack(s: Devstack, command: Sequence[str]) -> int:
    """Run `command` with the stack up; afterwards stop only what this call started (also on failure)."""
    if not command:
        raise DevstackError("with-stack needs a command after `--`")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telemetrypulse devstack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start (or reuse) Kafka and PostgreSQL, write .devstack/env")
    sub.add_parser("down", help="stop what `up` recorded")
    sub.add_parser("status", help="show what runs; exit 0 when all is up")
    sub.add_parser(
        "run", help="`make run`: stack + migrate + worker, sink, API, notifier, simulator until Ctrl-C"
    )
    w = sub.add_parser("with-stack", help="run a command with the stack up, then stop what this started")
    w.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    s = stack()
    try:
        if args.command == "up":
            s.up()
        elif args.command == "down":
            s.down()
        elif args.command == "status":
            return 0 if s.status() else 1
        elif args.command == "run":
            return run_system(s)
        else:
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return with_stack(s, command)
    except DevstackError as e:
        print(f"devstack: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
