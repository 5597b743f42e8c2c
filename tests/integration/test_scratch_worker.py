"""SCRATCH: the worker's change records folded equal the model (no sink)."""

import asyncio
import uuid

from telemetrypulse import changes
from tests import support
from tests.pipeline_model import build_dataset, expected_outcome


async def folded(pipe):
    records = await support.read_topic(pipe.bootstrap, f"{pipe.app_id}-changes", timeout_s=10)
    raw, windows = {}, {}
    for r in records:
        rec = changes.decode(r.value)
        for row in rec.raw_rows():
            d = rec.dims[row["dim"]]
            raw[(d[0], str(uuid.UUID(bytes=row["event_id"].tobytes())))] = bool(row["late"])
        for row in rec.window_rows():
            d = rec.dims[row["dim"]]
            key = (int(row["size_s"]), d[0], changes.SENSORS[row["sensor"]], int(row["start_us"]))
            if key not in windows or windows[key][0] < row["version"]:
                windows[key] = (int(row["version"]), int(row["count"]), float(row["sum"]))
    return raw, windows


async def wait_folded(pipeline, expected):
    for _ in range(90):
        raw, windows = await folded(pipeline)
        if len(raw) >= len(expected.raw):
            return raw, windows
        await asyncio.sleep(1)
    return raw, windows


def check(raw, windows, expected):
    assert set(raw) == set(expected.raw)
    want = {k: (a["count"], a["sum"]) for k, a in expected.windows.items()}
    got = {k: (v[1], v[2]) for k, v in windows.items()}
    assert set(got) == set(want)
    bad = [k for k in want if got[k][0] != want[k][0] or abs(got[k][1] - want[k][1]) > 1e-6]
    assert not bad, bad[:5]


async def test_scratch(pipeline):
    dataset = build_dataset(seed=5)
    expected = expected_outcome(dataset, pipeline.grace_s)
    msgs = [(m.key, m.value) for m in dataset.messages]
    worker = pipeline.add_worker(SNAPSHOT_INTERVAL_S="2")
    worker.start()
    await pipeline.wait_processing(worker)
    await pipeline.produce(msgs[: len(msgs) // 3])
    await asyncio.sleep(5)
    worker.kill()
    await pipeline.produce(msgs[len(msgs) // 3 : 2 * len(msgs) // 3])
    worker.start()
    await pipeline.wait_processing(worker)
    await asyncio.sleep(1)
    worker.stop()
    await pipeline.produce(msgs[2 * len(msgs) // 3 :])
    worker.start()
    await pipeline.wait_processing(worker)
    raw, windows = await wait_folded(pipeline, expected)
    check(raw, windows, expected)
    alerts = support.decode_all(await support.read_topic(pipeline.bootstrap, pipeline.topic_alerts))
    ids = {(a["alert_id"], a["status"]) for a in alerts}
    print("alerts", len(alerts), "distinct", len(ids), "expected", len(expected.alerts))
    import re

    print("\n".join(re.findall(r"start positions: .*", worker.log_text())))
