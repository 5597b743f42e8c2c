"""`python -m bench.decode_alone`: CPU µs per event of `decode.decode_batch` beside the reference (one
`models.validate_event` per input, `decode.decode_batch_reference`), on 4,000-event batches of simulator data —
no Kafka, no worker.

Datasets: 45 devices (the simulator's default topology), 12,500 devices, and 45 devices with 1 % invalid inputs
(every invalid kind the simulator makes). Each run decodes every batch once with each decoder, alternating, so a
machine whose speed drifts slows both alike, and each run goes through every dataset; a figure is the median over
runs of CPU time (`process_time`) per event, with the ratio fast/reference taken run by run. Before timing, both
decoders must agree on every batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from telemetrypulse.decode import DecodedBatch, decode_batch, decode_batch_reference
from telemetrypulse.models import to_us
from telemetrypulse.simulator import Topology, generate_events

START = datetime(2026, 11, 26, tzinfo=UTC)
NOW_US = to_us(START + timedelta(days=1))  # the worker's clock: after every event, so none is in the future
DATASETS = {
    "45 devices": (Topology(), 0.0),
    "12,500 devices": (Topology(sites=5, zones=50, devices_per_zone=50), 0.0),
    "45 devices, 1 % invalid": (Topology(), 0.01),
}


def batches_of(topology: Topology, invalid: float, batches: int, size: int) -> list[list[bytes]]:
    values = [
        value
        for _, value in generate_events(
            batches * size, seed=20261126, start=START, topology=topology, invalid_fraction=invalid
        )
    ]
    return [values[i : i + size] for i in range(0, len(values), size)]


def outcomes(batch: DecodedBatch) -> list[tuple]:
    """Per input position, the event or the reason, independent of the order of devices and dims."""
    result: dict[int, tuple] = {p: ("invalid", i.error, i.detail) for p, i in batch.invalid}
    for row, position in enumerate(batch.valid.tolist()):
        result[position] = (
            batch.event_id[row].tobytes(),
            batch.dims[batch.dim[row]],
            batch.devices[batch.device[row]],
            int(batch.sensor[row]),
            struct.pack("<d", batch.value[row]),
            int(batch.ts_us[row]),
            bool(batch.unit_given[row]),
        )
    return [result[p] for p in range(len(result))]


def cpu_s(
    decoder: Callable[[Sequence[bytes | None], int], DecodedBatch], batches: list[list[bytes]]
) -> float:
    start = time.process_time()
    for values in batches:
        decoder(values, NOW_US)
    return time.process_time() - start


def check_equal(batches: list[list[bytes]]) -> None:
    for values in batches:
        if outcomes(decode_batch(values, NOW_US)) != outcomes(decode_batch_reference(values, NOW_US)):
            raise SystemExit("decode_batch differs from the reference: not measuring a wrong decoder")


def measure(datasets: dict[str, list[list[bytes]]], runs: int) -> dict[str, dict]:
    """Each run times every dataset with both decoders, so that a drift of the machine's speed during the
    measurement touches every figure alike."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in datasets}
    for batches in datasets.values():
        cpu_s(decode_batch, batches[:1])  # warm-up: first calls, caches
    for _ in range(runs):
        for name, batches in datasets.items():
            fast, reference = times[name]
            fast.append(cpu_s(decode_batch, batches))
            reference.append(cpu_s(decode_batch_reference, batches))
    results = {}
    for name, batches in datasets.items():
        fast, reference = times[name]
        events = sum(len(values) for values in batches)
        valid = sum(len(decode_batch(values, NOW_US)) for values in batches)
        us = 1e6 / events
        results[name] = {
            "events": events,
            "valid": valid,
            "fast_us_per_event": statistics.median(fast) * us,
            "fast_us_per_valid_event": statistics.median(fast) * 1e6 / valid,
            "fast_us_min_max": (min(fast) * us, max(fast) * us),
            "reference_us_per_event": statistics.median(reference) * us,
            "reference_us_min_max": (min(reference) * us, max(reference) * us),
            "ratio": statistics.median(f / r for f, r in zip(fast, reference, strict=True)),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_alone", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per dataset (default 7)")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches per dataset (default 4)")
    parser.add_argument("--batch-size", type=int, default=4000, help="events per batch (default 4,000)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    datasets = {
        name: batches_of(topology, invalid, args.batches, args.batch_size)
        for name, (topology, invalid) in DATASETS.items()
    }
    for batches in datasets.values():
        check_equal(batches)
    load_before = os.getloadavg()
    results = measure(datasets, args.runs)
    print(
        f"decode_batch vs reference: {args.batches} batches x {args.batch_size} events, {args.runs} runs, CPU time"
    )
    print(
        f"{'dataset':26s} {'fast µs/event':>14s} {'per valid':>10s} {'min–max':>12s} {'reference':>10s} {'ratio':>6s}"
    )
    for name, r in results.items():
        low, high = r["fast_us_min_max"]
        print(
            f"{name:26s} {r['fast_us_per_event']:14.2f} {r['fast_us_per_valid_event']:10.2f} "
            f"{f'{low:.2f}–{high:.2f}':>12s} {r['reference_us_per_event']:10.2f} {r['ratio']:6.3f}"
        )
    load_after = os.getloadavg()
    print(
        f"medians over runs; {os.cpu_count()} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
        " (a shared machine: the ratio to the reference, measured run by run, drifts less than the µs)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"results": results, "load": [load_before, load_after], "argv": sys.argv[1:]}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
