"""Test harness against the real local stack (`make up`): fresh databases and topics per test, the
worker as a real `faust … worker` process, producing, and reading back every outcome.

Processes are started here and stopped by the pid recorded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".devstack" / "env"
OUTPUT = ROOT / "test-output"


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
        raise RuntimeError(f"{', '.join(missing)} unknown: run `make up` first")
    return values


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_dsn: str) -> tuple[str, str]:
    name = f"tp_test_{uuid.uuid4().hex[:12]}"
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
        pass  # best effort; unique names keep tests apart anyway
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Produce in order; per key the order is kept (idempotent producer, one partition per key)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 5.0) -> list:
    """Every record of a topic, from the beginning to the end offsets as they are now."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s + sum(ends.values()) / 20000
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp.partition] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
    finally:
        await consumer.stop()
    return records


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        result = {}
        for p in partitions:
            result[p] = await consumer.committed(TopicPartition(topic, p)) or 0
        return result
    finally:
        await consumer.stop()


class Worker:
    """`faust -A telemetrypulse.app worker` (or another `command`) as a child process, with its own log file."""

    def __init__(
        self, env: dict[str, str], log_path: Path, name: str = "worker", command: list[str] | None = None
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.name = name
        self.command = command or [
            str(Path(sys.executable).with_name("faust")),
            "-A",
            "telemetrypulse.app",
            "worker",
            "-l",
            "info",
        ]
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, no chance to flush or commit."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(10)

    def current_log(self) -> str:
        """The log of the latest start only."""
        return self.log_text().split(f"===== start {self.starts - 1} =====")[-1]

    def log_text(self, start: int | None = None) -> str:
        """The whole log, or only what the given start (0, 1, …) wrote."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text if start is None else text.split(f"===== start {start} =====")[-1]


class Sink(Worker):
    """`telemetrypulse sink` (the PostgreSQL sink process) as a child process, with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "sink") -> None:
        super().__init__(env, log_path, name, [str(Path(sys.executable).with_name("telemetrypulse")), "sink"])

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait (SIGKILL after `timeout`); the exit code."""
        self.stop(timeout)
        return self.process.returncode if self.process is not None else None


def notifier_command() -> list[str]:
    return [str(Path(sys.executable).with_name("telemetrypulse")), "notify"]


async def wait_notifier_ready(notifier: Worker, timeout_s: float = 60) -> None:
    def ready() -> bool:
        if not notifier.alive():
            raise RuntimeError(f"{notifier.name} exited:\n{notifier.log_text()[-4000:]}")
        return "notifier ready" in notifier.current_log()

    await wait_for(ready, timeout_s, interval_s=0.2, what=f"{notifier.name} ready")


async def wait_for(predicate: Callable, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    """Poll an (async or plain) predicate until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class Pipeline:
    """A whole isolated deployment: its own APP_ID, topics, database and worker data folders."""

    def __init__(
        self, stack: dict[str, str], dsn: str, tmp: Path, partitions: int = 4, grace_s: int = 300
    ) -> None:
        tag = uuid.uuid4().hex[:10]
        self.bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
        self.dsn = dsn
        self.tmp = tmp
        self.partitions = partitions
        self.app_id = f"tp-test-{tag}"
        self.topic_events = f"test-{tag}.events"
        self.topic_alerts = f"test-{tag}.alerts"
        self.topic_dlq = f"test-{tag}.dlq"
        self.grace_s = grace_s
        self.workers: list[Worker] = []
        self.sinks: list[Sink] = []

    @property
    def topics(self) -> list[str]:
        internal = [
            f"{self.app_id}-changes",
            f"{self.app_id}-partition-state-changelog",
            f"{self.app_id}-rules",
        ]
        return [self.topic_events, self.topic_alerts, self.topic_dlq, *internal]

    def env(self, index: int = 0, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "TOPIC_", "APP_ID", "DATA_DIR"))
        }
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            DATABASE_URL=self.dsn,
            APP_ID=self.app_id,
            TOPIC_EVENTS=self.topic_events,
            TOPIC_ALERTS=self.topic_alerts,
            TOPIC_DLQ=self.topic_dlq,
            TOPIC_PARTITIONS=str(self.partitions),
            WINDOW_GRACE_S=str(self.grace_s),
            DATA_DIR=str(self.tmp / f"worker-{index}"),
            WORKER_WEB_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def add_worker(self, **extra: str) -> Worker:
        """A stream worker of this deployment; start it yourself. Starts the deployment's PostgreSQL sink (`sinks[0]`,
        a process of its own) when none is running, as every deployment runs one."""
        if not any(sink.alive() for sink in self.sinks):
            (self.sinks[0] if self.sinks else self.add_sink()).start()
        index = len(self.workers)
        worker = Worker(
            self.env(index, **extra), OUTPUT / "logs" / f"{self.app_id}-worker-{index}.log", f"worker-{index}"
        )
        self.workers.append(worker)
        return worker

    def add_sink(self, **extra: str) -> Sink:
        """A `telemetrypulse sink` process of this deployment (group `<APP_ID>-sink`); start it yourself."""
        index = len(self.sinks)
        sink = Sink(
            self.env(index, SINK_WEB_PORT="0", **extra),
            OUTPUT / "logs" / f"{self.app_id}-sink-{index}.log",
            f"sink-{index}",
        )
        self.sinks.append(sink)
        return sink

    def add_notifier(self, **extra: str) -> Worker:
        """`telemetrypulse notify` of this deployment (its consumer group is `<APP_ID>-notifier`)."""
        index = len(self.workers)
        env = self.env(index, NOTIFIER_WEB_PORT="0", **extra)
        notifier = Worker(
            env,
            OUTPUT / "logs" / f"{self.app_id}-notifier-{index}.log",
            f"notifier-{index}",
            notifier_command(),
        )
        self.workers.append(notifier)
        return notifier

    async def wait_processing(self, worker: Worker, timeout_s: float = 90) -> None:
        """Ready = Faust says so in its log (recovery done, agents started)."""

        def ready() -> bool:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.log_text()[-4000:]}")
            return "Ready" in worker.log_text().split(f"===== start {worker.starts - 1} =====")[-1]

        await wait_for(ready, timeout_s, what=f"{worker.name} ready")

    async def produce(self, messages: list[tuple[bytes | None, bytes]]) -> None:
        await produce(self.bootstrap, self.topic_events, messages)

    def stop_all(self) -> None:
        for process in [*self.workers, *self.sinks]:
            process.stop()

    async def db_snapshot(self) -> dict:
        conn = await asyncpg.connect(self.dsn)
        try:
            return {
                "events": await conn.fetch("SELECT * FROM telemetry_events"),
                "agg_5m": await conn.fetch("SELECT * FROM telemetry_device_agg_5m"),
                "agg_15m": await conn.fetch("SELECT * FROM telemetry_device_agg_15m"),
                "zone_5m": await conn.fetch("SELECT * FROM telemetry_agg_5m"),
                "zone_15m": await conn.fetch("SELECT * FROM telemetry_agg_15m"),
                "latest": await conn.fetch("SELECT * FROM telemetry_device_latest"),
                "alerts": await conn.fetch("SELECT * FROM telemetry_alerts"),
            }
        finally:
            await conn.close()

    async def counts(self) -> tuple[int, int]:
        conn = await asyncpg.connect(self.dsn)
        try:
            events = await conn.fetchval("SELECT count(*) FROM telemetry_events")
            windows = await conn.fetchval(
                "SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_5m"
            )
            return events, windows
        finally:
            await conn.close()

    async def settled(self, expected_events: int, expected_window_count: int, timeout_s: float = 120) -> None:
        async def done() -> bool:
            try:
                return await self.counts() == (expected_events, expected_window_count)
            except (OSError, asyncpg.PostgresError):
                return False

        await wait_for(
            done,
            timeout_s,
            interval_s=1.0,
            what=f"{expected_events} raw rows and windows of {expected_window_count}",
        )

    async def caught_up(self, timeout_s: float = 60) -> None:
        """V5: the worker's committed offsets reach the end offsets of the events topic."""
        ends = await end_offsets(self.bootstrap, self.topic_events)

        async def done() -> bool:
            committed = await committed_offsets(self.bootstrap, self.app_id, self.topic_events, list(ends))
            return all(committed[p] >= ends[p] for p in ends)

        await wait_for(done, timeout_s, interval_s=1.0, what="committed offsets at the end offsets")


def decode_all(records) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


@contextlib.contextmanager
def timer():
    started = time.monotonic()
    result = {}
    yield result
    result["seconds"] = time.monotonic() - started
