"""`python -m bench [--events N] [--quick] [--skip-soak] [--soak-minutes M] …` — see bench/README.md.

Phases, each on its own fresh topics and database: throughput on two datasets (45 and 1,000 devices, each beside
the ceiling, the Faust floor, the batch baseline and the naive pipeline), keep-up (12,500 devices at 5,000 events/s,
then a rate ladder), recovery, api, soak. The report is printed and written to bench/results/<name>.md with a PNG
beside it; the raw figures go to <name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from bench import api, harness, live, recovery, report, throughput
from telemetrypulse.simulator import Topology

PHASES = ("throughput", "keepup", "recovery", "api", "soak")
ALIASES = {"latency": "keepup"}  # the keep-up phase grew out of the latency phase
# Issue 11: two datasets, 45 devices (the simulator's default topology) and 1,000 devices.
DATASETS = (Topology(), Topology(10, 4, 25))
LADDER = (10_000.0, 15_000.0, 20_000.0, 25_000.0, 30_000.0, 40_000.0)
QUICK_LADDER = (10_000.0, 15_000.0)
log = logging.getLogger("bench")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--events", type=int, help="events of each throughput dataset (default 1,000,000; quick 100,000)")
    add(
        "--quick",
        action="store_true",
        help="development run (≤ 3 min for throughput + keep-up): 100k events per dataset, 20 s keep-up, "
        "10 s ladder rungs up to 15k/s, small recovery, 1 min soak",
    )
    add("--skip-soak", action="store_true", help="no memory soak")
    add("--soak-minutes", type=float, help="soak length (default 10)")
    add("--keepup-seconds", "--latency-seconds", type=float, help="keep-up run length (default 60; quick 20)")
    add(
        "--rate", type=float, default=5000.0, help="steady rate of the keep-up and soak runs (default 5000/s)"
    )
    add("--ladder", help="comma-separated rates of the ladder after the keep-up run (default 10000,…,40000)")
    add("--ladder-seconds", type=float, help="length of each ladder rung (default 30; quick 10)")
    add("--naive-events", type=int, help="prefix the naive pipeline processes (default 20,000)")
    add("--recovery-devices", type=int, help="devices of the recovery state (default 8,000: > 100k windows)")
    add(
        "--partitions", type=int, default=6, help="partitions of every topic (default 6, the product default)"
    )
    add("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    add("--no-profile", action="store_true", help="do not run py-spy on the worker")
    add("--seed", type=int, default=20240501)
    add("--name", help="results file name (default: latest, or quick with --quick)")
    add("--keep", action="store_true", help="keep topics and databases (for inspection)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.events = args.events or (100_000 if quick else 1_000_000)
    args.soak_minutes = args.soak_minutes or (1.0 if quick else 10.0)
    args.keepup_seconds = args.keepup_seconds or (20.0 if quick else 60.0)
    args.ladder = (
        tuple(float(r) for r in args.ladder.split(",") if r.strip())
        if args.ladder is not None
        else (QUICK_LADDER if quick else LADDER)
    )
    args.ladder_seconds = args.ladder_seconds or (10.0 if quick else 30.0)
    args.naive_events = args.naive_events or (5_000 if quick else 20_000)
    args.recovery_devices = args.recovery_devices or (1_000 if quick else 8_000)
    args.name = args.name or ("quick" if quick else "latest")
    args.phases = [ALIASES.get(p.strip(), p.strip()) for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    if args.skip_soak and "soak" in args.phases:
        args.phases.remove("soak")
    return args


def live_topology_for(rate: float, interval_s: float = 10.0) -> Topology:
    devices = max(1, round(rate * interval_s / 4))
    sites, per_zone = 10, 25
    return Topology(sites, max(1, round(devices / (sites * per_zone))), per_zone)


def recovery_topology(devices: int) -> Topology:
    sites = 10
    per_zone = 20
    zones = max(1, round(devices / (sites * per_zone)))
    return Topology(sites, zones, per_zone)


async def main(args: argparse.Namespace) -> int:
    stack = harness.bench_stack()
    harness.LOGS.mkdir(parents=True, exist_ok=True)
    facts = await report.machine_facts(stack)
    facts["partitions"] = f"{args.partitions} partitions per topic"
    facts["pipeline_processes"] = harness.pipeline_description()
    for key in ("library_integrity", "what_if"):
        if "**" in facts[key]:
            print(f"bench: WARNING {key}: {facts[key].strip('*')}", file=sys.stderr)
    results: dict = {"args": dict(vars(args))}
    began = time.monotonic()
    for phase in args.phases:
        t0 = time.monotonic()
        try:
            results[phase] = await run_phase(phase, args, stack)
        except Exception as e:
            # One phase failing (a service restarted under it, say) must not cost the figures of the others.
            log.exception("phase %s failed", phase)
            results.setdefault("errors", {})[phase] = f"{type(e).__name__}: {e}"
        print(f"bench: {phase} done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        write_report(args, facts, results, time.monotonic() - began)
    print((harness.RESULTS / f"{args.name}.md").read_text())
    print(
        f"bench: bench/results/{args.name}.md and .png written in {results['total_s'] / 60:.1f} min",
        file=sys.stderr,
    )
    # `exact` None = not verified to the end (a soak backlog the bench stopped waiting for): reported, not failed.
    exact = not results.get("errors") and all(phase_exact(p, results[p]) for p in results if p in PHASES)
    if not exact:
        print("bench: A PHASE FAILED OR A COUNT IS NOT EXACT — see the report", file=sys.stderr)
        return 1
    return 0


def phase_exact(phase: str, result) -> bool:
    """False if any pass of the phase counted wrong; a backlog the bench stopped waiting for is not a failure."""
    if phase == "throughput":
        return all(d.get("exact") for d in result)
    if phase == "keepup" and result.get("ladder", {}).get("check", {}).get("exact") is False:
        return False
    return result["check"]["exact"] is not False


def write_report(args: argparse.Namespace, facts: dict, results: dict, elapsed_s: float) -> None:
    """After every phase, so that a later failure keeps what was measured."""
    results["total_s"] = elapsed_s
    mode = "quick run" if args.quick else f"{args.events:,} events"
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    (harness.RESULTS / f"{args.name}.md").write_text(report.markdown(results, facts, mode))
    (harness.RESULTS / f"{args.name}.json").write_text(json.dumps({"facts": facts, **results}, default=str))
    title = f"TelemetryPulse bench, {facts['date']}, {facts['commit']}".replace("*", "")
    report.plot(results, harness.RESULTS / f"{args.name}.png", title)


async def run_phase(phase: str, args: argparse.Namespace, stack: dict[str, str]) -> dict:
    # At the steady rate every device reports every 10 s (the simulator's own cadence): 12,500 devices at
    # 5,000 events/s. Denser devices grow the per-device dedup state (rate x grace ids): see the report.
    live_topology = live_topology_for(args.rate)
    if phase == "throughput":
        datasets = []
        for i, topology in enumerate(DATASETS):
            options = throughput.Options(
                events=args.events,
                naive_events=args.naive_events,
                partitions=args.partitions,
                seed=args.seed + i,
                # py-spy on the first dataset only (a pass of its own: it costs time, not accuracy).
                profile=not args.no_profile and not args.quick and i == 0,
                keep=args.keep,
                topology=topology,
                faust_floor=not args.quick,
            )
            try:
                datasets.append(await throughput.run(stack, options))
            except Exception as e:
                # One dataset failing must not cost the other's figures; the run still fails (phase_exact).
                log.exception("throughput on %d devices failed", topology.device_count)
                datasets.append({"devices": topology.device_count, "error": f"{type(e).__name__}: {e}"})
        return datasets
    if phase == "keepup":
        return await live.run(
            stack,
            live.LiveOptions(
                label="keepup",
                seconds=args.keepup_seconds,
                rate=args.rate,
                topology=live_topology,
                # Two anomaly episodes per device-hour: ~400 alerts a minute across 12,500 devices.
                anomalies_per_hour=2.0,
                poll_s=0.025,
                rss_every_s=1.0,
                seed=args.seed,
                partitions=args.partitions,
                keep=args.keep,
                warmup_s=10.0,
                ladder=args.ladder,
                ladder_seconds=args.ladder_seconds,
                kafka_bytes=True,
            ),
        )
    if phase == "api":
        return await api.run(
            stack,
            api.ApiOptions(
                events=20_000 if args.quick else 200_000,
                seconds=10.0 if args.quick else 30.0,
                concurrency=16,
                partitions=args.partitions,
                seed=args.seed,
                keep=args.keep,
            ),
        )
    if phase == "recovery":
        return await recovery.run(
            stack,
            recovery.Options(
                topology=recovery_topology(args.recovery_devices),
                partitions=args.partitions,
                seed=args.seed,
                keep=args.keep,
            ),
        )
    soak = await live.run(
        stack,
        live.LiveOptions(
            label="soak",
            seconds=args.soak_minutes * 60,
            rate=args.rate,
            topology=live_topology,
            anomalies_per_hour=2.0,
            poll_s=0.1,
            rss_every_s=2.0,
            seed=args.seed + 1,
            partitions=args.partitions,
            keep=args.keep,
            # A worker that fell far behind would take longer to drain than the soak took; the counts of the
            # throughput and latency phases are checked to the end.
            drain_limit_s=300.0,
        ),
    )
    soak["seconds"] = soak["produce_s"]
    soak["rss_every_s"] = 2.0
    # Judged over the producing time after the warm-up only: `rss` is timed from the first event produced (the
    # producer's own clock, not the sampler's start before the producer's start-up), and the drain afterwards is
    # another load.
    warmup_s = min(60.0, soak["seconds"] / 5)
    producing = [(t, rss) for t, rss in soak["rss"] if 0.0 <= t <= soak["produce_s"]]
    soak["flatness"] = report.rss_flatness(producing, warmup_s=warmup_s)
    return soak


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
