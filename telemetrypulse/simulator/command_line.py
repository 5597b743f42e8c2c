"""The command line of `telemetrypulse simulate` (and `python -m telemetrypulse.simulator`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import sys
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING

from telemetrypulse.simulator.clock import parse_start
from telemetrypulse.simulator.generation import DUPLICATE, VALID, Simulator, Topology
from telemetrypulse.simulator.producing import produce

if TYPE_CHECKING:
    from telemetrypulse.settings import Settings

log = logging.getLogger("telemetrypulse.simulator")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _start(text: str) -> datetime:
    try:
        return parse_start(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemetrypulse simulate",
        description="Produce realistic synthetic building telemetry (SPEC §3 events) to Kafka.",
    )
    add = parser.add_argument
    add("--rate", type=_positive_float, help="events per second (default: EVENTS_PER_SECOND, 5)")
    add(
        "--count",
        type=_positive_int,
        help="stop after this many messages, duplicates and invalid ones included (default: run until stopped)",
    )
    add("--seed", help="seed: the same seed, --start and options give the same messages, event ids included")
    add(
        "--start",
        type=_start,
        help="simulated event time starting here (ISO-8601, or now-6h / now-2d) for backfills; "
        "default: event time is the wall clock",
    )
    add(
        "--interval",
        type=_positive_float,
        default=10.0,
        help="with --start: seconds of event time between a device's readings (default 10)",
    )
    add("--sites", type=_positive_int, default=3)
    add("--zones", type=_positive_int, default=5, help="zones per site")
    add("--devices-per-zone", type=_positive_int, default=3)
    add(
        "--duplicate-fraction",
        type=_fraction,
        default=0.0,
        help="share of messages that re-send an earlier event",
    )
    add("--invalid-fraction", type=_fraction, default=0.0, help="share of malformed messages (every kind)")
    add(
        "--anomalies-per-hour",
        type=float,
        default=0.5,
        help="anomaly episodes per device per hour of event time",
    )
    add("--burst", action="store_true", help="produce as fast as Kafka takes it (progress bar on stderr)")
    add("--topic", help="topic (default: TOPIC_EVENTS)")
    add("--no-create-topic", action="store_true", help="do not create the topic when it is missing")
    add(
        "--stdout",
        action="store_true",
        help="write the messages to stdout, one JSON value per line, not to Kafka",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`telemetrypulse simulate [options]`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    seed = int(args.seed) if args.seed is not None and re.fullmatch(r"-?\d+", args.seed) else args.seed
    try:
        simulator = Simulator(
            seed=seed,
            start=args.start,
            interval=args.interval,
            topology=Topology(args.sites, args.zones, args.devices_per_zone),
            duplicate_fraction=args.duplicate_fraction,
            invalid_fraction=args.invalid_fraction,
            anomalies_per_device_hour=args.anomalies_per_hour,
        )
    except ValueError as e:
        parser.error(str(e))
    if args.stdout:
        return _write_stdout(simulator, args.count)

    from telemetrypulse.exceptions import TelemetryPulseError
    from telemetrypulse.settings import get_settings

    try:
        settings = get_settings()
    except TelemetryPulseError as e:
        print(f"telemetrypulse simulate: {e}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    topic = args.topic or settings.topic_events
    rate = args.rate or settings.events_per_second
    try:
        return asyncio.run(_run(settings, simulator, args, topic, rate))
    except KeyboardInterrupt:
        return 130


async def _run(
    settings: Settings, simulator: Simulator, args: argparse.Namespace, topic: str, rate: float
) -> int:
    from aiokafka.errors import KafkaError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    mode = "burst" if args.burst else f"{rate:g} events/s"
    log.info(
        "simulating %d devices to %s at %s (%s), seed %s",
        simulator.topology.device_count,
        topic,
        settings.kafka_bootstrap_servers,
        mode,
        simulator.seed,
    )
    try:
        stats = await produce(
            settings,
            simulator,
            topic=topic,
            count=args.count,
            rate=rate,
            burst=args.burst,
            progress=args.burst,
            stop=stop,
            create_topic=not args.no_create_topic,
        )
    except (KafkaError, OSError, TimeoutError) as e:
        print(f"telemetrypulse simulate: Kafka at {settings.kafka_bootstrap_servers}: {e!r}", file=sys.stderr)
        return 1
    log.info(
        "produced %d events in %.1f s (%.0f/s): %d duplicate, %d invalid",
        stats.sent,
        stats.elapsed_s,
        stats.rate,
        stats.kinds[DUPLICATE],
        stats.sent - stats.kinds[VALID] - stats.kinds[DUPLICATE],
    )
    return 0


def _write_stdout(simulator: Simulator, count: int | None) -> int:
    out = sys.stdout.buffer
    try:
        for _key, value, _kind in islice(simulator.messages(), count):
            out.write(value + b"\n")
        out.flush()
    except BrokenPipeError:
        # `simulate --stdout | head`: stop quietly; point stdout at devnull so the exit-time flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        return 130
    return 0
