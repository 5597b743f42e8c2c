"""`python -m bench.state_alone [--repeats 3] [--batches 150] [--stale-after-s 900]`: the CPU cost of
`state.PartitionState` alone, with the default alert rules and stale sensors as the worker runs them.

Per scenario, on 4,000-event batches of simulator data (`telemetrypulse.simulator`, each device every 10 s of event
time, all devices in one partition state):
- `apply`: CPU µs per event (process time around the call only), median over the measured batches of one run;
- `snapshot`: CPU µs per device record written and mean bytes per record, with a snapshot every 5 s of event time
  (what the worker is meant to do), and `load` of the whole state from its records;
- decoding (`decode.decode_batch`, the reference decoder, one `validate_event` per input) is timed apart and is not
  in any other figure.

Decoding a long stream with the reference decoder would dominate the run, so a stretch of real simulator output is
decoded once and then repeated with event time shifted past its end and every event id XOR-ed with a per-repeat
mask (so ids stay unique, and a re-sent event stays a duplicate of its original). The state is first warmed up over
more than 15 min + grace of event time, so windows and ids are at their steady size before anything is measured.
Each scenario runs `--repeats` times on a fresh state; the table gives the median of the runs (and their range).
A second table gives the cost of one `apply` call on smaller slices (what a live worker fetches at low rates).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from telemetrypulse.decode import DecodedBatch, decode_batch
from telemetrypulse.models import now_us
from telemetrypulse.simulator import Simulator, Topology
from telemetrypulse.state import PartitionState

BATCH = 4000
GRACE_S = 300
INTERVAL_S = 10.0
SNAPSHOT_EVERY_US = 5 * 1_000_000
WARMUP_US = (900 + GRACE_S + 120) * 1_000_000


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Topology
    duplicate_fraction: float = 0.0

    @property
    def devices(self) -> int:
        return self.topology.device_count


SCENARIOS = (
    Scenario("45 devices", Topology(3, 5, 3)),
    Scenario("12,500 devices", Topology(5, 50, 50)),
    Scenario("45 devices, 1% re-sent duplicates", Topology(3, 5, 3), duplicate_fraction=0.01),
)


class Stream:
    """Decoded simulator events, repeated endlessly (see the module docstring), cut into batches of `BATCH`."""

    def __init__(self, scenario: Scenario, seed: int, batch: int = BATCH) -> None:
        self.batch = batch
        # Whole ticks of every device, at least 48,000 events (a few minutes of event time at 12,500 devices).
        per_tick = scenario.devices * 4
        ticks = max(4, -(-48_000 // per_tick))
        count = ticks * per_tick
        start = datetime.now(UTC) - timedelta(days=2)
        sim = Simulator(
            seed=seed,
            start=start,
            interval=INTERVAL_S,
            topology=scenario.topology,
            duplicate_fraction=scenario.duplicate_fraction,
        )
        pairs = sim.pairs()
        values = [next(pairs)[1] for _ in range(count)]
        started = time.process_time()
        self.decoded = decode_batch(values, now_us())
        self.decode_us_per_event = (time.process_time() - started) * 1e6 / count
        d = self.decoded
        self.span_us = int(d.ts_us.max() - d.ts_us.min()) + int(INTERVAL_S * 1_000_000)
        self.rng = np.random.default_rng(seed)
        self.position = 0
        self.round = 0
        self.mask = np.zeros(2, np.uint64)
        self.offset = 0

    def next_batch(self) -> tuple[DecodedBatch, np.ndarray, np.ndarray, int]:
        d = self.decoded
        n = len(d)
        if self.position >= n:
            self.position = 0
            self.round += 1
            self.mask = self.rng.integers(0, 2**63, 2, dtype=np.uint64)
        take = np.arange(self.position, min(n, self.position + self.batch))
        self.position += len(take)
        devices, device = np.unique(d.device[take], return_inverse=True)
        dims, dim = np.unique(d.dim[take], return_inverse=True)
        ids = (d.event_id[take].view("<u8").reshape(-1, 2) ^ self.mask).view("V16").reshape(-1)
        batch = DecodedBatch(
            valid=np.arange(len(take), dtype=np.int64),
            event_id=ids,
            device=device.astype(np.uint32),
            devices=[d.devices[i] for i in devices.tolist()],
            dim=dim.astype(np.uint32),
            dims=[d.dims[i] for i in dims.tolist()],
            sensor=d.sensor[take],
            value=d.value[take],
            ts_us=d.ts_us[take] + self.round * self.span_us,
            unit_given=d.unit_given[take],
        )
        offsets = np.arange(self.offset, self.offset + len(take), dtype=np.int64)
        self.offset += len(take)
        ingest = batch.ts_us + 50_000
        return batch, offsets, ingest, int(offsets[-1])


@dataclass
class Run:
    apply_us: float  # median CPU µs per event
    apply_p90_us: float
    snapshot_us_per_record: float
    record_bytes: float
    records_per_snapshot: float
    load_us_per_device: float
    decode_us: float
    ids_kept: int
    windows_kept: int


def run_once(scenario: Scenario, measured_batches: int, seed: int, stale_after_s: int = 900) -> Run:
    stream = Stream(scenario, seed)
    state = PartitionState(0, GRACE_S, stale_after_s=stale_after_s)
    first_ts = None
    # Warm-up: the state reaches its steady size (ids over the grace horizon, windows until final).
    while True:
        batch, offsets, ingest, last = stream.next_batch()
        state.apply(batch, offsets, ingest, last_offset=last)
        first_ts = int(batch.ts_us[0]) if first_ts is None else first_ts
        if int(batch.ts_us[-1]) - first_ts > WARMUP_US:
            break
    state.snapshot()
    apply_costs: list[float] = []
    snapshot_cpu = 0.0
    snapshot_records = 0
    snapshot_bytes = 0
    snapshots = 0
    next_snapshot = int(batch.ts_us[-1]) + SNAPSHOT_EVERY_US
    table: dict[bytes, bytes] = {}
    for _ in range(measured_batches):
        batch, offsets, ingest, last = stream.next_batch()
        started = time.process_time()
        state.apply(batch, offsets, ingest, last_offset=last)
        apply_costs.append((time.process_time() - started) * 1e6 / len(batch))
        if int(batch.ts_us[-1]) >= next_snapshot:
            next_snapshot = int(batch.ts_us[-1]) + SNAPSHOT_EVERY_US
            started = time.process_time()
            records = state.snapshot()
            snapshot_cpu += time.process_time() - started
            devices = len(records) - 1  # the last one is the partition record
            snapshot_records += devices
            snapshot_bytes += sum(len(v) for _, v in records[:-1])
            snapshots += 1
            table.update(records)
    table.update(state.snapshot())
    started = time.process_time()
    PartitionState(0, GRACE_S, stale_after_s=stale_after_s).load(table.items())
    load_us = (time.process_time() - started) * 1e6 / max(1, len(table) - 1)
    return Run(
        apply_us=statistics.median(apply_costs),
        apply_p90_us=float(np.percentile(apply_costs, 90)),
        snapshot_us_per_record=snapshot_cpu * 1e6 / max(1, snapshot_records),
        record_bytes=snapshot_bytes / max(1, snapshot_records),
        records_per_snapshot=snapshot_records / max(1, snapshots),
        load_us_per_device=load_us,
        decode_us=stream.decode_us_per_event,
        ids_kept=state.held()["ids"],
        windows_kept=state.held()["windows"],
    )


def small_slices(sizes: tuple[int, ...], seed: int, stale_after_s: int = 900) -> dict[int, float]:
    """Median CPU µs per `apply` call for slices of each size (45 devices, warmed up): the fixed cost per call."""
    out = {}
    for size in sizes:
        stream = Stream(SCENARIOS[0], seed, batch=size)
        state = PartitionState(0, GRACE_S, stale_after_s=stale_after_s)
        costs = []
        for k in range(max(400, 8_000 // size)):
            batch, offsets, ingest, last = stream.next_batch()
            started = time.process_time()
            state.apply(batch, offsets, ingest, last_offset=last)
            if k >= 100:
                costs.append((time.process_time() - started) * 1e6)
        out[size] = statistics.median(costs)
    return out


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state_alone", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per scenario (default 3)")
    parser.add_argument("--batches", type=int, default=150, help="measured batches per run (default 150)")
    parser.add_argument(
        "--scenarios", default="0,1,2", help="indices of the scenarios to run (default 0,1,2)"
    )
    parser.add_argument(
        "--slices", default="1,10,100,1000", help="slice sizes of the fixed-cost table ('' for none)"
    )
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument(
        "--stale-after-s", type=int, default=900, help="STALE_AFTER_S of the state (default 900; 0: off)"
    )
    args = parser.parse_args(argv)
    chosen = [SCENARIOS[int(i)] for i in args.scenarios.split(",")]
    print(
        f"PartitionState alone: {BATCH}-event batches, grace {GRACE_S} s, stale after {args.stale_after_s} s, "
        f"median of {args.repeats} runs (range)"
    )
    header = (
        "| scenario | apply CPU µs/event (median batch) | p90 batch | snapshot µs/record | bytes/record "
        "| records/snapshot | load µs/device | ids kept | windows kept | decode µs/event (apart) |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for scenario in chosen:
        runs = [
            run_once(scenario, args.batches, args.seed + r, args.stale_after_s) for r in range(args.repeats)
        ]
        print(
            f"| {scenario.name} | {_span([r.apply_us for r in runs])} | {_span([r.apply_p90_us for r in runs])} "
            f"| {_span([r.snapshot_us_per_record for r in runs])} | {statistics.median(r.record_bytes for r in runs):,.0f} "
            f"| {statistics.median(r.records_per_snapshot for r in runs):,.0f} "
            f"| {_span([r.load_us_per_device for r in runs])} | {runs[0].ids_kept:,} | {runs[0].windows_kept:,} "
            f"| {_span([r.decode_us for r in runs])} |",
            flush=True,
        )
    if args.slices:
        sizes = tuple(int(s) for s in args.slices.split(","))
        runs = [small_slices(sizes, args.seed + r, args.stale_after_s) for r in range(args.repeats)]
        print("\nSmaller slices (45 devices): median CPU µs per apply call, and per event")
        print("| events per slice | µs per call | µs per event |\n|---|---|---|")
        for size in sizes:
            per_call = [r[size] for r in runs]
            print(f"| {size:,} | {_span(per_call)} | {statistics.median(per_call) / size:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
