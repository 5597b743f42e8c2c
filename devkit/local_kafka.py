"""The local Apache Kafka 3.9.1 broker (KRaft, one node, loopback): its jars resolved once from Maven Central into
`~/.cache/telemetrypulse/`, its config, storage and log under `.devstack/kafka/`, started detached and stopped by the
pid recorded in `.devstack/state.json` — never looked up by name or port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from devkit.errors import StackError
from devkit.pids import alive, cmdline, file_lock, log_tail, wait_gone
from devkit.ports import pick_port
from devkit.stack_record import StackRecord, say
from devkit.waiting import run_sync

KAFKA_VERSION = "3.9.1"
KAFKA_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
)
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "telemetrypulse"
KAFKA_PORT, CONTROLLER_PORT = 9092, 9093
KAFKA_READY_S, KAFKA_STOP_S = 60.0, 30.0

LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


def kafka_jars(cache_dir: Path = CACHE_DIR) -> Path:
    """The Kafka broker's jars, resolved once with Maven into the cache (a marker file says complete)."""
    home = cache_dir / f"kafka-{KAFKA_VERSION}"
    libs, marker = home / "libs", home / "COMPLETE"
    if marker.is_file():
        return libs
    with file_lock(home / ".lock"):  # another clone may be resolving them right now
        if marker.is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (`mvn`) not found: it resolves the Kafka jars from Maven Central")
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
            raise StackError(f"Maven could not resolve the Kafka jars (exit {done.returncode}):\n{tail}")
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
    return "# written by devkit.local_kafka; rewritten at every start\n" + "".join(
        f"{key}={value}\n" for key, value in settings.items()
    )


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: 16 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


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
        return bool(run_sync(lambda: _kafka_metadata(bootstrap)).get("brokers"))
    except Exception:
        return False
    finally:
        quiet.setLevel(level)


class LocalKafka:
    """This clone's broker: ports, pid and cluster id in the record's `kafka` section."""

    def __init__(self, record: StackRecord, folder: Path, log: Path, seed: str, machine_lock: Path) -> None:
        self.record = record
        self.folder = folder
        self.config = folder / "server.properties"
        self.log = log
        self.seed = seed  # the clone's path: its fallback ports stay the same from one start to the next
        self.machine_lock = machine_lock

    def pid(self) -> int | None:
        """The recorded pid if that process is still our broker (its argv names our server.properties)."""
        pid = self.record.section("kafka").get("pid")
        if pid and {"kafka.Kafka", str(self.config)} <= set(cmdline(pid)):
            return pid
        return None

    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.record.section('kafka')['port']}"

    def up(self) -> bool:
        """Start the broker unless ours already runs; True if this call started it."""
        pid = self.pid()
        if pid is not None:
            self.wait(pid)
            say(f"kafka reused on {self.bootstrap()} (pid {pid})")
            return False
        libs = kafka_jars()
        with file_lock(self.machine_lock):
            recorded = self.record.section("kafka")
            port = pick_port(recorded.get("port") or KAFKA_PORT, self.seed + ":kafka")
            controller = pick_port(
                recorded.get("controller_port") or CONTROLLER_PORT, self.seed + ":ctl", [port]
            )
            self.record.update("kafka", port=port, controller_port=controller, pid=None)
            self.start(libs)
        return True

    def start(self, libs: Path) -> int:
        """Start on the recorded ports with the same data (formatting the storage the first time); its pid."""
        kafka = self.record.update("kafka")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        log4j = self.folder / "log4j.properties"
        log4j.write_text(LOG4J)
        self.config.write_text(
            kafka_properties(port=kafka["port"], controller_port=kafka["controller_port"], data_dir=data)
        )
        java = str(Path(os.environ["JAVA_HOME"], "bin", "java")) if os.environ.get("JAVA_HOME") else "java"
        base = [java, f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*"]
        if not (data / "meta.properties").is_file():
            cluster_id = kafka.get("cluster_id") or new_cluster_id()
            self.record.update("kafka", cluster_id=cluster_id)
            fmt = [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config)]
            done = subprocess.run(fmt, capture_output=True, text=True)
            if done.returncode != 0:
                raise StackError(
                    f"kafka storage format failed: {(done.stdout + done.stderr).strip()[-1500:]}"
                )
        if self.log.is_file() and self.log.stat().st_size > 50 * 1024 * 1024:
            self.log.replace(self.log.with_suffix(".log.1"))
        # The client compiler only (C1): this broker lives minutes (a test run, a bench) on 2 cores it shares with
        # the pipeline, and the optimising compiler's threads took ~15 s of CPU in its first 90 s under load
        # (keep-up phase: Kafka 32 → 17 CPU s, p99 produce→PostgreSQL 1.8–4.0 s → 1.0 s).
        jvm = [
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
        ]
        cmd = [base[0], *jvm, *base[1:], "kafka.Kafka", str(self.config)]
        with open(self.log, "ab") as log:
            # A new session: Ctrl-C in the terminal that ran `make up` must not reach the broker.
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.folder,
                start_new_session=True,
            )
        self.record.update("kafka", pid=process.pid)
        self.wait(process.pid)
        say(f"kafka ready on 127.0.0.1:{kafka['port']} (pid {process.pid})")
        return process.pid

    def wait(self, pid: int) -> None:
        """Until the broker answers a metadata request; raises with the log's tail if it exits or takes too long."""
        bootstrap = self.bootstrap()
        deadline = time.monotonic() + KAFKA_READY_S
        while not kafka_ready(bootstrap):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not alive(pid):
                raise StackError(f"kafka (pid {pid}) exited; {self.log} ends with:\n{log_tail(self.log)}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"kafka (pid {pid}) not ready on {bootstrap} after {KAFKA_READY_S:.0f}s; "
                    f"{self.log} ends with:\n{log_tail(self.log)}"
                )
            time.sleep(0.5)

    def down(self, sig: int = signal.SIGTERM, timeout: float = KAFKA_STOP_S) -> int | None:
        """Stop our broker (SIGKILL if it outlives `timeout`); its pid, None if it was not running."""
        pid = self.pid()
        if pid is None:
            return None
        os.kill(pid, sig)
        if not wait_gone(pid, timeout):
            say(f"kafka (pid {pid}) still running after {timeout:.0f}s; SIGKILL")
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
        self.record.update("kafka", pid=None)
        return pid
