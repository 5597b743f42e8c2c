"""The sink process (`telemetrypulse sink`) against the real Kafka and PostgreSQL.

Each test has its own changes topic and its own database, produces worker-shaped `ChangesRecord`s built with
`changes.encode`, runs the real process and stops it by pid. The expected PostgreSQL contents come from `World`,
which builds the batches the way the worker folds events and keeps, row by row in plain Python, what the tables
must hold (highest version per window and latest value, alerts by the open → resolved / peak-up rule).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import time
import uuid

import asyncpg
import httpx
import msgspec
import numpy as np
import pytest

from devkit import kafka_io
from devkit.deployment import Deployment
from devkit.epoch import iso, to_us
from devkit.paths import TEST_OUTPUT
from devkit.ports import free_port
from devkit.waiting import wait_for
from telemetrypulse import changes, db
from telemetrypulse.changes import LATEST_ROW, RAW_ROW, SENSORS, WINDOW_ROW, AlertRow
from telemetrypulse.models import SENSOR_UNITS
from telemetrypulse.sink.copy import encode_columns, encode_dims
from telemetrypulse.sink.writer import LATEST_COPY, RAW_COPY, WINDOW_COPY, rows_payload

pytestmark = pytest.mark.integration
ASSIGNED = "INFO telemetrypulse.sink: assigned"  # the sink's own line, not aiokafka's

PARTITIONS = 3
T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
US = "(extract(epoch from {}) * 1000000)::int8"  # exact: extract() is numeric


# --------------------------------------------------------------------------------------------- the process


class SinkDeployment(Deployment):
    """A deployment whose only topic is its changes topic: the sink processes started on it, and the records."""

    @property
    def topic(self) -> str:
        return self.names.changes_topic

    async def produce_changes(self, records: list[tuple[int, bytes]]) -> None:
        """(partition, value) in order, each partition's order kept."""
        messages = [(None, value, partition) for partition, value in records]
        await kafka_io.produce(self.bootstrap, self.topic, messages, linger_ms=0, max_request_size=2**21)

    async def positions(self) -> dict[int, int]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM sink_offsets WHERE consumer_group = $1 AND topic = $2",
                self.names.sink_group,
                self.topic,
            )
        except asyncpg.UndefinedTableError:
            return {}
        finally:
            await conn.close()
        return {r["partition"]: r["next_offset"] for r in rows}

    async def written(self, timeout_s: float = 90) -> None:
        """Until `sink_offsets` holds the end offset of every partition that has records."""
        ends = {p: end for p, end in (await kafka_io.end_offsets(self.bootstrap, self.topic)).items() if end}

        async def done() -> bool:
            try:
                positions = await self.positions()
            except (OSError, asyncpg.PostgresError):
                return False
            return all(positions.get(p, 0) >= end for p, end in ends.items())

        await wait_for(done, timeout_s, interval_s=0.2, what=f"sink_offsets at the end offsets {ends}")


@pytest.fixture
async def deployment(stack, database):
    # SINK_* from the shell would change what the tests exercise: the sink runs on its defaults.
    dep = SinkDeployment(
        stack,
        logs=TEST_OUTPUT / "logs",
        kind="sink",
        dsn=database,
        partitions=PARTITIONS,
        drop_env=("SINK_",),
    )
    await dep.setup(topics=False)
    await kafka_io.create_topics(dep.bootstrap, [dep.topic], PARTITIONS)
    try:
        yield dep
    finally:
        await dep.close()


# --------------------------------------------------------------------------------------------- the model


@dataclasses.dataclass
class Expected:
    events: dict = dataclasses.field(default_factory=dict)  # event_id -> row
    windows: dict = dataclasses.field(default_factory=dict)  # (device, sensor, size_s, start_us) -> row
    latest: dict = dataclasses.field(default_factory=dict)  # (device, sensor) -> row
    alerts: dict = dataclasses.field(default_factory=dict)  # alert_id -> AlertRow, folded


def fold_alert(current: AlertRow | None, row: AlertRow) -> AlertRow:
    """SPEC §5 as stored: an open episode moves to resolved, its peak only up; a resolved one never changes."""
    if current is None:
        return row
    if current.status == "open" and (row.status == "resolved" or row.peak_value > current.peak_value):
        return msgspec.structs.replace(
            current,
            status=row.status,
            peak_value=max(current.peak_value, row.peak_value),
            resolved_at=current.resolved_at or row.resolved_at,
            resolved_event_id=current.resolved_event_id or row.resolved_event_id,
        )
    return current


class World:
    """Worker-shaped change batches per source partition, and what PostgreSQL must hold once they are written."""

    def __init__(self, seed: int = 1, devices: int = 9, partitions: int = PARTITIONS) -> None:
        self.rng = random.Random(seed)
        self.devices = {p: [] for p in range(partitions)}
        for i in range(devices):
            self.devices[i % partitions].append((f"dev-{i:03d}", f"site-{i % 2}", f"zone-{i % 3}"))
        self.clock = dict.fromkeys(range(partitions), T0)
        self.offset = dict.fromkeys(range(partitions), 0)
        self.aggregates: dict[tuple, dict] = {}
        self.expected = Expected()

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def batch(
        self, partition: int, events: int = 200, *, alerts: list[AlertRow] = (), max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """One worker batch of `events` readings of the partition's devices, as its change records."""
        rng, dims = self.rng, self.devices[partition]
        first_offset = self.offset[partition]
        raw = np.zeros(events, RAW_ROW)
        windows: dict[tuple, tuple] = {}
        latest: dict[tuple, tuple] = {}
        for n in range(events):
            dim = n % len(dims)
            device = dims[dim]
            sensor = rng.randrange(len(SENSORS))
            self.clock[partition] += rng.randrange(1, 4_000_000)
            ts = self.clock[partition]
            offset = self.offset[partition]
            self.offset[partition] += 1
            value = round(rng.uniform(0, 2000), 3)
            late, unit_given = rng.random() < 0.05, rng.random() < 0.7
            event_id = self._uuid()
            raw[n] = (dim, event_id.bytes, sensor, late, unit_given, value, ts, ts + 1234)
            name = SENSORS[sensor]
            self.expected.events[event_id] = (
                event_id, *device, name, value, SENSOR_UNITS[name] if unit_given else None, ts, ts + 1234, late,
            )  # fmt: skip
            if late:
                continue
            for size_s in (300, 900):
                start = ts - ts % (size_s * 1_000_000)
                key = (device[0], name, size_s, start)
                agg = self.aggregates.setdefault(
                    key, {"count": 0, "sum": 0.0, "min": value, "max": value, "sum_sq": 0.0, "first": ts}
                )
                agg.update(
                    count=agg["count"] + 1,
                    sum=agg["sum"] + value,
                    min=min(agg["min"], value),
                    max=max(agg["max"], value),
                    sum_sq=agg["sum_sq"] + value * value,
                    last=ts,
                    version=offset,
                )
                windows[key] = (dim, sensor, size_s, start, agg["count"], agg["sum"], agg["min"], agg["max"],
                                agg["sum_sq"], agg["first"], ts, offset)  # fmt: skip
                self.expected.windows[key] = (*device, agg["count"], agg["sum"], agg["min"], agg["max"],
                                              agg["sum_sq"], agg["first"], ts, offset)  # fmt: skip
            key = (device[0], name)
            previous = self.expected.latest.get(key)
            if previous is None or ts >= previous[4]:  # (device, site, zone, value, ts, …)
                latest[key] = (dim, sensor, value, ts, event_id.bytes, offset)
                self.expected.latest[key] = (*device, value, ts, event_id, offset)
        for row in alerts:
            self.expected.alerts[row.alert_id] = fold_alert(self.expected.alerts.get(row.alert_id), row)
        kwargs = {} if max_bytes is None else {"max_bytes": max_bytes}
        records = changes.encode(
            partition=partition,
            first_offset=first_offset,
            last_offset=self.offset[partition] - 1,
            dims=list(dims),
            raw=raw,
            windows=np.array(list(windows.values()), WINDOW_ROW),
            latest=np.array(list(latest.values()), LATEST_ROW),
            alerts=list(alerts),
            **kwargs,
        )
        return [(partition, record) for record in records]

    def episode(self, partition: int, peaks: list[float], *, resolved: bool) -> list[AlertRow]:
        """The alert rows of one episode on one of the partition's devices, in the worker's order: an open row
        whenever the peak moves, then the resolved row carrying the final peak."""
        device, site, zone = self.rng.choice(self.devices[partition])
        opened = T0 + self.rng.randrange(10**9)
        base = AlertRow(
            alert_id=str(self._uuid()), status="open", rule="threshold", alert_type="CO2_HIGH", device_id=device,
            site_id=site, zone_id=zone, sensor_type="co2", threshold=1000.0, value=peaks[0], peak_value=peaks[0],
            opened_at=iso(opened), event_id=str(self._uuid()),
        )  # fmt: skip
        rows = [msgspec.structs.replace(base, peak_value=peak) for peak in peaks]
        if resolved:
            rows.append(
                msgspec.structs.replace(
                    base,
                    status="resolved",
                    peak_value=float(max(peaks)),
                    resolved_at=iso(opened + 60_000_000),
                    resolved_event_id=str(self._uuid()),
                )
            )
        return rows


async def assert_exact(dsn: str, expected: Expected) -> None:
    """Every table holds exactly the model's rows: nothing missing, nothing doubled, every column equal."""
    conn = await asyncpg.connect(dsn)
    try:
        events = await conn.fetch(
            f"SELECT event_id, device_id, site_id, zone_id, sensor_type, value, unit, {US.format('ts_event')},"
            f" {US.format('ts_ingest')}, late FROM telemetry_events"
        )
        assert len(events) == len(expected.events)
        assert {r[0]: tuple(r) for r in events} == expected.events
        for size_s, table in ((300, "telemetry_device_agg_5m"), (900, "telemetry_device_agg_15m")):
            rows = await conn.fetch(
                f"SELECT device_id, sensor_type, {US.format('window_start')}, {US.format('window_end')}, site_id,"
                f" zone_id, count_events, sum_value, avg_value, min_value, max_value, sum_sq_value,"
                f" {US.format('first_ts')}, {US.format('last_ts')}, version FROM {table}"
            )
            got = {}
            for r in rows:
                device, sensor, start, end, *rest = tuple(r)
                assert end == start + size_s * 1_000_000
                site, zone, count, total, avg, *more = rest
                assert avg == total / count
                got[(device, sensor, size_s, start)] = (device, site, zone, count, total, *more)
            want = {k: v for k, v in expected.windows.items() if k[2] == size_s}
            assert got == want, f"{table}: {len(got)} rows, {len(want)} expected"
        latest = await conn.fetch(
            f"SELECT device_id, sensor_type, site_id, zone_id, value, {US.format('ts_event')}, event_id, version"
            " FROM telemetry_device_latest"
        )
        assert {(r[0], r[1]): (r[0], r[2], r[3], *tuple(r)[4:]) for r in latest} == expected.latest
        alerts = await conn.fetch(
            "SELECT alert_id::text, status, rule, alert_type, device_id, site_id, zone_id, sensor_type, threshold,"
            " value, peak_value, opened_at, resolved_at, event_id::text, resolved_event_id::text"
            " FROM telemetry_alerts"
        )
        want_alerts = {
            a.alert_id: (
                a.alert_id, a.status, a.rule, a.alert_type, a.device_id, a.site_id, a.zone_id, a.sensor_type,
                a.threshold, a.value, a.peak_value, a.opened_at, a.resolved_at, a.event_id, a.resolved_event_id,
            )
            for a in expected.alerts.values()
        }  # fmt: skip
        got_alerts = {}
        for r in alerts:
            row = list(r)
            row[11] = iso(to_us(row[11]))
            row[12] = None if row[12] is None else iso(to_us(row[12]))
            got_alerts[row[0]] = tuple(row)
        assert got_alerts == want_alerts
    finally:
        await conn.close()


async def snapshot(dsn: str) -> dict[str, list[tuple]]:
    """Every row of every table the sink writes, bookkeeping columns (updated_at, change_seq) included."""
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")]
            for table in (
                "telemetry_events",
                "telemetry_device_agg_5m",
                "telemetry_device_agg_15m",
                "telemetry_device_latest",
                "telemetry_alerts",
            )
        }
    finally:
        await conn.close()


def some_batches(world: World, rounds: int, events: int = 200) -> list[tuple[int, bytes]]:
    return [record for _ in range(rounds) for p in range(PARTITIONS) for record in world.batch(p, events)]


# --------------------------------------------------------------------------------------------- tests


async def test_rows_land_exactly(deployment):
    world = World(seed=1)
    records = some_batches(world, rounds=3)
    records += world.batch(0, 50, alerts=world.episode(0, [1100, 1250], resolved=True))
    records += world.batch(1, 50, alerts=world.episode(1, [1300], resolved=False))
    await deployment.produce_changes(records)
    sink = deployment.add_sink()
    sink.start()  # on an empty database: the sink applies the migrations itself
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    assert len(world.expected.alerts) == 2 and len(world.expected.windows) > 50
    log = sink.log_text()
    for p in range(PARTITIONS):
        assert f"{p} from its beginning (no row in sink_offsets)" in log
    assert sink.stop() == 0
    assert "sink stopped" in sink.log_text()


async def test_the_same_records_twice_or_from_a_lower_position_change_nothing(deployment):
    world = World(seed=2)
    records = some_batches(world, rounds=2)
    records += world.batch(2, 40, alerts=world.episode(2, [1100, 1500], resolved=True))
    await deployment.produce_changes(records)
    sink = deployment.add_sink()
    sink.start()
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    before = await snapshot(deployment.dsn)

    await deployment.produce_changes(records)  # a producer retrying everything
    await deployment.written()
    assert await snapshot(deployment.dsn) == before

    assert sink.stop() == 0
    conn = await asyncpg.connect(deployment.dsn)
    try:
        await conn.execute("UPDATE sink_offsets SET next_offset = 0 WHERE partition = 0")
        await conn.execute("UPDATE sink_offsets SET next_offset = 1 WHERE partition = 1")
    finally:
        await conn.close()
    sink.start()
    await wait_for(lambda: ASSIGNED in sink.log_text(1), 60, what="the restarted sink's assignment")
    assert "0 from 0 (sink_offsets)" in sink.log_text(1) and "1 from 1 (sink_offsets)" in sink.log_text(1)
    await deployment.written()
    assert await snapshot(deployment.dsn) == before
    await assert_exact(deployment.dsn, world.expected)


async def test_an_older_window_version_never_overwrites_a_newer_one(deployment):
    world = World(seed=3, devices=3)
    stale_world = World(seed=3, devices=3)  # the same batches, to re-send its early versions later
    early = stale_world.batch(0, 100)
    records = world.batch(0, 100)
    assert records == early
    records += world.batch(0, 100)
    records += world.batch(0, 100)
    sink = deployment.add_sink()
    sink.start()
    await deployment.produce_changes(records)
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)

    # Old versions alone in later transactions (a zombie writer, a replay) …
    await deployment.produce_changes(early)
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    # … and in one record beside newer versions of the same keys, older last (coalesced in the batch).
    newer = world.batch(0, 100)
    older = changes.decode(early[0][1])
    mixed_windows = np.concatenate(
        [changes.decode(v).window_rows() for _, v in newer] + [older.window_rows()]
    )
    mixed_latest = np.concatenate([changes.decode(v).latest_rows() for _, v in newer] + [older.latest_rows()])
    assert changes.decode(newer[0][1]).dims == older.dims
    mixed = changes.encode(
        partition=0, first_offset=0, last_offset=0, dims=older.dims, raw=np.empty(0, RAW_ROW),
        windows=mixed_windows, latest=mixed_latest, alerts=[],
    )  # fmt: skip
    await deployment.produce_changes([(0, v) for v in mixed] + newer)
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)


async def test_alerts_move_open_to_resolved_and_peak_only_up_in_any_order(deployment):
    world = World(seed=4)
    sink = deployment.add_sink(SINK_BATCH_MAX_RECORDS="1")  # one record a transaction: order matters more
    sink.start()
    in_order = world.episode(0, [1100, 1200, 1400], resolved=True)
    resolved_first = world.episode(1, [1050, 1300], resolved=True)
    resolved_first = [resolved_first[-1], *resolved_first[:-1]]
    peaks_shuffled = world.episode(2, [1100, 1700, 1500], resolved=False)
    peaks_shuffled = [peaks_shuffled[1], peaks_shuffled[0], peaks_shuffled[2]]
    all_in_one = world.episode(0, [1010, 1020], resolved=True)[::-1]
    # Each row in its own record (own transaction) …
    for partition, rows in enumerate((in_order, resolved_first, peaks_shuffled)):
        for row in rows:
            await deployment.produce_changes(world.batch(partition, 5, alerts=[row]))
            await deployment.written()
    # … and a whole episode, backwards, in one record.
    await deployment.produce_changes(world.batch(0, 5, alerts=all_in_one))
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    stored = world.expected.alerts
    assert (stored[in_order[0].alert_id].status, stored[in_order[0].alert_id].peak_value) == (
        "resolved",
        1400,
    )
    assert (stored[resolved_first[0].alert_id].status, stored[resolved_first[0].alert_id].peak_value) == (
        "resolved",
        1300,
    )
    assert (stored[peaks_shuffled[0].alert_id].status, stored[peaks_shuffled[0].alert_id].peak_value) == (
        "open",
        1700,
    )
    assert stored[all_in_one[0].alert_id].status == "resolved"


async def test_a_batch_cut_into_several_records_lands_whole(deployment):
    world = World(seed=5, devices=30)
    alerts = world.episode(0, [1100, 1200], resolved=True)
    records = world.batch(0, 3000, alerts=alerts, max_bytes=20_000)
    assert len(records) >= 6
    kinds = [changes.decode(v) for _, v in records]
    assert kinds[0].raw and kinds[-1].alerts  # raw rows first, alerts last
    sink = deployment.add_sink(
        SINK_BATCH_MAX_RECORDS="2"
    )  # the records of one batch over several transactions
    sink.start()
    await deployment.produce_changes(records)
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)


async def test_postgres_refusing_logins_for_10s_loses_nothing(deployment, stack):
    world = World(seed=6)
    port = free_port()
    sink = deployment.add_sink(SINK_WEB_PORT=str(port), SINK_BATCH_MAX_RECORDS="3")
    sink.start()
    await deployment.produce_changes(some_batches(world, rounds=2))
    await deployment.written()

    name = deployment.dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(stack["DATABASE_URL"])
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # records keep flowing during the outage
            await deployment.produce_changes(some_batches(world, rounds=1, events=100))
            await asyncio.sleep(1)
        assert sink.alive(), "the sink rides out a database outage"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    assert sink.starts == 1 and sink.alive()
    async with httpx.AsyncClient(timeout=5) as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    retries = float(re.search(r"^telemetrypulse_sink_retries_total (\S+)$", metrics, re.M)[1])
    assert retries >= 1
    assert "retrying" in sink.log_text()


async def test_sigkill_mid_stream_then_restart_resumes_from_sink_offsets(deployment):
    world = World(seed=7)
    first = some_batches(world, rounds=30, events=800)
    second = some_batches(world, rounds=5, events=800)
    await deployment.produce_changes(first)
    sink = deployment.add_sink(SINK_BATCH_MAX_RECORDS="1")
    sink.start()

    async def some_progress() -> dict[int, int] | None:
        positions = await deployment.positions()
        return positions if sum(positions.values()) >= 5 else None

    await wait_for(some_progress, 60, interval_s=0.02, what="a few transactions")
    sink.kill()
    stored = await deployment.positions()
    assert sum(stored.values()) < len(first), "killed too late to be mid-stream"
    await deployment.produce_changes(second)
    sink.start()
    await wait_for(lambda: ASSIGNED in sink.log_text(1), 60, what="the restarted sink's assignment")
    for partition in range(PARTITIONS):
        if partition in stored:
            assert f"{partition} from {stored[partition]} (sink_offsets)" in sink.log_text(1)
        else:
            assert f"{partition} from its beginning" in sink.log_text(1)
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)


async def test_two_sinks_in_one_group_stay_exact(deployment):
    world = World(seed=8)
    a = deployment.add_sink(SINK_BATCH_MAX_RECORDS="2")
    b = deployment.add_sink(SINK_BATCH_MAX_RECORDS="2")
    a.start()
    b.start()
    await wait_for(
        lambda: ASSIGNED in a.log_text() and ASSIGNED in b.log_text(), 60, what="partitions for both sinks"
    )
    for _ in range(6):
        await deployment.produce_changes(some_batches(world, rounds=1))
        await asyncio.sleep(0.5)
    await deployment.written()

    # SIGTERM: the transaction under way completes, the sink leaves the group, the other takes over at once
    # (not after a session timeout).
    stopped_at = time.monotonic()
    assert a.stop() == 0
    await deployment.produce_changes(some_batches(world, rounds=2))
    await deployment.written(timeout_s=60)
    assert time.monotonic() - stopped_at < 30
    a.start()
    for _ in range(4):
        await deployment.produce_changes(some_batches(world, rounds=1))
        await asyncio.sleep(0.5)
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    for sink in (a, b):
        assert "Traceback" not in sink.log_text()


async def test_an_undecodable_record_is_logged_counted_and_skipped(deployment):
    world = World(seed=9)
    good = world.batch(1, 50)
    later = world.batch(1, 50)
    await deployment.produce_changes([*good, (1, b"\x93not a changes record"), *later])
    sink = deployment.add_sink()
    sink.start()
    await deployment.written()
    await assert_exact(deployment.dsn, world.expected)
    offset = len(good)
    assert re.search(
        rf"ERROR .*undecodable change record {deployment.topic} partition 1 offset {offset} skipped",
        sink.log_text(),
    ), sink.log_text()[-3000:]


# --------------------------------------------------------------------------------------------- binary COPY


async def _copy_outputs(conn: asyncpg.Connection, table: str) -> bytes:
    chunks: list[bytes] = []

    async def collect(data: bytes) -> None:
        chunks.append(bytes(data))

    await conn.copy_from_query(f"SELECT * FROM {table} ORDER BY ctid", output=collect, format="binary")
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("layout", "dtype"),
    [(RAW_COPY, RAW_ROW), (WINDOW_COPY, WINDOW_ROW), (LATEST_COPY, LATEST_ROW)],
    ids=["raw", "windows", "latest"],
)
async def test_binary_copy_stores_what_asyncpg_stores_for_the_same_rows(migrated_database, layout, dtype):
    rng = np.random.default_rng(11)
    rows = np.zeros(500, dtype)
    for name in dtype.names:
        kind = dtype[name]
        if kind.kind == "V":
            rows[name] = [uuid.UUID(int=int(x), version=4).bytes for x in rng.integers(0, 2**62, len(rows))]
        elif kind.kind == "b":
            rows[name] = rng.random(len(rows)) < 0.5
        elif kind.kind == "f":
            rows[name] = rng.normal(0, 1e6, len(rows))
        elif name == "sensor":
            rows[name] = rng.integers(0, 4, len(rows))
        elif kind.kind == "u":
            rows[name] = rng.integers(0, 2**31 - 1, len(rows))
        else:
            rows[name] = rng.integers(-(2**62), 2**62, len(rows))
    rows[dtype.names[0]][0] = 0  # edges: zero, extremes, NaN, infinities
    floats = [n for n in dtype.names if dtype[n].kind == "f"]
    rows[floats[0]][:4] = [np.nan, np.inf, -np.inf, -0.0]
    ints = [n for n in dtype.names if dtype[n] == np.dtype("<i8")]
    rows[ints[0]][:2] = [2**63 - 1, -(2**63)]
    columns = ", ".join(f"{column} {pg_type}" for column, pg_type, _ in layout)
    conn = await asyncpg.connect(migrated_database)
    try:
        await conn.execute(f"CREATE TABLE ours ({columns}); CREATE TABLE theirs ({columns})")
        await conn.copy_to_table("ours", source=memoryview(rows_payload(rows, layout)), format="binary")
        records = []
        for row in rows.tolist():
            fields = dict(zip(dtype.names, row, strict=True))
            records.append(
                tuple(uuid.UUID(bytes=fields[src]) if t == "uuid" else fields[src] for _, t, src in layout)
            )
        await conn.copy_records_to_table("theirs", records=records, columns=[c for c, _, _ in layout])
        ours, theirs = await _copy_outputs(conn, "ours"), await _copy_outputs(conn, "theirs")
        assert len(ours) > 500 * 20 and ours == theirs
    finally:
        await conn.close()


async def test_binary_copy_of_identifiers_stores_what_asyncpg_stores(migrated_database):
    dims = [(f"dev-{i}", "site-é", "z" * 64) for i in range(300)] + [("d", "", "ü")]
    conn = await asyncpg.connect(migrated_database)
    try:
        columns = "dim int4, device_id text, site_id text, zone_id text"
        await conn.execute(f"CREATE TABLE ours ({columns}); CREATE TABLE theirs ({columns})")
        await conn.copy_to_table("ours", source=memoryview(encode_dims(dims)), format="binary")
        await conn.copy_records_to_table("theirs", records=[(i, *d) for i, d in enumerate(dims)])
        assert await _copy_outputs(conn, "ours") == await _copy_outputs(conn, "theirs")
        assert await conn.fetchval("SELECT count(*) FROM ours") == len(dims)
        # An empty stream (header and trailer only) is a valid COPY of nothing.
        await conn.copy_to_table(
            "ours",
            source=memoryview(encode_columns([("int4", np.empty(0, np.int32))])),
            format="binary",
            columns=["dim"],
        )
    finally:
        await conn.close()


async def test_migration_0003_positions_sums_of_squares_and_cheaper_writes(migrated_database):
    conn = await asyncpg.connect(migrated_database)
    try:
        for table in ("telemetry_device_agg_5m", "telemetry_device_agg_15m"):
            default = await conn.fetchval(
                "SELECT column_default FROM information_schema.columns WHERE table_name = $1"
                " AND column_name = 'sum_sq_value'",
                table,
            )
            assert default == "0"
        assert await conn.fetchval("SELECT to_regclass('sink_offsets')::text") == "sink_offsets"
        assert await conn.fetchval("SELECT to_regclass('telemetry_events_site_zone_ts')") is None
        assert await conn.fetchval("SELECT to_regclass('telemetry_events_device_ts')::text") is not None
        assert await db.migrate(migrated_database) == []
    finally:
        await conn.close()


HOT_TABLES = (
    "telemetry_device_agg_5m", "telemetry_device_agg_15m", "telemetry_device_agg_1h", "telemetry_device_agg_1d",
    "telemetry_device_latest",
)  # fmt: skip


async def _updates(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
        list(HOT_TABLES),
    )
    return {r["relname"]: (r["n_tup_upd"], r["n_tup_hot_upd"]) for r in rows}


async def test_rewriting_every_live_row_in_one_transaction_stays_on_its_pages(migrated_database):
    """Migration 0007: devices that report together share pages, and one sink transaction rewrites all their
    window rows and latest values at once. Each rewrite must stay on its page (a HOT update, no new index
    entries): at fillfactor 80 four in ten did not, and the tables grew to twice their live size."""
    from telemetrypulse.sink.batch import SinkBatch
    from telemetrypulse.sink.writer import PostgresWriter

    devices = 400
    dims = [(f"hot-{i:04d}", "site-1", f"zone-{i % 7}") for i in range(devices)]

    def batch(version: int) -> SinkBatch:
        windows = np.zeros(devices * 2, WINDOW_ROW)
        latest = np.zeros(devices, LATEST_ROW)
        for i in range(devices):
            value = float(version * 10 + i % 5)
            for j, size_s in enumerate((300, 900)):
                windows[2 * i + j] = (i, 0, size_s, T0 - T0 % (size_s * 1_000_000), version, value * version,
                                      0.0, value, value * value, T0, T0 + version, version)  # fmt: skip
            latest[i] = (i, 0, value, T0 + version, uuid.uuid4().bytes, version)
        return SinkBatch(dims=dims, windows=windows, latest=latest)

    writer = PostgresWriter(migrated_database, "hot-test")
    conn = await asyncpg.connect(migrated_database)
    try:
        await writer.write(batch(1))  # inserts: the rows of all devices, packed as the sink packs them
        before = await _updates(conn)
        for version in range(2, 6):
            await writer.write(batch(version))

        async def counted() -> bool:  # statistics reach the views about a second after the commit
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            after = await _updates(conn)
            return all(after[t][0] - before.get(t, (0, 0))[0] == 4 * devices for t in HOT_TABLES)

        await wait_for(counted, 15, interval_s=0.2, what="the updates in pg_stat_user_tables")
        after = await _updates(conn)
        for table in HOT_TABLES:
            updated = after[table][0] - before.get(table, (0, 0))[0]
            hot = after[table][1] - before.get(table, (0, 0))[1]
            assert hot >= 0.97 * updated, f"{table}: {hot} of {updated} updates stayed on their page"
    finally:
        await writer.close()
        await conn.close()
