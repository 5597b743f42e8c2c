"""The results: machine facts, issue 11's targets beside their baselines with a verdict each, the figures of every
phase, ratios, the profile summary; as Markdown (printed and written to bench/results/) and one PNG of throughput,
keep-up backlog, latency, the rate ladder and memory.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import asyncpg
import numpy as np
import psutil

from bench import harness
from bench.profile import COMPONENTS
from devkit.paths import ROOT
from telemetrypulse.settings import Settings
from telemetrypulse.transport import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES

# The tunables of the worker and the sink a run reports (the environment's value, else the default).
PIPELINE_TUNABLES = [
    (field.upper(), Settings.model_fields[field].default)
    for field in ("snapshot_interval_s", "sink_batch_max_records", "stale_after_s")
]

# Issue 11's targets ("Must show").
TARGET_BATCH_RATIO = 1.0  # the worker end to end vs the batch baseline, on both datasets
TARGET_RATE = 50_000  # events/s end to end on the 45-device dataset
TARGET_RATE_DEVICES = 45
TARGET_NAIVE_RATIO = 20
TARGET_CPU_US = 20.0  # CPU µs per event of the pipeline's processes, 45 devices
TARGET_BACKLOG_S = 1.0  # keep-up: at every sample after the warm-up
TARGET_ROW_P99_S = 1.0
TARGET_ALERT_P99_S = 0.25
TARGET_LADDER_RATE = 15_000  # the highest steady rate that still holds p99 ≤ 1 s
TARGET_KAFKA_BYTES = 1.5  # Kafka bytes written by the worker per input byte, 12,500 devices
TARGET_RSS_BAND = 0.10
RECOVERY_NOISE = 0.10  # "no slower than now", on a shared machine

# "Now": the last full run before the batch engine (bench/results/latest.md of commit 2f02e17, committed in ec811dd;
# README; issue 11's own measurements), for the targets that have no baseline in the same run.
REFERENCE_COMMIT = "2f02e17"
REFERENCE = {
    "backlog": "5–26 s (three runs of the same phase, issue 11)",
    "row_p99": "24,897 ms (the worker fell behind)",
    "alert_p99": "9,003 ms",
    "ladder": "none: ~3,300 events/s kept at 12,500 devices",
    "kafka_bytes": "4.5 (issue 11); 4.5 in the soak",
    "soak": "±28.0 % around 360 MiB (worker only; warm-up 60 s)",
    "recovery_windows": "128,000 windows",
}
REFERENCE_RECOVERY_S = {"term": 2.2, "kill": 10.0, "wipe": 20.0}


def modified_library_files(
    names: tuple[str, ...] = ("faust-streaming", "mode-streaming", "aiokafka", "asyncpg"),
) -> list[str]:
    """Installed files that differ from their wheel's RECORD: a debug line left in Faust's consumer loop once
    halved the worker's rate, so a report on a patched library says so."""
    import base64
    import hashlib

    changed = []
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            if not f.hash or not str(f).endswith(".py"):
                continue
            try:
                data = Path(dist.locate_file(f)).read_bytes()
            except OSError:
                changed.append(f"{name}: {f} (missing)")
                continue
            digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).rstrip(b"=").decode()
            if digest != f.hash.value:
                changed.append(f"{name}: {f}")
    return changed


async def machine_facts(stack: dict[str, str]) -> dict:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    conn = await asyncpg.connect(stack["DATABASE_URL"])
    try:
        pg = await conn.fetchval("SHOW server_version")
        pg_conf = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        }
    finally:
        await conn.close()
    kafka = "?"
    pids = harness.stack_pids()
    if "kafka" in pids:
        cmdline = " ".join(psutil.Process(pids["kafka"]).cmdline())
        for part in cmdline.split("/"):
            if part.startswith("kafka-") and part[6:7].isdigit():
                kafka = part[6:]
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = [
        line[3:]
        for line in subprocess.run(
            ["git", "status", "--porcelain", "--", "telemetrypulse"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    ]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit
        + (f" **plus uncommitted changes to {', '.join(dirty)}**" if dirty else " (clean tree)"),
        "python_env": str(Path(sys.executable).parent.parent),
        "cpu": f"{cpu_model}, {psutil.cpu_count()} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kafka": f"Apache Kafka {kafka} (KRaft, 1 broker, co-located)",
        "postgres": f"PostgreSQL {pg} (co-located; fsync={pg_conf['fsync']}, "
        f"synchronous_commit={pg_conf['synchronous_commit']}, shared_buffers={pg_conf['shared_buffers']})",
        "libraries": ", ".join(
            f"{name} {metadata.version(name)}"
            for name in ("faust-streaming", "aiokafka", "asyncpg", "orjson")
        ),
        "library_integrity": (
            "installed faust, mode, aiokafka, asyncpg match their wheels"
            if not (changed := modified_library_files())
            else "**MODIFIED, figures not comparable:** " + ", ".join(changed)
        ),
        "what_if": (
            "**bench/whatif ACTIVE: Faust's consumer loop without per-message wait_first (not the product)**"
            if any(
                Path(p).resolve() == ROOT / "bench" / "whatif"
                for p in os.environ.get("PYTHONPATH", "").split(":")
                if p
            )
            else "none (the product as committed)"
        ),
        "worker_settings": ", ".join(
            [
                *(f"{name}={os.environ.get(name, default)}" for name, default in PIPELINE_TUNABLES),
                f"fetch wait {FETCH_MAX_WAIT_MS} ms / {FETCH_MIN_BYTES // 1024} KiB",
            ]
        ),
    }


def rss_flatness(rss: list[tuple[float, int]], warmup_s: float) -> dict:
    """Deviation of RSS from its median after the warm-up, and the drift from the first to the last tenth.
    `rss` is (seconds of production, bytes), already cut to the span judged."""
    after = [(t, r) for t, r in rss if t >= warmup_s]
    if len(after) < 4:
        return {}
    values = np.asarray([r for _, r in after], dtype=float)
    median = float(np.median(values))
    tenth = max(1, len(values) // 10)
    return {
        "warmup_s": warmup_s,
        "end_s": after[-1][0],
        "samples": len(after),
        "median_bytes": median,
        "min_bytes": float(values.min()),
        "max_bytes": float(values.max()),
        "max_deviation": float(np.max(np.abs(values - median)) / median),
        "drift": float(values[-tenth:].mean() / values[:tenth].mean() - 1.0),
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _ms(s: float) -> str:
    return f"{s * 1000:,.0f} ms"


def _verdict(ok: bool | None, detail: str) -> str:
    if ok is None:
        return f"not judged ({detail})"
    return f"**met** ({detail})" if ok else f"**missed** ({detail})"


def _margin(value: float, target: float) -> str:
    if value >= target:
        return f"{value / target:.2f}× the target"
    return f"{value / target:.2f}× the target: {target / value:.1f}× short"


def _limit(value: float, limit: float) -> str:
    return f"{value / limit:.2f}× the limit"


def _devices(d: dict) -> str:
    return f"{d['dataset']['devices']:,} devices"


def _us_per_event(cpu_s: float, events: int) -> float:
    return cpu_s / max(1, events) * 1e6


def throughput_datasets(results: dict) -> list[dict]:
    """The throughput phase's datasets that were measured (one that failed is reported with the errors)."""
    return [d for d in results.get("throughput") or () if "error" not in d]


def throughput_errors(results: dict) -> list[tuple[str, str]]:
    return [
        (f"throughput, {d['devices']:,} devices", d["error"])
        for d in results.get("throughput") or ()
        if "error" in d
    ]


def keepup_run(results: dict) -> dict | None:
    return results.get("keepup") or results.get("latency")


def targets(results: dict) -> list[tuple[str, str, str, str]]:
    """(target, measured, baseline, verdict with the margin) for each issue-11 target the run measured."""
    rows = []
    for d in throughput_datasets(results):
        p, b, n, f = d["pipeline"], d["batch"], d["naive"], d.get("faust_floor")
        rate, exact, name = p["rate"], p["check"]["exact"], _devices(d)
        ratio = rate / b["rate"]
        rows.append(
            (
                f"worker end to end ≥ {TARGET_BATCH_RATIO:.1f}× the batch baseline, {name}",
                f"{rate:,.0f} events/s, exact: {exact}",
                f"batch + PostgreSQL transaction {b['rate']:,.0f} events/s (exact: {b['exact']})",
                _verdict(ratio >= TARGET_BATCH_RATIO and exact, f"{ratio:.2f}×"),
            )
        )
        if d["dataset"]["devices"] == TARGET_RATE_DEVICES:
            rows.append(
                (
                    f"≥ {TARGET_RATE:,} events/s end to end, exact, {name}",
                    f"{rate:,.0f} events/s",
                    f"batch baseline {b['rate']:,.0f}, ceiling {d['ceiling']['rate']:,.0f}"
                    + (f", Faust floor {f['rate']:,.0f}" if f else ""),
                    _verdict(rate >= TARGET_RATE and exact, _margin(rate, TARGET_RATE)),
                )
            )
        ratio = rate / n["rate"]
        rows.append(
            (
                f"≥ {TARGET_NAIVE_RATIO}× the naive per-event pipeline, {name}",
                f"{ratio:.1f}×",
                f"naive {n['rate']:,.0f} events/s (exact: {n['exact']})",
                _verdict(ratio >= TARGET_NAIVE_RATIO, _margin(ratio, TARGET_NAIVE_RATIO)),
            )
        )
        us = p["cpu_us_per_event"]
        baseline = f"batch baseline {_us_per_event(b['cpu_s'], b['events']):.1f} µs (its process)" + (
            f", Faust floor {_us_per_event(f['cpu_s'], f['events']):.1f} µs" if f else ""
        )
        if d["dataset"]["devices"] == TARGET_RATE_DEVICES:
            rows.append(
                (
                    f"worker CPU ≤ {TARGET_CPU_US:.0f} µs per event, {name}",
                    f"{us:.1f} µs (the pipeline's processes)",
                    baseline,
                    _verdict(us <= TARGET_CPU_US, _limit(us, TARGET_CPU_US)),
                )
            )
        else:
            rows.append((f"worker CPU per event, {name} (reported)", f"{us:.1f} µs", baseline, "reported"))
    k = keepup_run(results)
    if k:
        at = f"{k['devices']:,} devices at {k['target_rate']:,.0f}/s"
        backlog = k.get("backlog_max_judged_s")
        if backlog is not None:
            rows.append(
                (
                    f"backlog ≤ {TARGET_BACKLOG_S:.0f} s of production at every sample after a "
                    f"{k['warmup_s']:.0f} s warm-up, {at}",
                    f"max {backlog:.2f} s over {sum(1 for t, _ in k['backlog_series'] if t >= k['warmup_s'])} samples",
                    REFERENCE["backlog"],
                    _verdict(backlog <= TARGET_BACKLOG_S, _limit(backlog, TARGET_BACKLOG_S)),
                )
            )
        for key, name, limit, ref in (
            ("row_latency_judged", "produce→PostgreSQL", TARGET_ROW_P99_S, REFERENCE["row_p99"]),
            ("alert_latency_judged", "produce→alert", TARGET_ALERT_P99_S, REFERENCE["alert_p99"]),
        ):
            p99 = k[key].get("p99")
            if p99 is not None:
                rows.append(
                    (
                        f"p99 {name} ≤ {_ms(limit)}, {at} (after the warm-up)",
                        f"{_ms(p99)} (n = {k[key]['n']:,})",
                        ref,
                        _verdict(p99 <= limit, _limit(p99, limit)),
                    )
                )
        ladder = k.get("ladder")
        if ladder:
            best = ladder["highest_held"]
            rows.append(
                (
                    f"highest steady rate holding p99 produce→PostgreSQL ≤ {_ms(TARGET_ROW_P99_S)} ≥ "
                    f"{TARGET_LADDER_RATE:,}/s",
                    f"{best:,.0f} events/s" if best else f"none: {ladder['stopped']}",
                    REFERENCE["ladder"],
                    _verdict(
                        (best or 0) >= TARGET_LADDER_RATE,
                        f"stopped: {ladder['stopped']}" if best else "the first rate did not hold",
                    ),
                )
            )
        kb = k.get("kafka_bytes")
        if kb and kb.get("per_input_byte") is not None:
            ratio = kb["per_input_byte"]
            rows.append(
                (
                    f"Kafka bytes written by the worker per input byte ≤ {TARGET_KAFKA_BYTES}, {k['devices']:,} devices",
                    f"{ratio:.2f} ({_mib(kb['written_bytes'])} for {_mib(kb['events_bytes'])})",
                    REFERENCE["kafka_bytes"],
                    _verdict(ratio <= TARGET_KAFKA_BYTES, _limit(ratio, TARGET_KAFKA_BYTES)),
                )
            )
    soak = results.get("soak")
    if soak:
        f = soak.get("flatness") or {}
        rows.append(
            (
                f"pipeline RSS flat within ±{TARGET_RSS_BAND:.0%} over the producing time after warm-up",
                f"±{f['max_deviation']:.1%} around {_mib(f['median_bytes'])}, drift {f['drift']:+.1%}"
                if f
                else "too few samples",
                REFERENCE["soak"],
                _verdict(
                    f["max_deviation"] <= TARGET_RSS_BAND if f else None,
                    f"minutes {f['warmup_s'] / 60:.1f}–{f['end_s'] / 60:.1f} of production, "
                    f"{f['samples']} samples"
                    if f
                    else "",
                ),
            )
        )
    rec = results.get("recovery")
    if rec:
        windows = rec["state"]["windows"]
        rows.append(
            (
                "recovery measured with ≥ 100,000 windows in state",
                f"{windows:,} windows" if windows is not None else "not counted",
                REFERENCE["recovery_windows"],
                _verdict(
                    windows >= 100_000 if windows is not None else None, "state size of the restarts below"
                ),
            )
        )
        # The reference restarts held 128,000 windows: a smaller state (a quick run) is not compared with them.
        comparable = windows is not None and windows >= 100_000
        for r in rec["restarts"]:
            ref = REFERENCE_RECOVERY_S.get(r["kind"])
            if ref is not None:
                rows.append(
                    (
                        f"recovery no slower than now: {RESTART_NAMES[r['kind']]}",
                        f"processing again after {r['processing_s']:.1f} s",
                        f"{ref:.1f} s at {REFERENCE_COMMIT}",
                        _verdict(
                            r["processing_s"] <= ref * (1 + RECOVERY_NOISE) if comparable else None,
                            f"{r['processing_s'] / ref:.2f}× the reference, up to {1 + RECOVERY_NOISE:.1f}× "
                            "allowed on a shared machine"
                            if comparable
                            else "state under 100,000 windows",
                        ),
                    )
                )
    return rows


RESTART_NAMES = {
    "term": "deploy restart (SIGTERM, same disk)",
    "kill": "crash (SIGKILL, same disk)",
    "wipe": "new host (empty disk: state from changelog)",
}


COMPONENT_HANDOFF = COMPONENTS[0][0]


def _throughput_section(d: dict, facts: dict) -> list[str]:
    p, c, n, b, ds = d["pipeline"], d["ceiling"], d["naive"], d["batch"], d["dataset"]
    f = d.get("faust_floor")
    cpu = p["cpu"]
    sink = f", sink {cpu['sink']:.1f}" if "sink" in cpu else ""
    rows = [
        f"| ceiling: bare aiokafka consumer, fetch + orjson decode | {c['events']:,} | {c['seconds']:.2f} | "
        f"{c['rate']:,.0f} | {_us_per_event(c['cpu_s'], c['events']):.1f} | | (counts {c['events']:,}) |",
    ]
    if f:
        rows.append(
            f"| Faust floor: an agent that only counts, same `take_events` batching | {f['events']:,} | "
            f"{f['seconds']:.1f} | {f['rate']:,.0f} | {_us_per_event(f['cpu_s'], f['events']):.1f} | | "
            f"(counts {f['events']:,}) |"
        )
    rows += [
        f"| **pipeline: {d.get('processes', 'worker').split(' (')[0]} → PostgreSQL, both windows** | {ds['events']:,} | "
        f"{p['seconds']:.1f} | **{p['rate']:,.0f}** | **{p['cpu_us_per_event']:.1f}** (pipeline) | "
        f"{_mib(p['peak_rss_bytes'])} | {p['check']['exact']} |",
        f"| batch + PostgreSQL transaction (`bench/batch_baseline.py`) | {b['events']:,} | {b['seconds']:.1f} | "
        f"{b['rate']:,.0f} | {_us_per_event(b['cpu_s'], b['events']):.1f} (consumer) | | {b['exact']} |",
        f"| naive: one round trip + commit per event (prefix) | {n['events']:,} | {n['seconds']:.1f} | "
        f"{n['rate']:,.0f} | {_us_per_event(n['cpu_s'], n['events']):.1f} (consumer) | | {n['exact']} |",
    ]
    out = [
        "",
        f"### {ds['devices']:,} devices",
        "",
        f"Dataset: {ds['events']:,} simulator events ({ds['devices']:,} devices, {ds['event_time_hours']:.2f} h of "
        f"event time, {ds['windows_5m']:,} + {ds['windows_15m']:,} windows), pre-produced at "
        f"{d['produce_rate']:,.0f} events/s into a fresh topic; each consumer below reads that same topic, one "
        "after another, with the machine otherwise as idle as a shared machine gets.",
        "",
        "| | events | seconds | events/s | CPU µs / event | peak RSS | exact |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Ratios: **worker / batch baseline {d['ratios']['batch']:.2f}×**, **worker / naive "
        f"{d['ratios']['naive']:.1f}×**, worker / ceiling {d['ratios']['ceiling']:.3f}"
        + (f", worker / Faust floor {d['ratios']['faust_floor']:.2f}" if "faust_floor" in d["ratios"] else "")
        + f". From spawn (start-up {d['ready_s']:.1f} s included): {p['rate_from_spawn']:,.0f} events/s; the "
        f"first events reached PostgreSQL {p['first_rows_s']:.1f} s after ready, and from then on the rate was "
        f"{p['rate_from_first_rows']:,.0f} events/s.",
        "",
        f"CPU seconds during the pipeline run (2 cores = {2 * p['seconds']:.0f} CPU s available): worker "
        f"{cpu['worker']:.1f}{sink}, Kafka {cpu.get('kafka', 0):.1f}, PostgreSQL {cpu.get('postgres', 0):.1f}, "
        f"bench {cpu['bench']:.1f}, other processes {cpu['other']:.1f}. Batch baseline run: PostgreSQL "
        f"{b['cpu'].get('postgres', 0):.1f} CPU s, Kafka {b['cpu'].get('kafka', 0):.1f}, other processes "
        f"{b['cpu']['other']:.1f}.",
    ]
    for name, check in (("pipeline", p["check"]), ("batch baseline", b["check"])):
        if not check["exact"]:
            out += ["", f"**{name} count mismatches:** {check['mismatches']}"]
    return out


# Issue 14's targets: trends of hourly and daily windows over 30 days, and a month's CSV export.
TARGET_HISTORY_P99_MS = 100.0
TARGET_CSV_ROWS_PER_S = 50_000
# "Flat": exporting 30 days may not take more memory than exporting one day, beyond this much noise.
CSV_RSS_NOISE_MIB = 8.0


def _history_section(h: dict, a: dict) -> list[str]:
    d, c = h["data"], h["csv"]
    # Client counts are int keys in memory, strings once the results went through JSON.
    trends = {window: {int(n): r for n, r in by.items()} for window, by in h["trends"].items()}
    clients = sorted({n for by_window in trends.values() for n in by_window})
    out = [
        "",
        f"### History (issue 14): {d['devices']} devices × {d['pairs'] // max(d['devices'], 1)} sensors, 30 days",
        "",
        f"Written into the same database directly (`bench/history.py`; 30 days cannot come through the pipeline in a "
        f"bench): {d['window_rows']['15m']:,} 15-minute windows, rolled up by PostgreSQL's triggers into "
        f"{d['window_rows']['1h']:,} hourly and {d['window_rows']['1d']:,} daily windows, and one device's raw "
        f"readings ({d['raw_rows']:,} rows, every sensor every 10 s) — {d['seconds']:.0f} s to write. `/trends` over "
        "the 30 days (720 hourly or 30 daily points per series), each window size loaded on its own, clients rotating "
        "over a random zone, a random site and the whole fleet (random sensor). Target: p99 ≤ "
        f"{TARGET_HISTORY_P99_MS:.0f} ms.",
        "",
        "| window | scope | " + " | ".join(f"{n} clients: p50 / p99 (req/s)" for n in clients) + " |",
        "|---|---|" + "---:|" * len(clients),
    ]
    for window, by_clients in trends.items():
        for scope in [k for k in by_clients[clients[0]] if k != "all"] + ["all"]:
            cells = []
            for n in clients:
                r = by_clients[n][scope]
                cells.append(f"{r['p50_ms']:.0f} / **{r['p99_ms']:.0f} ms** ({r['rps']:,.0f})")
            out.append(f"| {window} | {scope} | " + " | ".join(cells) + " |")
    out.append("")
    for n in clients:
        worst = max(by_clients[n]["all"]["p99_ms"] for by_clients in trends.values())
        out.append(
            f"- {n} clients: worst p99 over the window sizes {worst:.0f} ms — "
            f"{_verdict(worst <= TARGET_HISTORY_P99_MS, _limit(worst, TARGET_HISTORY_P99_MS))}"
        )
    flat = c["rss_growth_mib_month"] <= c["rss_growth_mib_day"] + CSV_RSS_NOISE_MIB
    each = ", ".join(f"{r['rows_per_s']:,}" for r in c["runs"])
    out += [
        "",
        f"CSV export of one sensor's month (`/devices/{c['device']}/readings?sensor_type={c['sensor_type']}"
        f"&format=csv`, {c['rows']:,} rows, {c['mib']:.1f} MiB), one streaming client, {len(c['runs'])} downloads: "
        f"median **{c['median_rows_per_s']:,.0f} rows/s** ({each}) — "
        f"{_verdict(c['median_rows_per_s'] >= TARGET_CSV_ROWS_PER_S, _margin(c['median_rows_per_s'], TARGET_CSV_ROWS_PER_S))}"
        f" (target ≥ {TARGET_CSV_ROWS_PER_S:,}). The API's RSS grew by at most {c['rss_growth_mib_month']:.1f} MiB "
        f"during a month's export and {c['rss_growth_mib_day']:.1f} MiB during a day's ({c['day_rows']:,} rows), "
        f"from {c['rss_before_mib']:.0f} MiB — {_verdict(flat, 'flat' if flat else 'grows with the rows')}.",
    ]
    return out


def markdown(results: dict, facts: dict, mode: str) -> str:
    out = [f"# TelemetryPulse benchmark ({mode})", ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k.replace('_', ' ')} | {v} |" for k, v in facts.items()]
    out += [
        "",
        "## Targets (issue 11)",
        "",
        "Baselines: the throughput rows' are measured in this run on the same topic; the others are the last "
        f"full run before the batch engine ({REFERENCE_COMMIT}, committed `bench/results/latest.md`).",
        "",
        "| target | measured | baseline | verdict |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {v} |" for a, b, c, v in targets(results)]

    datasets = throughput_datasets(results)
    if datasets:
        out += [
            "",
            "## Throughput (same topic, same run)",
            "",
            "Rate = events / time from the pipeline ready (worker `Ready`, and the sink started when it is a "
            "process) to every event counted in both window sizes (polled every 100 ms); the baselines from their "
            "first fetched record to their last write. CPU µs / event: the pipeline's processes (worker and sink) "
            "for the pipeline, the consumer process alone for the baselines (PostgreSQL's own CPU is listed below).",
        ]
        for d in datasets:
            out += _throughput_section(d, facts)

    k = keepup_run(results)
    if k:
        out += [
            "",
            f"## Keep-up: {k['devices']:,} devices at {k['target_rate']:,.0f} events/s for {k['produce_s']:.0f} s",
            "",
        ]
        out += _keepup_section(k)
        out += _live_section(k)

    a = results.get("api")
    if a:
        out += [
            "",
            f"## API latency: {a['concurrency']} concurrent clients for {a['seconds']:.0f} s",
            "",
            f"A `telemetrypulse api` process over a database the pipeline filled with {a['events']:,} simulator "
            f"events of {a['devices']} devices (pipeline stopped during the load); clients rotate over the three "
            "routes with random sites, zones, sensors, window sizes and devices (`devkit/api_load.py`).",
            "",
            "| route | requests | errors | p50 | p99 | max | req/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for route, r in a["routes"].items():
            out.append(
                f"| `{route}` | {r['requests']:,} | {r['errors']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
                f"{r['max_ms']:.1f} ms | {r['rps']:,.1f} |"
            )
        if a.get("history"):
            out += _history_section(a["history"], a)

    rec = results.get("recovery")
    if rec:
        s, b = rec["state"], rec["build"]
        out += [
            "",
            "## Recovery",
            "",
            f"State: {s['windows']:,} open windows ({s.get('counted_by', 'from the changelog')}). Built from "
            f"{b['events']:,} events of {b['devices']:,} devices at {b['rate']:,.0f} events/s. Clean stop took "
            f"{rec['stop_s']:.1f} s. Each restart restarts every process of the pipeline.",
            "",
            f"| restart | spawn → Ready | spawn → processing again (probe rows in PostgreSQL) | {REFERENCE_COMMIT} |",
            "|---|---:|---:|---:|",
        ]
        out += [
            f"| {RESTART_NAMES[r['kind']]} | {r['ready_s']:.1f} s | {r['processing_s']:.1f} s | "
            f"{REFERENCE_RECOVERY_S.get(r['kind'], float('nan')):.1f} s |"
            for r in rec["restarts"]
        ]
        out += [
            "",
            f"Counts exact after the restarts: {rec['check']['exact']} ({rec['check']['raw_rows']:,} rows).",
        ]

    soak = results.get("soak")
    if soak:
        f = soak.get("flatness") or {}
        out += [
            "",
            f"## Memory: {soak['seconds'] / 60:.0f} min at {soak['rate']:,.0f} events/s",
            "",
            f"RSS of the pipeline's processes (summed) sampled every {soak['rss_every_s']:.0f} s, timed from the "
            "first event produced; judged over the producing time after a warm-up (imports, first windows, the "
            "dedup horizon filling); the drain afterwards is another load and is not judged. Peak (VmHWM, summed) "
            + _mib(soak["peak_rss_bytes"])
            + ".",
            "",
        ]
        if f:
            out += [
                f"RSS from {f['warmup_s']:.0f} s to {f['end_s']:.0f} s of production ({f['samples']} samples): median "
                f"{_mib(f['median_bytes'])}, min {_mib(f['min_bytes'])}, max {_mib(f['max_bytes'])}: "
                f"±{f['max_deviation']:.1%} around the median; drift from the first to the last tenth "
                f"{f['drift']:+.1%}.",
                "",
            ]
        out += _live_section(soak)

    prof = datasets[0].get("profile") if datasets else None
    if prof:
        out += [
            "",
            "## Where the worker's time goes (py-spy, throughput phase, first dataset)",
            "",
            f"{prof['samples']:,} samples; full table in `bench/results/profile-throughput.txt`.",
            "",
            "| component (callees included) | share of samples |",
            "|---|---:|",
        ]
        out += [f"| {name} | {share:.1%} |" for name, share in prof["components"]]
        out += ["", "| function (total time, incl. callees) | share |", "|---|---:|"]
        out += [f"| `{f}` | {share:.1%} |" for f, share in _interesting(prof["total"])[:15]]
    for phase, error in [*(results.get("errors") or {}).items(), *throughput_errors(results)]:
        out += [
            "",
            f"**Phase {phase} failed:** `{error}` (its figures are missing; see bench/results/logs/).",
        ]
    findings = notes(results)
    if findings:
        out += ["", "## Reading the figures", ""] + [f"- {n}" for n in findings]
    return "\n".join(out) + "\n"


def _keepup_section(k: dict) -> list[str]:
    out = []
    backlog = k.get("backlog_max_judged_s")
    out.append(
        f"Backlog (events produced but not yet counted in PostgreSQL, in seconds of production at "
        f"{k['target_rate']:,.0f}/s) sampled every second: "
        + (
            f"max **{backlog:.2f} s** after the {k['warmup_s']:.0f} s warm-up"
            if backlog is not None
            else "no sample after the warm-up"
        )
        + f"; {k['backlog_at_end']:,} events left when the producer stopped. p99 produce→PostgreSQL "
        f"after the warm-up {_p99(k['row_latency_judged'])} (all: {_p99(k['row_latency'])}), produce→alert "
        f"{_p99(k['alert_latency_judged'])} (all: {_p99(k['alert_latency'])})."
    )
    kb = k.get("kafka_bytes")
    if kb:
        out += [
            "",
            f"Kafka bytes written by the worker for {_mib(kb['events_bytes'])} of input events (the broker's log "
            "sizes, DescribeLogDirs, "
            + ("after the drain" if kb.get("drained", True) else "**backlog not drained: understated**")
            + "):",
            "",
            "| topic | bytes | per input byte |",
            "|---|---:|---:|",
        ]
        ev = kb["events_bytes"] or 1
        out += [
            f"| `{name}` | {_mib(size)} | {size / ev:.2f} |" for name, size in sorted(kb["topics"].items())
        ]
        out.append(
            f"| **all the worker wrote** | {_mib(kb['written_bytes'])} | **{kb['written_bytes'] / ev:.2f}** |"
        )
    ladder = k.get("ladder")
    if ladder:
        out += [
            "",
            f"Rate ladder (same deployment, the same {k['devices']:,} devices reporting more often, "
            f"{ladder['seconds']:.0f} s per rate, judged after a 5 s warm-up, stopped at the first rate that does "
            f"not hold p99 produce→PostgreSQL ≤ {_ms(TARGET_ROW_P99_S)}, or {ABORT_NOTE}): highest rate held "
            + (f"**{ladder['highest_held']:,.0f} events/s**" if ladder["highest_held"] else "**none**")
            + f"; stopped: {ladder['stopped']}.",
        ]
        if ladder["rungs"]:
            out += [
                "",
                "| rate | produced at | p99 → PostgreSQL | p99 → alert | max backlog | CPU µs / event | held |",
                "|---:|---:|---:|---:|---:|---:|---|",
            ]
            for r in ladder["rungs"]:
                out.append(
                    f"| {r['target_rate']:,.0f}/s | {r['rate']:,.0f}/s | {_p99(r['row_latency_judged'])} | "
                    f"{_p99(r.get('alert_latency_judged', {'n': 0}))} | "
                    + (f"{r['backlog_max_judged_s']:.1f} s" if r["backlog_max_judged_s"] is not None else "–")
                    + f" | {r['cpu_us_per_event']:.1f} | {'yes' if r['held'] else 'no: ' + r['why']} |"
                )
        check = ladder.get("check")
        if check:
            out += [
                "",
                "Counts after the ladder: "
                + {True: "exact", False: "**NOT exact**", None: "not verified to the end"}[check["exact"]]
                + (f" ({'; '.join(check['mismatches'])})" if check["mismatches"] else "")
                + ".",
            ]
    return [*out, ""]


ABORT_NOTE = "a backlog beyond 5 s, where the producer is stopped early"


def _p99(q: dict) -> str:
    return _ms(q["p99"]) if q.get("n") else "–"


def notes(results: dict) -> list[str]:
    """Findings that follow from this run's own figures."""
    out = []
    datasets = throughput_datasets(results)
    prof = datasets[0].get("profile") if datasets else None
    if prof:
        shares = dict(prof["components"])
        handoff = sum(v for k, v in shares.items() if k.startswith("Faust"))
        ours = sum(v for k, v in shares.items() if k.startswith("worker:"))
        out.append(
            f"Faust's own per-message machinery takes {handoff:.0%} of the worker's samples (of which the "
            f"handoff of each message to the stream through `wait_first`: {shares.get(COMPONENT_HANDOFF, 0):.0%}); "
            f"the worker's own code — validation, device state, the agent, the sink — {ours:.0%} "
            "(the profile's components name today's modules)."
        )
    for d in datasets:
        c, p, b, f = d["ceiling"], d["pipeline"], d["batch"], d.get("faust_floor")
        line = (
            f"{_devices(d)}: the pipeline spends {p['cpu_us_per_event']:.0f} µs of CPU per event in its own "
            f"processes; the batch baseline {_us_per_event(b['cpu_s'], b['events']):.0f} µs in its consumer (it "
            "validates nothing and keeps no state) plus PostgreSQL's work; the ceiling decodes an event in "
            f"{_us_per_event(c['cpu_s'], c['events']):.1f} µs"
        )
        if f:
            line += (
                f"; a Faust agent that only counts the same topic {_us_per_event(f['cpu_s'], f['events']):.0f} µs "
                f"({f['rate']:,.0f} events/s): no engine on Faust's per-message path can pass that floor"
            )
        out.append(line + ".")
    k = keepup_run(results)
    if k:
        st = k.get("state") or {}
        if st:
            out.append(
                f"keep-up: device records average {st['record_bytes_avg']:,.0f} B, {st['seen_bytes_share']:.0%} of it "
                f"the dedup ids ({st['seen_ids_avg']:.0f} per device), {st['windows_avg']:.1f} open windows."
            )
        if k["backlog_at_end"] > k["target_rate"] * 2:
            out.append(
                f"keep-up: the pipeline processed {k['processed_rate']:,.0f} events/s against {k['rate']:,.0f}/s "
                "produced, so latency grew with the run: its latency figures are those of a growing backlog, "
                "not of the pipeline's path."
            )
        out.append(
            "keep-up: backlog counts events in PostgreSQL through the 15-minute window rows (a cheap sum each "
            "second); the exactness check at the end compares them with the raw rows."
        )
    soak = results.get("soak")
    if soak and soak["backlog_at_end"] > soak["rate"] * 2:
        out.append(
            f"soak: the pipeline processed {soak['processed_rate']:,.0f} events/s against {soak['rate']:,.0f}/s, so "
            "its state and buffers grew with the backlog during the run."
        )
    rec = results.get("recovery")
    if rec:
        kill = next((r for r in rec["restarts"] if r["kind"] == "kill"), None)
        if kill:
            out.append(
                f"Crash restart ({kill['processing_s']:.0f} s) is mostly the broker's session timeout (10 s): the "
                "group waits for the killed member to expire before it rebalances."
            )
    out.append(
        "PostgreSQL here runs with fsync=off (devstack), which flatters the naive pipeline: with fsync on, each "
        "of its per-event commits waits for a WAL flush. The machine (2 cores) is shared with Kafka, PostgreSQL, "
        "the bench and whatever else runs: see 'other processes' in the CPU lines."
    )
    return out


def _live_section(run: dict) -> list[str]:
    r, a, pub = run["row_latency"], run["alert_latency"], run.get("alert_publish_latency", {"n": 0})
    cpu = run["cpu"]
    kept_up = run["backlog_at_end"] <= run["rate"] * 2
    sink = f" + sink {cpu['sink']:.1f}" if "sink" in cpu else ""
    out = [
        f"Producer: `bench/pace.py`, simulator events of {run['devices']:,} devices (each reports every "
        f"{run['devices'] * 4 / run['target_rate']:.0f} s), live event time; the pipeline was started and ready "
        "before. Produce time = Kafka record timestamp (stored as `ts_ingest`). Rows: all rows of "
        f"{run['probe_devices']} sampled devices, polled every {_ms(run['poll_s'])} (a figure is at most one "
        "interval late). Alerts: every episode opened, timed to its arrival at a consumer of the alerts topic.",
        "",
        "| path (whole run) | n | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, q in (
        ("produce → row visible in PostgreSQL", r),
        ("produce → alert arrives on the alerts topic", a),
        ("… of which produce → worker publishes the alert", pub),
    ):
        if q["n"]:
            out.append(
                f"| {name} | {q['n']:,} | {_ms(q['p50'])} | {_ms(q['p95'])} | {_ms(q['p99'])} | {_ms(q['max'])} |"
            )
    out += [
        "",
        ("**Caught up by the end**" if kept_up else "**Fell behind**")
        + f": the pipeline had processed {run['processed_rate']:,.0f} events/s while {run['rate']:,.0f}/s were "
        f"produced; {run['backlog_at_end']:,} events were still to do when the producer stopped"
        + (
            f", done {run['drain_after_produce_s']:.1f} s later."
            if run.get("drained", True)
            else f"; the bench stopped waiting {run['drain_after_produce_s']:.0f} s later."
        )
        + " Counts exact: "
        + {True: "True", False: "**False**", None: "not verified to the end"}[run["check"]["exact"]]
        + (f" ({'; '.join(run['check']['mismatches'])})" if run["check"]["mismatches"] else "")
        + ".",
        "",
        f"CPU seconds: worker {cpu['worker']:.1f}{sink} ({run['worker_cpu_share']:.0%} of a core, "
        f"{run['cpu_us_per_event']:.0f} µs per event), Kafka {cpu.get('kafka', 0):.1f}, PostgreSQL "
        f"{cpu.get('postgres', 0):.1f}, producer {cpu.get('bench_children', 0):.1f}, bench probes {cpu['bench']:.1f}, "
        f"other processes {cpu['other']:.1f}.",
    ]
    return out


def _interesting(total: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Drop the frames every sample has (event loop, CLI entry points)."""
    boring = (
        "run_forever",
        "run_until_complete",
        "_run_once",
        "click/",
        "faust/cli",
        "mode/worker",
        "<module>",
    )
    return [(f, s) for f, s in total if not any(b in f for b in boring)]


def _latency_over_time(ax, run: dict, title: str) -> None:
    """Rows and alerts: latency against the time they were produced (seconds into the run)."""
    start = min([t for t, _ in run["row_series"][:1]] + [t for t, _ in run["alert_series"][:1]] or [0.0])
    for key, label, color in (
        ("row_series", "row in PostgreSQL", "#1f77b4"),
        ("alert_series", "alert", "#d62728"),
    ):
        series = run[key]
        if series:
            ax.scatter([t - start for t, _ in series], [v * 1000 for _, v in series], s=3, alpha=0.4, color=color,
                       label=label)  # fmt: skip
    ax.axhline(
        TARGET_ROW_P99_S * 1000, color="#1f77b4", linestyle="--", linewidth=1, label="p99 target, rows"
    )
    ax.axhline(
        TARGET_ALERT_P99_S * 1000, color="#d62728", linestyle="--", linewidth=1, label="p99 target, alerts"
    )
    for rung in (run.get("ladder") or {}).get("rungs", ()):
        ax.axvline(rung["began_at"] - start, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("produced at, s into the run" + (" (dotted: ladder rungs)" if run.get("ladder") else ""))
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, markerscale=3)


def _throughput_bars(ax, datasets: list[dict]) -> None:
    kinds = (
        ("ceiling", "ceiling", "#999999"),
        ("faust_floor", "Faust floor", "#bbbbbb"),
        ("pipeline", "pipeline", "#1f77b4"),
        ("batch", "batch + PG txn", "#2ca02c"),
        ("naive", "naive", "#d62728"),
    )
    width = 0.8 / len(kinds)
    for i, (key, label, color) in enumerate(kinds):
        xs, rates = [], []
        for j, d in enumerate(datasets):
            if d.get(key):
                xs.append(j + (i - (len(kinds) - 1) / 2) * width)
                rates.append(d[key]["rate"])
        bars = ax.bar(xs, rates, width, color=color, label=label)
        ax.bar_label(bars, labels=[f"{r / 1000:,.1f}k" for r in rates], fontsize=7)
    ax.set_xticks(
        range(len(datasets)), [f"{_devices(d)}\n{d['dataset']['events']:,} events" for d in datasets]
    )
    ax.axhline(TARGET_RATE, color="green", linestyle="--", label=f"target {TARGET_RATE:,}/s")
    ax.set_yscale("log")
    ax.set_ylabel("events/s (log)")
    ax.set_title("Throughput, same topic per dataset, same run")
    ax.legend(loc="upper right", fontsize=7)


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5))
    fig.suptitle(title)
    datasets = throughput_datasets(results)
    if datasets:
        _throughput_bars(axes[0][0], datasets)
        ax = axes[0][1]
        for d in datasets:
            prog = d["pipeline"]["progress"]
            if prog:
                ax.plot([x for x, _ in prog], [y / 1000 for _, y in prog], label=_devices(d))
        ax.set_xlabel("seconds since the pipeline was ready")
        ax.set_ylabel("k events in both windows")
        ax.set_title("Pipeline progress")
        ax.legend(loc="lower right", fontsize=8)
    k = keepup_run(results)
    if k:
        ax = axes[0][2]
        series = k.get("backlog_series") or []
        if series:
            ax.plot(
                [t for t, _ in series], [b for _, b in series], marker=".", label="backlog, s of production"
            )
        ax.axhline(
            TARGET_BACKLOG_S, color="green", linestyle="--", label=f"target ≤ {TARGET_BACKLOG_S:.0f} s"
        )
        ax.axvspan(0, k["warmup_s"], color="grey", alpha=0.15, label="warm-up (not judged)")
        ax.set_xlabel("seconds of production")
        ax.set_ylabel("seconds of production behind")
        ax.set_title(f"Keep-up backlog, {k['devices']:,} devices at {k['target_rate']:,.0f}/s")
        ax.legend(loc="upper left", fontsize=8)
        _latency_over_time(axes[1][0], k, "Keep-up latency over the run (ladder after)")
        ladder = k.get("ladder") or {}
        ax = axes[1][2]
        points = [(k["target_rate"], k["row_latency_judged"])] + [
            (r["target_rate"], r["row_latency_judged"]) for r in ladder.get("rungs", ())
        ]
        points = [(rate, q["p99"]) for rate, q in points if q.get("n")]
        if ladder and points:
            bars = ax.bar([f"{rate / 1000:g}k" for rate, _ in points], [p * 1000 for _, p in points],
                          color=["#1f77b4" if p <= TARGET_ROW_P99_S else "#d62728" for _, p in points])  # fmt: skip
            ax.bar_label(bars, labels=[_ms(p) for _, p in points], fontsize=8)
            ax.axhline(TARGET_ROW_P99_S * 1000, color="green", linestyle="--", label="p99 limit")
            ax.set_yscale("log")
            ax.set_xlabel("steady rate, events/s")
            ax.set_ylabel("p99 produce→PostgreSQL, ms (log)")
            ax.set_title("Rate ladder (stops at the first rate that does not hold)")
            ax.legend(loc="upper left", fontsize=8)
    soak = results.get("soak")
    ax = axes[1][1]
    if soak and soak["rss"]:
        ax.plot([x / 60 for x, _ in soak["rss"]], [y / 2**20 for _, y in soak["rss"]], label="pipeline RSS")
        ax.axvline(soak["produce_s"] / 60, color="grey", linestyle=":", label="producer stops (drain after)")
        f = soak.get("flatness")
        if f:
            m = f["median_bytes"] / 2**20
            ax.axvspan(f["warmup_s"] / 60, f["end_s"] / 60, color="grey", alpha=0.08, label="judged span")
            ax.axhspan(m * (1 - TARGET_RSS_BAND), m * (1 + TARGET_RSS_BAND), color="green", alpha=0.15,
                       label="±10 % of the median over the judged span")  # fmt: skip
        ax.set_ylim(bottom=0)
        ax.set_xlabel("minutes since the first event produced")
        ax.set_ylabel("MiB")
        ax.set_title(f"Pipeline memory, {soak['seconds'] / 60:.0f} min at {soak['rate']:,.0f} events/s")
        ax.legend(loc="lower right", fontsize=8)
        if not (k and k.get("ladder")):
            _latency_over_time(axes[1][2], soak, "Latency over the memory run")
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
