"""Recovery phase: how long a pipeline restart takes before it processes again, with a large state (≥ 100k open
windows in the worker's state).

The state comes from many devices (default 8,000, reporting every 5 min), so that the windows still open under the
default grace number over 100k; they are counted by the SPEC's finality rule from PostgreSQL (any engine), and from
the device-state changelog where it holds today's JSON records. Then three restarts of every process of the
pipeline, each timed from spawn to (a) ready (Faust's `Ready`, and the sink's start line when it is a process) and
(b) probe events — one device per partition, produced while the pipeline was down — visible in PostgreSQL:
* a deploy restart: SIGTERM, same disk (RocksDB state kept);
* a crash: SIGKILL, same disk (the group must first expire the dead member: broker session timeout);
* a new host: SIGTERM and an empty state folder, so the state is restored from the changelog topic.
Afterwards the counts are checked exactly (every event once, in both window sizes).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka.partitioner import DefaultPartitioner
from tqdm import tqdm

from bench import harness
from bench.data import Expected
from devkit import kafka_io
from devkit.epoch import from_us, iso
from telemetrypulse.models import SENSOR_UNITS
from telemetrypulse.simulator import Simulator, Topology

INTERVAL_S = 300
TICKS = 7  # aligned start + 7 readings: the watermark sits early in a 15 m window, so two are open per series
GRACE_S = 300  # WINDOW_GRACE_S: the bench's deployments keep the default
PROBE_VALUES = {"co2": 612.0, "temperature": 21.5, "humidity": 41.0, "occupancy": 3}


@dataclass
class Options:
    topology: Topology
    partitions: int
    seed: int
    keep: bool


def probe_messages(
    topology: Topology, partitions: int, ts_us: int
) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Four readings for one device of each partition, at `ts_us` (after the watermark: accepted)."""
    partitioner = DefaultPartitioner()
    chosen: dict[int, tuple[str, str, str]] = {}
    all_partitions = list(range(partitions))
    for site, zone, device in topology.ids():
        p = partitioner(device.encode(), all_partitions, all_partitions)
        chosen.setdefault(p, (site, zone, device))
        if len(chosen) == partitions:
            break
    messages, ids = [], []
    for site, zone, device in chosen.values():
        for sensor, value in PROBE_VALUES.items():
            event_id = str(uuid.uuid4())
            ids.append(event_id)
            event = {
                "event_id": event_id,
                "device_id": device,
                "site_id": site,
                "zone_id": zone,
                "sensor_type": sensor,
                "value": value,
                "ts_event": iso(ts_us),
                "unit": SENSOR_UNITS[sensor],
            }
            messages.append((device.encode(), orjson.dumps(event)))
    return messages, ids


OPEN_WINDOWS_SQL = """
WITH watermark AS (SELECT device_id, max(ts_event) AS wm FROM telemetry_device_latest GROUP BY device_id)
SELECT count(*) FROM (
    SELECT device_id, window_end FROM telemetry_device_agg_5m
    UNION ALL SELECT device_id, window_end FROM telemetry_device_agg_15m
) AS w JOIN watermark USING (device_id)
WHERE w.window_end + make_interval(secs => $1) > watermark.wm
"""


async def state_size(dep: harness.BenchDeployment, grace_s: float = GRACE_S) -> dict:
    """Open windows the pipeline must hold in state, by the SPEC's rule (a window is final once its device's
    watermark reaches window_end + WINDOW_GRACE_S), counted in PostgreSQL: the same for any engine's state
    encoding. Where the state changelog holds JSON records (an engine before the binary snapshots), their windows are
    counted too."""
    conn = await dep.connect()
    try:
        windows = await conn.fetchval(OPEN_WINDOWS_SQL, float(grace_s))
    finally:
        await conn.close()
    result: dict = {"windows": windows, "counted_by": "by the SPEC's finality rule, from PostgreSQL"}
    latest, records, size = await kafka_io.latest_per_key(dep.bootstrap, dep.names.partition_state_changelog)
    try:
        in_changelog = sum(len(orjson.loads(v).get("win", {})) for v in latest.values())
    except (orjson.JSONDecodeError, AttributeError):
        in_changelog = None
    result.update(
        device_records=len(latest),
        changelog_records=records,
        changelog_bytes=size,
        windows_in_changelog=in_changelog,
    )
    if in_changelog is not None:
        result["counted_by"] += f"; {in_changelog:,} in the state changelog's last records"
    return result


async def timed_restart(dep: harness.BenchDeployment, topology: Topology, ts_us: int, kind: str) -> dict:
    worker = dep.pipeline
    assert worker is not None
    if kind == "kill":
        worker.kill()
    else:
        worker.stop()
    if kind == "wipe":
        dep.wipe_state()
    messages, ids = probe_messages(topology, dep.partitions, ts_us)
    await kafka_io.produce_burst(dep.bootstrap, dep.topic_events, messages, len(messages), desc="probes")
    worker.start()
    began = worker.started_at
    conn = await dep.connect()
    ready_s = None
    try:
        with tqdm(
            desc=f"restart ({kind})", leave=False, mininterval=0.5, bar_format="{desc}: {elapsed}"
        ) as bar:
            while True:
                if ready_s is None and worker.ready():
                    ready_s = time.monotonic() - began
                seen = await conn.fetchval(
                    "SELECT count(*) FROM telemetry_events WHERE ts_event = $1 AND event_id = ANY($2::uuid[])",
                    from_us(ts_us),
                    ids,
                )
                if seen == len(ids):
                    processing_s = time.monotonic() - began
                    break
                if time.monotonic() - began > 300:
                    raise TimeoutError(f"restart ({kind}): probes not stored after 300 s")
                bar.update()
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
    if ready_s is None:
        ready_s = await worker.wait_ready()
    return {"kind": kind, "ready_s": ready_s, "processing_s": processing_s, "probes": len(ids)}


async def run(stack: dict[str, str], opts: Options) -> dict:
    dep = await harness.BenchDeployment(stack, "recovery", opts.partitions).setup()
    result: dict = {}
    try:
        now = datetime.now(UTC)
        start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0) - timedelta(hours=3)
        sim = Simulator(seed=opts.seed, start=start, interval=INTERVAL_S, topology=opts.topology)
        count = TICKS * opts.topology.device_count * 4
        expected = Expected()
        await kafka_io.produce_burst(
            dep.bootstrap, dep.topic_events, sim.pairs(), count, on_value=expected.add, desc="pre-produce"
        )
        worker = dep.new_pipeline()
        worker.start()
        await worker.wait_ready()
        ready_at = time.monotonic()
        cpu = harness.CpuLedger(worker)
        done_at = await harness.wait_processed(dep, count, timeout_s=120 + count / 1000, desc="build state")
        result["build"] = {
            "events": count,
            "devices": opts.topology.device_count,
            "seconds": done_at - ready_at,
            "rate": count / (done_at - ready_at),
            "cpu": cpu.stop(),
        }
        stop_began = time.monotonic()
        worker.stop()
        result["stop_s"] = time.monotonic() - stop_began
        result["state"] = await state_size(dep)

        restarts = []
        assert expected.last_us is not None
        for i, kind in enumerate(("term", "kill", "wipe"), start=1):
            restarts.append(
                await timed_restart(dep, opts.topology, expected.last_us + i * INTERVAL_S * 1_000_000, kind)
            )
        result["restarts"] = restarts
        total = count + sum(r["probes"] for r in restarts)
        await harness.wait_processed(dep, total, timeout_s=60, desc="final counts")
        conn = await dep.connect()
        try:
            raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
        finally:
            await conn.close()
        result["check"] = {"exact": raw == total, "raw_rows": raw, "expected": total}
    finally:
        await dep.close(keep=opts.keep)
    return result
