"""`python -m bench.sink_alone`: the sink process alone — raw rows/s into PostgreSQL from a pre-produced changes
topic, with the sink's CPU and its PostgreSQL backend's CPU.

Two shapes of worker change records, ~1,000,000 raw rows each (`--rows`), 4,000 events per worker batch:
- `45`: 45 devices, every (device, sensor) every second: per record 4,000 raw rows, ~360 window rows, 180 latest;
- `12500`: 12,500 devices, every (device, sensor) every 10 s: per batch 4,000 raw rows, ~8,000 window rows and
  4,000 latest values (cut into two records under the 900 KB limit, as the worker cuts them).
The records are built with `changes.encode` and produced once per shape into a fresh topic; each run then gets a
fresh migrated database and a real `telemetrypulse sink` process.

Timing is PostgreSQL's own: a statement trigger on `sink_offsets` (installed in the bench database only) records
each transaction's start (`now()`) and end (`clock_timestamp()`, the positions are its last statement), so a run
is timed from the start of the first write transaction to the end of the last. Sink CPU is the process's user +
system time from its partition assignment to the last commit; PostgreSQL CPU is the sink's backend over its life.
After each run the tables are checked against the generator: every raw row, every window key with its final
count and version, every latest value's version. Medians over `--runs` runs. The machine may be shared: see the
CPU columns and repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import numpy as np
import psutil

from bench import harness
from devkit import kafka_io
from devkit.databases import create_database, drop_database
from devkit.processes import ChildProcess, child_env, log_says, telemetrypulse_command
from telemetrypulse import changes, db
from telemetrypulse.changes import LATEST_ROW, RAW_ROW, WINDOW_ROW
from telemetrypulse.names import internal_names

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
EVENTS_PER_BATCH = 4_000
PARTITIONS = 6
SHAPES = {"45": (45, 1_000_000), "12500": (12_500, 10_000_000)}  # devices, µs between a pair's readings
WINDOW_SIZES_S = (300, 900)

TIMING_SQL = """
CREATE TABLE bench_transactions (started timestamptz NOT NULL, ended timestamptz NOT NULL);
CREATE FUNCTION bench_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_transactions VALUES (now(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER bench_transaction AFTER INSERT OR UPDATE ON sink_offsets
    FOR EACH STATEMENT EXECUTE FUNCTION bench_transaction();
"""


@dataclass
class Dataset:
    """The records of one shape and what PostgreSQL must hold once they are written."""

    devices: int
    records: list[tuple[int, bytes]] = field(default_factory=list)  # (partition, value)
    raw_rows: int = 0
    window_rows: int = 0  # rows in the records (before coalescing)
    latest_rows: int = 0
    # per window size: (distinct keys, sum of final counts, sum of final versions)
    windows: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    latest: tuple[int, int] = (0, 0)  # distinct (device, sensor), sum of final versions


def build_dataset(devices: int, interval_us: int, total_rows: int, seed: int = 7) -> Dataset:
    """A time-ordered stream of readings — every (device, sensor) pair once per `interval_us`, pairs spread over
    the interval — cut into worker batches of 4,000; each batch's windows (whole aggregates, running across
    batches) and latest values, versioned by the event's position in the stream."""
    rng = np.random.default_rng(seed)
    pairs = devices * 4
    dims_all = [(f"dev-{d:05d}", f"site-{d % 7}", f"zone-{d % 23}") for d in range(devices)]
    data = Dataset(devices)
    states = {size_s: WindowState(total_rows) for size_s in WINDOW_SIZES_S}
    final_latest: dict[int, int] = {}
    for batch_no, first in enumerate(range(0, total_rows, EVENTS_PER_BATCH)):
        index = np.arange(first, min(first + EVENTS_PER_BATCH, total_rows), dtype=np.int64)
        pair = index % pairs
        ts = T0 + (index // pairs) * interval_us + (pair * interval_us) // pairs
        device, sensor = pair // 4, (pair % 4).astype(np.uint8)
        value = np.round(rng.normal(500, 150, len(index)), 2)
        used, local_dim = np.unique(device, return_inverse=True)
        dims = [dims_all[d] for d in used.tolist()]
        raw = np.zeros(len(index), RAW_ROW)
        raw["dim"] = local_dim
        raw["event_id"] = np.frombuffer(rng.bytes(16 * len(index)), "V16")
        raw["sensor"] = sensor
        raw["unit_given"] = True
        raw["value"] = value
        raw["ts_us"] = ts
        raw["ingest_us"] = ts + 1_000
        parts = []
        for size_s in WINDOW_SIZES_S:
            start = ts - ts % (size_s * 1_000_000)
            key = pair * 2**32 + (start - T0) // (size_s * 1_000_000)
            uniq, inverse = np.unique(key, return_inverse=True)
            state = states[size_s]
            ids = state.ids_of(uniq)[inverse]
            fresh = state.count[ids] == 0
            # A key repeated in the batch: the last assignment stays, so assign backwards (the first event).
            state.first[ids[fresh][::-1]] = ts[fresh][::-1]
            np.add.at(state.count, ids, 1)
            np.add.at(state.sum, ids, value)
            np.add.at(state.sum_sq, ids, value * value)
            np.minimum.at(state.min, ids, value)
            np.maximum.at(state.max, ids, value)
            last = np.zeros(len(uniq), np.int64)
            np.maximum.at(last, inverse, np.arange(len(index)))
            group = ids[last]
            state.version[group] = index[last]
            rows = np.zeros(len(uniq), WINDOW_ROW)
            for name, column in (
                ("dim", local_dim[last]), ("sensor", sensor[last]), ("size_s", size_s), ("start_us", start[last]),
                ("count", state.count[group]), ("sum", state.sum[group]), ("min", state.min[group]),
                ("max", state.max[group]), ("sum_sq", state.sum_sq[group]), ("first_us", state.first[group]),
                ("last_us", ts[last]), ("version", index[last]),
            ):  # fmt: skip
                rows[name] = column
            parts.append(rows)
        windows = np.concatenate(parts)
        latest_pos = np.zeros(pairs, np.int64) - 1
        latest_pos[pair] = np.arange(len(index))  # the last event of each pair in the batch wins
        chosen = latest_pos[latest_pos >= 0]
        latest = np.zeros(len(chosen), LATEST_ROW)
        for name, column in (
            ("dim", local_dim[chosen]), ("sensor", sensor[chosen]), ("value", value[chosen]),
            ("ts_us", ts[chosen]), ("event_id", raw["event_id"][chosen]), ("version", index[chosen]),
        ):  # fmt: skip
            latest[name] = column
        for p, version in zip(pair[chosen].tolist(), index[chosen].tolist(), strict=True):
            final_latest[p] = version
        partition = batch_no % PARTITIONS
        for value_bytes in changes.encode(
            partition=partition,
            first_offset=int(index[0]),
            last_offset=int(index[-1]),
            dims=dims,
            raw=raw,
            windows=windows,
            latest=latest,
            alerts=[],
        ):
            data.records.append((partition, value_bytes))
        data.raw_rows += len(raw)
        data.window_rows += len(windows)
        data.latest_rows += len(latest)
    data.windows = {size_s: state.totals() for size_s, state in states.items()}
    data.latest = (len(final_latest), sum(final_latest.values()))
    return data


class WindowState:
    """Running aggregates of every window key of one size, in dense arrays (a worker's state, in bulk)."""

    def __init__(self, capacity: int) -> None:
        self._ids: dict[int, int] = {}
        self.count = np.zeros(capacity, np.int64)
        self.sum = np.zeros(capacity)
        self.sum_sq = np.zeros(capacity)
        self.min = np.full(capacity, np.inf)
        self.max = np.full(capacity, -np.inf)
        self.first = np.zeros(capacity, np.int64)
        self.version = np.zeros(capacity, np.int64)

    def ids_of(self, keys: np.ndarray) -> np.ndarray:
        ids = self._ids
        return np.fromiter((ids.setdefault(k, len(ids)) for k in keys.tolist()), np.int64, len(keys))

    def totals(self) -> tuple[int, int, int]:
        """(keys, sum of final counts, sum of final versions)."""
        n = len(self._ids)
        return n, int(self.count[:n].sum()), int(self.version[:n].sum())


async def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> float:
    began = time.monotonic()
    messages = [(None, value, partition) for partition, value in records]
    await kafka_io.produce(bootstrap, topic, messages, linger_ms=20, max_request_size=4 * 1024 * 1024)
    return time.monotonic() - began


@dataclass
class Run:
    seconds: float
    rows_per_s: float
    transactions: int
    sink_cpu_s: float
    postgres_cpu_s: float | None
    exact: bool
    problems: list[str]


async def one_run(
    stack: dict[str, str], app_id: str, data: Dataset, batch_max: int | None, label: str
) -> Run:
    name, dsn = await create_database(stack["DATABASE_URL"], f"tp_bench_sink{label}")
    log_path = harness.LOGS / f"sink-alone-{label}-{name}.log"
    sink: ChildProcess | None = None
    try:
        await db.migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(TIMING_SQL)
        finally:
            await conn.close()
        env = child_env(
            ("KAFKA_", "TOPIC_", "APP_ID", "SINK_"),
            KAFKA_BOOTSTRAP_SERVERS=stack["KAFKA_BOOTSTRAP_SERVERS"],
            DATABASE_URL=dsn,
            APP_ID=app_id,
            TOPIC_PARTITIONS=str(PARTITIONS),
            SINK_WEB_PORT="0",
        )
        if batch_max:
            env["SINK_BATCH_MAX_RECORDS"] = str(batch_max)
        assigned = log_says("INFO telemetrypulse.sink: assigned")
        sink = ChildProcess("sink", telemetrypulse_command("sink"), env, log_path, ready=assigned).start()
        process = psutil.Process(sink.pid)
        deadline = time.monotonic() + 120
        await sink.wait_ready(120, interval_s=0.01)
        cpu0 = sum(process.cpu_times()[:2])
        ends = await kafka_io.end_offsets(
            stack["KAFKA_BOOTSTRAP_SERVERS"], internal_names(app_id).changes_topic
        )
        conn = await asyncpg.connect(dsn)
        try:
            while True:
                rows = await conn.fetch("SELECT partition, next_offset FROM sink_offsets")
                positions = {r["partition"]: r["next_offset"] for r in rows}
                if all(positions.get(p, 0) >= end for p, end in ends.items() if end):
                    break
                if not sink.alive() or time.monotonic() > deadline + 600:
                    raise RuntimeError(f"sink stopped or stalled:\n{sink.current_log()[-3000:]}")
                await asyncio.sleep(0.05)
            cpu1 = sum(process.cpu_times()[:2])
            backend = await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'telemetrypulse-sink%'",
                name,
            )
            postgres_cpu = None
            if backend:
                try:
                    postgres_cpu = sum(psutil.Process(backend).cpu_times()[:2])
                except psutil.Error:
                    postgres_cpu = None
            started, ended, transactions = await conn.fetchrow(
                "SELECT min(started), max(ended), count(*) FROM bench_transactions"
            )
            problems = await check(conn, data)
        finally:
            await conn.close()
        seconds = (ended - started).total_seconds()
        return Run(
            seconds=seconds,
            rows_per_s=data.raw_rows / seconds,
            transactions=transactions,
            sink_cpu_s=cpu1 - cpu0,
            postgres_cpu_s=postgres_cpu,
            exact=not problems,
            problems=problems,
        )
    finally:
        if sink is not None:
            sink.stop(30)  # SIGTERM, by the pid started here
        await drop_database(stack["DATABASE_URL"], name)


async def check(conn: asyncpg.Connection, data: Dataset) -> list[str]:
    problems = []
    raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
    if raw != data.raw_rows:
        problems.append(f"raw rows {raw} != {data.raw_rows}")
    for size_s, table in ((300, "telemetry_device_agg_5m"), (900, "telemetry_device_agg_15m")):
        got = tuple(
            await conn.fetchrow(
                f"SELECT count(*), coalesce(sum(count_events), 0), coalesce(sum(version), 0) FROM {table}"
            )
        )
        if got != data.windows[size_s]:
            problems.append(f"{table} (rows, events, versions) {got} != {data.windows[size_s]}")
    got = tuple(
        await conn.fetchrow("SELECT count(*), coalesce(sum(version), 0) FROM telemetry_device_latest")
    )
    if got != data.latest:
        problems.append(f"telemetry_device_latest (rows, versions) {got} != {data.latest}")
    return problems


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


async def main_async(args: argparse.Namespace) -> int:
    stack = harness.bench_stack()
    report: dict[str, dict] = {}
    exact = True
    for shape in args.shapes:
        devices, interval_us = SHAPES[shape]
        began = time.monotonic()
        data = build_dataset(devices, interval_us, args.rows)
        sizes = [len(v) for _, v in data.records]
        print(
            f"[{shape} devices] {len(data.records)} records ({sum(sizes) / 2**20:.0f} MiB, largest"
            f" {max(sizes) / 1024:.0f} KiB): {data.raw_rows} raw, {data.window_rows} window,"
            f" {data.latest_rows} latest rows; built in {time.monotonic() - began:.1f}s",
            flush=True,
        )
        app_id = f"bench-sink-{shape}-{uuid.uuid4().hex[:8]}"
        topic = internal_names(app_id).changes_topic
        await kafka_io.create_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [topic], PARTITIONS)
        try:
            produce_s = await produce(stack["KAFKA_BOOTSTRAP_SERVERS"], topic, data.records)
            print(f"[{shape} devices] produced in {produce_s:.1f}s", flush=True)
            runs = []
            for n in range(args.runs):
                run = await one_run(stack, app_id, data, args.batch_max_records, f"{shape}-{n}")
                runs.append(run)
                exact &= run.exact
                print(
                    f"[{shape} devices] run {n + 1}: {run.rows_per_s:,.0f} raw rows/s ({run.seconds:.2f}s,"
                    f" {run.transactions} transactions), sink CPU {run.sink_cpu_s:.2f}s, PostgreSQL backend CPU"
                    f" {run.postgres_cpu_s if run.postgres_cpu_s is not None else float('nan'):.2f}s,"
                    f" {'exact' if run.exact else 'NOT EXACT: ' + '; '.join(run.problems)}",
                    flush=True,
                )
        finally:
            await kafka_io.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [topic])
        report[shape] = {
            "devices": devices,
            "records": len(data.records),
            "raw_rows": data.raw_rows,
            "window_rows": data.window_rows,
            "latest_rows": data.latest_rows,
            "median_rows_per_s": median([r.rows_per_s for r in runs]),
            "median_seconds": median([r.seconds for r in runs]),
            "median_sink_cpu_s": median([r.sink_cpu_s for r in runs]),
            "median_postgres_cpu_s": median([r.postgres_cpu_s for r in runs]),
            "runs": [r.__dict__ for r in runs],
        }
    lines = [
        "| shape | raw rows | records | raw rows/s (median) | s | sink CPU s | PostgreSQL backend CPU s | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for shape, r in report.items():
        each = ", ".join(f"{run['rows_per_s']:,.0f}" for run in r["runs"])
        lines.append(
            f"| {shape} devices | {r['raw_rows']:,} | {r['records']} | **{r['median_rows_per_s']:,.0f}** |"
            f" {r['median_seconds']:.2f} | {r['median_sink_cpu_s']:.2f} | {r['median_postgres_cpu_s'] or 0:.2f} |"
            f" {each} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
        out.with_suffix(".md").write_text(
            "# The sink alone (`python -m bench.sink_alone`)\n\n"
            + (__doc__ or "").split("\n\n", 1)[1]
            + "\n"
            + table
            + "\n"
        )
    return 0 if exact else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink_alone", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="raw rows per shape (default 1,000,000)")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per shape; medians are reported (default 3)"
    )
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["45", "12500"])
    parser.add_argument("--batch-max-records", type=int, help="SINK_BATCH_MAX_RECORDS for the sink")
    parser.add_argument(
        "--output",
        default=str(harness.RESULTS / "sink-alone"),
        help="writes <output>.md and .json ('' = none)",
    )
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
