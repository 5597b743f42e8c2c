"""A steady-rate producer for the live phases: simulator events (live event time) at `--rate` per second.

`telemetrypulse simulate --rate` awaits one `send()` per event, which costs ~40 % of a core at 5,000 events/s —
on a 2-core machine that is CPU taken from the system under test. This producer does what the burst pre-producer
does, on a clock: every tick (10 ms) it generates that tick's events and appends them straight into per-partition
record batches, which are sent at once. Each record's timestamp (the produce time the latency is measured from)
is the moment it was appended; the events are the simulator's own (same generator, same keys and partitions).

Run as a child process (`python -m bench.pace … --summary FILE`); it writes its JSON summary to FILE. SIGTERM stops
it early and cleanly (what was appended is still sent and counted in the summary): the rate ladder stops a rung that
has clearly failed instead of adding to a backlog it would then have to wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from telemetrypulse.simulator import RecordBatches, Simulator, Topology

TICK_S = 0.01


async def produce(args: argparse.Namespace) -> dict:
    simulator = Simulator(
        seed=args.seed,
        topology=Topology(args.sites, args.zones, args.devices_per_zone),
        anomalies_per_device_hour=args.anomalies_per_hour,
    )
    messages = simulator.pairs()
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=True, max_batch_size=512 * 1024
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    sent = 0
    late_ticks = 0
    try:
        batches = await RecordBatches.for_topic(producer, args.topic)
        futures: list[asyncio.Future] = []
        began = loop.time()
        began_at = time.time()  # wall clock, as the record timestamps: where this run's production starts
        tick = 0
        while sent < args.count and not stopping.is_set():
            tick += 1
            due = min(args.count, round(args.rate * tick * TICK_S))
            while sent < due:
                key, value = next(messages)
                full = batches.append(key, value)
                if full is not None:
                    futures.append(await batches.send_full(full, key, value))
                sent += 1
            futures += await batches.send_all()  # this tick's events, at once
            if len(futures) > 1000:
                done = [f for f in futures if f.done()]
                for f in done:
                    f.result()
                futures = [f for f in futures if not f.done()]
            delay = began + tick * TICK_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late_ticks += 1
        await asyncio.gather(*futures)
        elapsed = loop.time() - began
    finally:
        await producer.stop()
    return {
        "sent": sent,
        "began_at": began_at,
        "seconds": elapsed,
        "rate": sent / elapsed,
        "late_ticks": late_ticks,
        "ticks": tick,
        "stopped_early": stopping.is_set(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pace")
    add = parser.add_argument
    add("--bootstrap", required=True)
    add("--topic", required=True)
    add("--rate", type=float, required=True)
    add("--count", type=int, required=True)
    add("--seed", type=int, default=1)
    add("--sites", type=int, required=True)
    add("--zones", type=int, required=True)
    add("--devices-per-zone", type=int, required=True)
    add("--anomalies-per-hour", type=float, default=0.5)
    add("--summary", type=Path, required=True, help="where the JSON summary goes")
    args = parser.parse_args()
    started = time.time()
    result = asyncio.run(produce(args))
    result["started_at"] = started
    args.summary.write_bytes(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
