"""The fault battery's machinery: a paced background producer (data flows while a fault is injected),
the V2 sampler, progress probes (V6), the invariant checks once the stream is idle (V1–V5), the API's
readiness for V7, and one JSON report per scenario in `test-output/faults/`.

The expected outcome always comes from `tests/pipeline_model.py` (SPEC rules, written independently
of the worker); nothing here asks the worker what it thinks happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from devkit import kafka_io
from devkit.deployment import Deployment
from devkit.epoch import to_us
from devkit.paths import TEST_OUTPUT
from devkit.processes import ChildProcess
from devkit.waiting import wait_for
from telemetrypulse.names import internal_names
from telemetrypulse.state_records import record_fence
from tests.integration.test_pipeline_exact import assert_matches_model
from tests.pipeline_model import Dataset, Expected, Message, expected_outcome

log = logging.getLogger(__name__)

REPORTS = TEST_OUTPUT / "faults"
PROGRESS_LIMIT_S = 60.0  # V6


# --------------------------------------------------------------------------------------------- producing


@dataclass
class Item:
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # explicit only for poison heads; otherwise the key decides


class PacedProducer:
    """Produces a list of messages in chunks with pauses, in the background, in order.

    One long-lived idempotent producer with a request timeout longer than any outage the battery
    causes: a send that spans a broker restart is retried by aiokafka and de-duplicated by the broker,
    so the topic holds each message once and per key in order (what the model assumes).
    """

    def __init__(self, bootstrap: str, topic: str, items: list[Item], chunks: int, pause_s: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.items = items
        self.chunk = max(1, math.ceil(len(items) / chunks))
        self.pause_s = pause_s
        self.sent = 0
        self.task: asyncio.Task | None = None
        self.finished_at: float | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="paced-producer")

    async def _run(self) -> None:
        async with kafka_io.OrderedProducer(
            self.bootstrap, request_timeout_ms=90_000, max_request_size=8 * 1024 * 1024
        ) as producer:
            for first in range(0, len(self.items), self.chunk):
                part = self.items[first : first + self.chunk]
                await producer.send_all(self.topic, [(i.key, i.value, i.partition) for i in part])
                self.sent += len(part)
                if self.sent < len(self.items):
                    await asyncio.sleep(self.pause_s)
        self.finished_at = time.monotonic()

    @property
    def fraction(self) -> float:
        return self.sent / len(self.items) if self.items else 1.0

    async def reached(self, fraction: float) -> None:
        while self.fraction < fraction:
            self._raise_if_failed()
            await asyncio.sleep(0.05)

    def _raise_if_failed(self) -> None:
        if self.task is not None and self.task.done() and self.task.exception() is not None:
            raise self.task.exception()

    async def done(self) -> None:
        assert self.task is not None
        await self.task

    async def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


# --------------------------------------------------------------------------------------------- V2 sampling


class WindowSampler:
    """V2 during the run: every ~0.5 s, no window count in PostgreSQL is above the model's final count
    (and no window exists that the model does not have). Outages just skip samples."""

    def __init__(self, dsn: str, expected: Expected, interval_s: float = 0.5) -> None:
        self.dsn = dsn
        self.want = {key: agg["count"] for key, agg in expected.windows.items()}
        self.interval_s = interval_s
        self.samples = 0
        self.failed_samples = 0
        self.violations: list[str] = []
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="window-sampler")

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.dsn, timeout=3)
                    await self._sample(conn)
                    self.samples += 1
                except asyncio.CancelledError:
                    raise
                except Exception:  # outages, and asyncpg's state errors after a timeout mid-query
                    self.failed_samples += 1
                    if conn is not None:
                        conn.terminate()
                    conn = None
                await asyncio.sleep(self.interval_s)
        finally:
            if conn is not None:
                conn.terminate()

    async def _sample(self, conn: asyncpg.Connection) -> None:
        for size, table in ((300, "telemetry_device_agg_5m"), (900, "telemetry_device_agg_15m")):
            try:
                rows = await conn.fetch(
                    f"SELECT device_id, sensor_type, window_start, count_events FROM {table}", timeout=5
                )
            except asyncpg.UndefinedTableError:
                return  # not migrated yet
            for r in rows:
                key = (size, r["device_id"], r["sensor_type"], to_us(r["window_start"]))
                want = self.want.get(key)
                if (want is None or r["count_events"] > want) and len(self.violations) < 50:
                    self.violations.append(f"{key}: count {r['count_events']} > expected {want}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# --------------------------------------------------------------------------------------------- offsets


class Offsets:
    """End offsets and the group's committed offsets; a fresh client whenever the broker went away."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await asyncio.wait_for(admin.start(), 10)
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await asyncio.wait_for(consumer.start(), 10)
            self._consumer = consumer
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (admin, consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop(), 5
                    )

    async def read(self, topic: str, partitions: int) -> tuple[dict[int, int], dict[int, int]]:
        """(committed, end) per partition; raises on any broker trouble (after dropping the clients)."""
        try:
            admin, consumer = await self._clients()
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            ends = await asyncio.wait_for(consumer.end_offsets(tps), 10)
            committed = await asyncio.wait_for(admin.list_consumer_group_offsets(self.group), 10)
        except Exception:
            await self.close()
            raise
        return (
            {tp.partition: (committed[tp].offset if tp in committed else 0) for tp in tps},
            {tp.partition: ends[tp] for tp in tps},
        )


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Fault:
    label: str
    injected_at: float  # monotonic
    over_at: float | None = None  # when the fault ended (restart issued, broker back), if it has an end
    progress_s: float | None = None  # from over_at (or injected_at) until every partition and the sink moved
    error: str | None = None


@dataclass
class FaultRun:
    """One scenario: stream `dataset` paced into the pipeline, sample V2, time V6 per fault, verify."""

    pipe: Deployment
    dataset: Dataset
    name: str
    chunks: int = 24
    pause_s: float = 1.0
    items: list[Item] | None = None  # default: the dataset's messages, keyed by device
    already_produced: int = 0  # messages of `dataset` produced before this run (a later phase)
    expected: Expected = field(init=False)
    faults: list[Fault] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.expected = expected_outcome(self.dataset, self.pipe.grace_s)
        if self.items is None:
            self.items = [Item(m.key, m.value) for m in self.dataset.messages]
        self.producer = PacedProducer(
            self.pipe.bootstrap, self.pipe.topic_events, self.items, self.chunks, self.pause_s
        )
        self.sampler = WindowSampler(self.pipe.dsn, self.expected)
        self.offsets = Offsets(self.pipe.bootstrap, self.pipe.names.worker_group)
        self.started = time.monotonic()

    # lifecycle -----------------------------------------------------------------------------------
    async def __aenter__(self) -> FaultRun:
        self.started = time.monotonic()
        self.sampler.start()
        self.producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        # Cleanup must never mask the scenario's own failure.
        with contextlib.suppress(Exception):
            await self.producer.cancel()
        with contextlib.suppress(Exception):
            await self.sampler.stop()
        await self.offsets.close()

    async def reached(self, fraction: float) -> None:
        await self.producer.reached(fraction)

    # V6 --------------------------------------------------------------------------------------------
    def fault(self, label: str) -> Fault:
        f = Fault(label, time.monotonic())
        self.faults.append(f)
        log.info("fault %s injected at %.1fs", label, f.injected_at - self.started)
        return f

    async def raw_rows(self) -> int:
        conn = await asyncpg.connect(self.pipe.dsn, timeout=3)
        try:
            return await conn.fetchval("SELECT count(*) FROM telemetry_events", timeout=5)
        finally:
            await conn.close()

    async def _snapshot(self) -> tuple[dict[int, int], int | None]:
        deadline = time.monotonic() + 30
        while True:
            try:
                committed, _ = await self.offsets.read(self.pipe.topic_events, self.pipe.partitions)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        while True:
            try:
                return committed, await self.raw_rows()
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    return committed, None
                await asyncio.sleep(0.5)

    async def progress(
        self, fault: Fault, baseline: tuple[dict[int, int], int | None] | None = None
    ) -> float:
        """V6: from the end of the fault, every events partition commits past where it stood (or is at its
        end) and the sink adds raw rows (or has them all), within PROGRESS_LIMIT_S."""
        fault.over_at = fault.over_at or time.monotonic()
        committed0, rows0 = baseline or await self._snapshot()
        total_raw = len(self.expected.raw)
        deadline = fault.over_at + PROGRESS_LIMIT_S
        last = "no sample yet"
        while time.monotonic() < deadline:
            try:
                committed, ends = await self.offsets.read(self.pipe.topic_events, self.pipe.partitions)
                rows = await self.raw_rows()
                stuck = [p for p in ends if not (committed[p] > committed0[p] or committed[p] >= ends[p])]
                sink_moved = rows0 is None or rows > rows0 or rows >= total_raw
                if not stuck and sink_moved:
                    fault.progress_s = time.monotonic() - fault.over_at
                    log.info("fault %s: progress after %.1fs", fault.label, fault.progress_s)
                    return fault.progress_s
                last = f"partitions without progress {stuck}, raw rows {rows0} -> {rows}"
            except Exception as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.5)
        fault.error = f"no progress within {PROGRESS_LIMIT_S:.0f}s: {last}"
        raise AssertionError(f"V6 {fault.label}: {fault.error}")

    async def kill_and_restart(self, process: ChildProcess, label: str) -> Fault:
        """The fault `label`: SIGKILL a process of the pipeline (a worker, the sink) and start it again at once;
        then V6, from the restart."""
        fault = self.fault(label)
        process.kill()
        process.start()
        await self.progress(fault)
        return fault

    async def baseline(self) -> tuple[dict[int, int], int | None]:
        return await self._snapshot()

    # after the stream --------------------------------------------------------------------------------
    async def settle(self, timeout_s: float = 150) -> None:
        await self.producer.done()
        want = (
            len(self.expected.raw),
            sum(a["count"] for (s, *_), a in self.expected.windows.items() if s == 300),
        )

        async def done():
            try:
                return await self.pipe.counts() == want
            except (OSError, asyncpg.PostgresError):
                return False

        try:
            await wait_for(done, timeout_s, interval_s=1.0, what="the sink to settle")
        except TimeoutError:
            raise AssertionError(
                f"not settled after {timeout_s}s: (raw rows, sum of 5m counts) = {await self.pipe.counts()}, "
                f"the model says {want}; {await self.missing_rows()}"
            ) from None

    async def missing_rows(self) -> str:
        """Where the raw rows PostgreSQL lacks came from: source partition -> offset ranges (for the diagnosis)."""
        conn = await asyncpg.connect(self.pipe.dsn)
        try:
            stored = {
                (r["device_id"], str(r["event_id"]))
                for r in await conn.fetch("SELECT device_id, event_id FROM telemetry_events")
            }
        finally:
            await conn.close()
        missing: dict[int, list[int]] = {}
        for record in await kafka_io.read_topic(self.pipe.bootstrap, self.pipe.topic_events):
            try:
                event = orjson.loads(record.value)
                key = (event["device_id"], event["event_id"].lower())
            except Exception:
                continue
            if key in self.expected.raw and key not in stored:
                missing.setdefault(record.partition, []).append(record.offset)
        ranges = {}
        for partition, offsets in sorted(missing.items()):
            spans, start = [], None
            for previous, offset in zip([None, *offsets], offsets, strict=False):
                if start is None:
                    start = offset
                elif offset != previous + 1:
                    spans.append(f"{start}-{previous}")
                    start = offset
            spans.append(f"{start}-{offsets[-1]}")
            ranges[partition] = f"{len(offsets)} rows at offsets {', '.join(spans[:20])}"
        return f"missing raw rows by source partition: {ranges or 'none'}"

    async def caught_up(self, timeout_s: float = 60) -> None:
        """V5: committed offsets of the events topic (the worker's group) and of the changes topic (the sink's
        group, which commits to Kafka after each PostgreSQL transaction) reach the end offsets."""
        changes = self.pipe.names.changes_topic
        last = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                behind = {}
                committed, ends = await self.offsets.read(self.pipe.topic_events, self.pipe.partitions)
                behind.update({("events", p): ends[p] - committed[p] for p in ends if committed[p] < ends[p]})
                # The sink's positions are the ones it keeps in PostgreSQL, with its writes.
                _, ends = await self.offsets.read(changes, self.pipe.partitions)
                positions = await self.sink_positions()
                behind.update(
                    {
                        ("changes", p): ends[p] - positions.get(p, 0)
                        for p in ends
                        if positions.get(p, 0) < ends[p]
                    }
                )
                if not behind:
                    return
                last = behind
            except Exception as e:
                last = f"{type(e).__name__}: {e}"
            await asyncio.sleep(1.0)
        raise AssertionError(f"V5: committed offsets not at the end offsets after {timeout_s}s: {last}")

    async def sink_positions(self) -> dict[int, int]:
        conn = await asyncpg.connect(self.pipe.dsn, timeout=3)
        try:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM sink_offsets WHERE topic = $1",
                self.pipe.names.changes_topic,
            )
        finally:
            await conn.close()
        return {r["partition"]: r["next_offset"] for r in rows}

    async def verify(self) -> dict:
        """V1–V5 once the stream is idle (each message produced once); returns what was observed."""
        await self.settle()
        await self.caught_up()
        await self.sampler.stop()
        # V1, V2 (final), V3 (alert ids = episodes; the topic holds each (id, status)); DLQ per offset.
        await assert_matches_model(self.pipe, self.dataset, self.expected)
        assert not self.sampler.violations, f"V2 sampled: counts above the model: {self.sampler.violations}"
        assert self.sampler.samples > 0

        # V3: duplicates on the alerts topic are allowed (at-least-once; consumers dedupe by alert_id) —
        # counted, not hidden.
        alerts = kafka_io.json_values(await kafka_io.read_topic(self.pipe.bootstrap, self.pipe.topic_alerts))
        per = Counter((a["alert_id"], a["status"]) for a in alerts)
        duplicates = {f"{k[0]}:{k[1]}": n for k, n in per.items() if n > 1}

        # V4: produced = accepted + duplicates + late + DLQ, counted in messages. Each term is observed where
        # the pipeline leaves it — accepted readings are raw rows with late = false, too-late readings raw rows
        # with late = true, dead letters distinct source offsets on the DLQ topic — and must equal the model's.
        # What leaves no row by design (SPEC §3) — duplicates, and re-sends of a too-late reading already stored —
        # is the model's count; since every observed term matches, nothing can hide in it.
        conn = await asyncpg.connect(self.pipe.dsn)
        try:
            accepted = await conn.fetchval("SELECT count(*) FROM telemetry_events WHERE NOT late")
            late_rows = await conn.fetchval("SELECT count(*) FROM telemetry_events WHERE late")
        finally:
            await conn.close()
        dead = kafka_io.json_values(await kafka_io.read_topic(self.pipe.bootstrap, self.pipe.topic_dlq))
        dlq = len({(d["source_partition"], d["source_offset"]) for d in dead})
        produced = self.already_produced + len(self.items)
        model_late_rows = len(self.expected.raw) - self.expected.accepted
        v4 = {
            "produced": produced,
            "accepted": accepted,
            "duplicates": self.expected.duplicates,
            "late": self.expected.late,
            "late_rows": late_rows,
            "dlq": dlq,
            "dlq_messages": len(dead),
        }
        assert (accepted, late_rows, dlq) == (
            self.expected.accepted,
            model_late_rows,
            self.expected.invalid,
        ), f"V4 terms differ from the model: {v4}"
        assert accepted + v4["duplicates"] + v4["late"] + dlq == produced, f"V4 does not add up: {v4}"

        for f in self.faults:
            assert f.progress_s is not None, f"V6 {f.label}: progress never measured ({f.error})"
            assert f.progress_s <= PROGRESS_LIMIT_S

        return {
            "v4": v4,
            "alert_messages": len(alerts),
            "alert_duplicates": duplicates,
            "v2_samples": self.sampler.samples,
            "v2_samples_skipped": self.sampler.failed_samples,
        }

    def report(self, extra: dict | None = None) -> dict:
        data = {
            "scenario": self.name,
            "seconds": round(time.monotonic() - self.started, 1),
            "messages": len(self.items),
            "faults": [
                {
                    "label": f.label,
                    "at_s": round(f.injected_at - self.started, 1),
                    "lasted_s": round(f.over_at - f.injected_at, 1) if f.over_at else None,
                    "progress_s": None if f.progress_s is None else round(f.progress_s, 1),
                    "error": f.error,
                }
                for f in self.faults
            ],
            **self.notes,
            **(extra or {}),
        }
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / f"{self.name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        return data


def dataset_items(dataset: Dataset) -> list[Item]:
    return [Item(m.key, m.value) for m in dataset.messages]


def with_messages(dataset: Dataset, messages: list[Message]) -> Dataset:
    return Dataset(messages, dataset.devices)


# --------------------------------------------------------------------------------------------- changelog


async def changelog_regressions(bootstrap: str, app_id: str) -> dict:
    """Device-state changelog records whose fence is LOWER than an earlier record of the same key (what a
    zombie writes after the new owner moved on), and the keys whose last record is such a one: a restore from
    the changelog — or a compacted changelog — brings stale state back for those."""
    topic = internal_names(app_id).partition_state_changelog
    best: dict[bytes, int] = {}
    last: dict[bytes, int] = {}
    regressions = 0
    for record in await kafka_io.read_topic(bootstrap, topic, timeout_s=10):
        if record.value is None:
            continue
        fence = record_fence(record.value)
        if fence < best.get(record.key, -1):
            regressions += 1
        best[record.key] = max(best.get(record.key, -1), fence)
        last[record.key] = fence
    return {
        "lower_fence_records": regressions,
        "stale_last_keys": sorted(k.decode() for k in last if last[k] < best[k]),
    }


# --------------------------------------------------------------------------------------------- logs


def _log_table_rows(block: str) -> list[list[str]]:
    """Rows of the first ASCII table Faust printed in `block` ("〃" repeats the first cell of the row above)."""
    rows: list[list[str]] = []
    for line in block.splitlines():
        if line.startswith("+"):
            continue
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "〃" and rows:
            cells[0] = rows[-1][0]
        rows.append(cells)
    return rows[1:]  # without the header


def recovery_reads(log_text: str, changelog: str) -> list[dict[int, tuple[int, int]]]:
    """Per Faust recovery in a worker log: partition of `changelog` (the partition-state table's) -> (highwater, start
    offset) of its ACTIVE partitions. -1 as start means read from the beginning; a standby copy starts near the highwater."""
    result = []
    for block in log_text.split("Highwater for active changelog partitions:")[1:]:
        highs = {int(r[1]): int(r[2]) for r in _log_table_rows(block) if r[0].endswith(changelog)}
        starts_block = block.split("active offsets at start of reading:", 1)
        starts = (
            {int(r[1]): int(r[2]) for r in _log_table_rows(starts_block[1]) if r[0].endswith(changelog)}
            if len(starts_block) == 2
            else {}
        )
        result.append({p: (high, starts.get(p, -1)) for p, high in highs.items()})
    return result


def assigned_input_partitions(log_text: str, topic: str) -> set[int]:
    """The partitions of `topic` in the worker's latest assignment (Faust's "Setting newly assigned partitions")."""
    blocks = log_text.split("Setting newly assigned partitions")
    if len(blocks) < 2:
        return set()
    for row in _log_table_rows(blocks[-1]):
        if row[0] == topic:
            found: set[int] = set()
            for part in row[1].strip("{}").split(","):
                low, _, high = part.strip().partition("-")
                found.update(range(int(low), int(high or low) + 1))
            return found
    return set()


# --------------------------------------------------------------------------------------------- the API (V7)


async def ready_status(url: str) -> int | None:
    """The status of `GET /health/ready`, None when the API does not answer."""
    try:
        async with httpx.AsyncClient(timeout=8) as client:
            return (await client.get(f"{url}/health/ready")).status_code
    except httpx.HTTPError:
        return None
