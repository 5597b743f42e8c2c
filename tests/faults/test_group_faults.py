"""F3 (a zombie), F4 (rebalances) and scale-out: several workers in one consumer group while data flows.

The zombie scenario ends with a recovery from the changelog alone (fresh worker, no local state), then
streams the rest of the dataset into the windows that were open: stale state restored from a changelog
that a zombie wrote to last would show as counts below the model's.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from devkit.waiting import wait_for
from tests.faults.harness import (
    FaultRun,
    assigned_input_partitions,
    changelog_regressions,
    dataset_items,
    recovery_reads,
)
from tests.pipeline_model import Dataset, build_dataset

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

SESSION_TIMEOUT_S = 10  # telemetrypulse/app.py broker_session_timeout


async def start_all(pipe, workers) -> None:
    for w in workers:
        w.start()
    for w in workers:
        await w.wait_ready()


async def test_f3_zombie_worker_then_recovery_from_the_changelog(pipeline):
    dataset = build_dataset(seed=103)
    cut = int(len(dataset.messages) * 0.7)
    phase_a = Dataset(dataset.messages[:cut], dataset.devices)
    w0, w1 = pipeline.add_worker(), pipeline.add_worker()
    await start_all(pipeline, [w0, w1])
    report: dict = {}

    # Big chunks: right after one is acknowledged the workers are busy with it, so the freeze likely
    # catches worker-1 inside a batch (outputs in flight, state not yet written): on resume it finishes
    # that batch — a zombie's write — before it learns that its partitions have moved.
    async with FaultRun(pipeline, phase_a, "F3-zombie-phase-a", chunks=8, pause_s=1.5) as run:
        await run.reached(0.5)
        fault = run.fault(f"SIGSTOP worker-1 for {SESSION_TIMEOUT_S + 6}s, then SIGCONT")
        w1.signal(signal.SIGSTOP)  # at once: any delay lets it finish the chunk just produced
        progress = asyncio.create_task(run.progress(fault))
        try:
            await asyncio.sleep(SESSION_TIMEOUT_S + 6)  # past the session timeout: its partitions move
        finally:
            w1.signal(signal.SIGCONT)
        await progress  # V6 counted from the freeze: the group must route around the frozen member
        report["phase_a"] = await run.verify()
        assert w0.alive() and w1.alive()
        report["changelog_after_zombie"] = await changelog_regressions(pipeline.bootstrap, pipeline.app_id)
    run.report(report)

    # A later recovery from the changelog alone: every worker gone, a fresh one with an empty DATA_DIR.
    pipeline.stop_all()
    w2 = pipeline.add_worker()
    w2.start()
    await w2.wait_ready()
    items = dataset_items(dataset)[cut:]
    rest = FaultRun(
        pipeline, dataset, "F3-zombie-phase-b", chunks=10, pause_s=0.5, items=items, already_produced=cut
    )
    async with rest:
        result = await rest.verify()
    rest.report(result)


async def test_f4_rebalances_join_leave_rejoin_sigkill(pipeline):
    dataset = build_dataset(seed=104)
    w0 = pipeline.add_worker()
    await start_all(pipeline, [w0])
    w1 = pipeline.add_worker()
    async with FaultRun(pipeline, dataset, "F4-rebalances", chunks=30, pause_s=1.0) as run:
        # V6 from the end of each change: the joining worker ready, the leaving one gone, the killed one killed
        # (the group notices only after the session timeout).
        await run.reached(0.15)
        fault = run.fault("worker-1 joins")
        w1.start()
        await w1.wait_ready()
        await run.progress(fault)

        await run.reached(0.4)
        fault = run.fault("worker-1 stopped cleanly (SIGTERM)")
        w1.stop()
        await run.progress(fault)

        await run.reached(0.6)
        fault = run.fault("worker-1 joins again")
        w1.start()
        await w1.wait_ready()
        await run.progress(fault)

        await run.reached(0.8)
        fault = run.fault("worker-1 SIGKILLed")
        w1.kill()
        await run.progress(fault)
        result = await run.verify()
    # After the SIGKILL worker-0 took worker-1's partitions over: from its standby copies, not from offset 0.
    takeover = recovery_reads(w0.log_text(), pipeline.names.partition_state_changelog)[-1]
    result["takeover_recovery"] = {p: {"highwater": h, "start": s} for p, (h, s) in takeover.items()}
    run.report(result)
    replayed_from_scratch = [p for p, (high, start) in takeover.items() if high > 0 and start < 0]
    assert not replayed_from_scratch, f"takeover replayed whole changelog partitions {replayed_from_scratch}"


async def test_scale_out_two_workers_share_partitions_exactly(pipeline):
    dataset = build_dataset(seed=105)
    # Snapshots every 2 s: the takeover below is judged by how little of worker-1's changelog worker-0 still has
    # to read, so worker-1 must have written some before it is killed (the default interval is longer than the run).
    w0, w1 = pipeline.add_worker(SNAPSHOT_INTERVAL_S="2"), pipeline.add_worker(SNAPSHOT_INTERVAL_S="2")
    await start_all(pipeline, [w0, w1])
    async with FaultRun(pipeline, dataset, "S1-scale-out", chunks=16, pause_s=0.5) as run:
        await run.reached(0.3)
        shares = [assigned_input_partitions(w.log_text(), pipeline.topic_events) for w in (w0, w1)]
        result = await run.verify()
    assert shares[0] and shares[1], f"both workers process input partitions: {shares}"
    assert shares[0] | shares[1] == set(range(pipeline.partitions)) and not shares[0] & shares[1]

    # Takeover: worker-0 kept standby copies of worker-1's partitions, so it reads (almost) nothing.
    recoveries = len(recovery_reads(w0.log_text(), pipeline.names.partition_state_changelog))
    w1.kill()

    def taken_over() -> bool:
        # Ready again *after* the new recovery block (an earlier "Worker ready" may still be near the log's end).
        text = w0.log_text()
        return (
            len(recovery_reads(text, pipeline.names.partition_state_changelog)) > recoveries
            and "Worker ready" in text.rsplit("Highwater for active changelog partitions:", 1)[-1]
        )

    await wait_for(taken_over, SESSION_TIMEOUT_S + 30, what="worker-0 to take over")
    takeover = recovery_reads(w0.log_text(), pipeline.names.partition_state_changelog)[-1]
    run.report(
        dict(
            result,
            partitions={"worker-0": sorted(shares[0]), "worker-1": sorted(shares[1])},
            takeover_recovery={p: {"highwater": h, "start": s} for p, (h, s) in takeover.items()},
        )
    )
    taken = {p: hs for p, hs in takeover.items() if p in shares[1]}
    assert taken, f"worker-0 recovered worker-1's partitions {shares[1]}: {takeover}"
    # Not from the beginning (-1), and only the tail written since the standby last read.
    assert all(start >= 0 and high - start < max(10, high // 2) for high, start in taken.values()), taken
