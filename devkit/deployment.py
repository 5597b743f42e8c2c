"""One isolated deployment of the pipeline on the shared stack — its own APP_ID (so its own consumer groups and
internal topics), its own public topics, database and state folders — and the processes started on it. Tests and
benchmark passes of several people run side by side on one Kafka and one PostgreSQL without meeting."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import asyncpg

from devkit import kafka_io
from devkit.databases import create_database, drop_database, window_sums
from devkit.paths import ROOT
from devkit.ports import free_port
from devkit.processes import (
    NOTIFIER_READY,
    SINK_READY,
    WORKER_READY,
    ChildProcess,
    api_process,
    child_env,
    stop_together,
    telemetrypulse_command,
    worker_command,
)
from devkit.waiting import wait_for
from telemetrypulse.names import internal_names

# What a deployment sets itself; the rest of the environment passes through (WORKER_*/SINK_* tunables, say).
OWN_VARIABLES = ("KAFKA_", "TOPIC_", "APP_ID", "DATA_DIR", "DATABASE_URL", "WINDOW_")


class Deployment:
    """`kind` and `label` name everything it creates (`tp-test-…`, `tp-bench-keepup-…`). Give `dsn` to use a database
    made elsewhere (then not dropped), `events_topic` to read another deployment's events (then not deleted), `tmp`
    for the state folders (then not removed). `setup()` creates the rest, `close()` removes what it created.
    Process logs go to `logs/<APP_ID>-<process>-<n>.log` (every test's kept), or with `fresh_logs` to
    `logs/<label>-<process>-<n>.log`, rewritten by each run (the bench's)."""

    def __init__(
        self,
        stack: dict[str, str],
        *,
        logs: Path,
        kind: str = "test",
        label: str = "",
        partitions: int = 4,
        grace_s: int = 300,
        dsn: str | None = None,
        events_topic: str | None = None,
        tmp: Path | None = None,
        drop_env: tuple[str, ...] = (),
        fresh_logs: bool = False,
        **process_env: str,
    ) -> None:
        tag = uuid.uuid4().hex[:10]
        named = f"{label}-{tag}" if label else tag
        self.stack = stack
        self.kind = kind
        self.label = label or kind
        self.bootstrap = stack["KAFKA_BOOTSTRAP_SERVERS"]
        self.partitions = partitions
        self.grace_s = grace_s
        self.app_id = f"tp-{kind}-{named}"
        self.names = internal_names(self.app_id)
        self.shared_events = events_topic is not None
        self.topic_events = events_topic or f"{kind}-{named}.events"
        self.topic_alerts = f"{kind}-{named}.alerts"
        self.topic_dlq = f"{kind}-{named}.dlq"
        self.dsn = dsn or ""
        self.db_name = ""  # set when setup() created the database: then close() drops it
        self.own_tmp = tmp is None
        self.tmp = tmp or Path(tempfile.mkdtemp(prefix=f"tp-{kind}-{self.label}-"))
        self.logs = logs
        self.log_stem = self.label if fresh_logs else self.app_id
        self.fresh_logs = fresh_logs
        self.drop_env = drop_env
        self.process_env = process_env
        self.workers: list[ChildProcess] = []
        self.sinks: list[ChildProcess] = []
        self.others: list[ChildProcess] = []  # notifiers, APIs

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def public_topics(self) -> list[str]:
        """The public topics this deployment owns (not another's events topic it reads)."""
        return [*([] if self.shared_events else [self.topic_events]), self.topic_alerts, self.topic_dlq]

    async def setup(self, *, topics: bool = True) -> Deployment:
        if not self.dsn:
            self.db_name, self.dsn = await create_database(self.stack["DATABASE_URL"], f"tp_{self.kind}")
        if topics:
            await kafka_io.create_topics(self.bootstrap, self.public_topics, self.partitions)
        return self

    def stop_all(self, timeout: float = 30) -> None:
        """Stop every process: the workers (and notifiers, APIs) first, so that a worker's last outputs are on the
        changes topic before the sinks stop."""
        stop_together([*self.workers, *self.others], timeout)
        stop_together(self.sinks, timeout)

    async def close(self, keep: bool = False) -> None:
        """Stop every process; unless `keep`, delete the topics (every internal one, found by the APP_ID prefix: the
        engine's set of tables may change), the database and the state folders this deployment created."""
        self.stop_all()
        if keep:
            return
        internal = await kafka_io.topics_with_prefix(self.bootstrap, self.names.prefix)
        await kafka_io.delete_topics(self.bootstrap, [*self.public_topics, *internal])
        if self.db_name:
            await drop_database(self.stack["DATABASE_URL"], self.db_name)
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- processes
    def data_dir(self, index: int = 0) -> Path:
        return self.tmp / f"worker-{index}"

    def wipe_state(self, index: int = 0) -> None:
        """A worker's state folder gone, as on a new host: its state comes back from the changelog."""
        shutil.rmtree(self.data_dir(index), ignore_errors=True)

    def env(self, index: int = 0, **extra: str) -> dict[str, str]:
        env = child_env(
            OWN_VARIABLES + self.drop_env,
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            DATABASE_URL=self.dsn,
            APP_ID=self.app_id,
            TOPIC_EVENTS=self.topic_events,
            TOPIC_ALERTS=self.topic_alerts,
            TOPIC_DLQ=self.topic_dlq,
            TOPIC_PARTITIONS=str(self.partitions),
            WINDOW_GRACE_S=str(self.grace_s),
            DATA_DIR=str(self.data_dir(index)),
            WORKER_WEB_PORT="0",
            # The children run the code of this tree (a clean worktree, say), whatever an editable install points at.
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        )
        env.update(self.process_env)
        env.update(extra)
        return env

    def _log(self, role: str, index: int) -> Path:
        return self.logs / f"{self.log_stem}-{role}-{index}.log"

    def _child(self, role: str, index: int, argv: list[str], env: dict[str, str], ready) -> ChildProcess:
        return ChildProcess(
            f"{role}-{index}", argv, env, self._log(role, index), ready=ready, fresh_log=self.fresh_logs
        )

    def add_worker(self, *, with_sink: bool = True, **extra: str) -> ChildProcess:
        """A stream worker of this deployment (not started). Every deployment runs a PostgreSQL sink: unless
        `with_sink` is false, the first sink is added and started here when none runs."""
        if with_sink and not any(sink.alive() for sink in self.sinks):
            (self.sinks[0] if self.sinks else self.add_sink()).start()
        index = len(self.workers)
        worker = self._child("worker", index, worker_command(), self.env(index, **extra), WORKER_READY)
        self.workers.append(worker)
        return worker

    def add_sink(self, *, command: list[str] | None = None, **extra: str) -> ChildProcess:
        """A `telemetrypulse sink` process of this deployment (group `<APP_ID>-sink`), not started."""
        index = len(self.sinks)
        env = self.env(index, **{"SINK_WEB_PORT": "0", **extra})
        sink = self._child("sink", index, command or telemetrypulse_command("sink"), env, SINK_READY)
        self.sinks.append(sink)
        return sink

    def add_notifier(self, **extra: str) -> ChildProcess:
        """`telemetrypulse notify` of this deployment (group `<APP_ID>-notifier`), not started."""
        index = sum(1 for p in self.others if p.name.startswith("notifier"))
        env = self.env(index, **{"NOTIFIER_WEB_PORT": "0", **extra})
        notifier = self._child("notifier", index, telemetrypulse_command("notify"), env, NOTIFIER_READY)
        self.others.append(notifier)
        return notifier

    def add_api(self, *, ready_path: str = "/health/ready", **extra: str) -> ChildProcess:
        """`telemetrypulse api` of this deployment on a free port (its `url`), not started."""
        index = sum(1 for p in self.others if p.name.startswith("api"))
        api = api_process(
            self.env(index, **extra), self._log("api", index), free_port(), ready_path=ready_path
        )
        self.others.append(api)
        return api

    # ------------------------------------------------------------------------------------------- data
    async def produce(self, messages: list[kafka_io.Message]) -> None:
        await kafka_io.produce(self.bootstrap, self.topic_events, messages)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def db_snapshot(self) -> dict:
        conn = await self.connect()
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
        """(raw rows, events counted in the 5-minute device windows)."""
        conn = await self.connect()
        try:
            events = await conn.fetchval("SELECT count(*) FROM telemetry_events")
            w5, _ = await window_sums(conn)
            return events, w5
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
        """The worker's committed offsets reach the end offsets of the events topic."""
        ends = await kafka_io.end_offsets(self.bootstrap, self.topic_events)

        async def done() -> bool:
            committed = await kafka_io.committed_offsets(
                self.bootstrap, self.names.worker_group, self.topic_events, list(ends)
            )
            return all(committed[p] >= ends[p] for p in ends)

        await wait_for(done, timeout_s, interval_s=1.0, what="committed offsets at the end offsets")
