"""Notifier figures (not a test): `python -m tests.integration.notifier_figures [runs]` against the stack.

Per run, a fresh deployment (database, topics of 4 partitions) and its `telemetrypulse notify` child process deliver to
one in-process receiver (tests/webhook_receiver.py):
- latency: 150 alert messages produced one every 100 ms; produce → the receiver's 2xx, p50/p95/max;
- backlog: 2,000 messages produced at once; time until the receiver has all of them, and the rate.
Prints one JSON line per run and the medians.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid

import orjson
from aiokafka import AIOKafkaProducer

from devkit import kafka_io
from devkit.deployment import Deployment
from devkit.local_stack import stack_env
from devkit.paths import TEST_OUTPUT
from devkit.waiting import wait_for
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec-figures"


def message(i: int, tag: str) -> tuple[bytes, bytes, str]:
    alert_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}-{i}"))
    device = f"d{i % 50}"
    body = {"alert_id": alert_id, "status": "open", "site_id": "s", "device_id": device}
    return device.encode(), orjson.dumps(body), f"{alert_id}:open"


async def one_run(stack: dict[str, str]) -> dict:
    pipe = await Deployment(stack, logs=TEST_OUTPUT / "logs", kind="figures", partitions=4).setup()
    receiver = await WebhookReceiver(SECRET.encode(), "figures").start()
    notifier = pipe.add_notifier(WEBHOOK_URLS=receiver.url, WEBHOOK_SECRET=SECRET)
    notifier.start()
    figures: dict = {}
    try:
        await notifier.wait_ready(60)
        tag, sent = uuid.uuid4().hex, {}
        producer = AIOKafkaProducer(bootstrap_servers=pipe.bootstrap, linger_ms=0)
        await producer.start()
        try:
            for i in range(150):
                key, value, delivery = message(i, tag)
                await (await producer.send(pipe.topic_alerts, key=key, value=value))
                sent[delivery] = time.monotonic()
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()
        await wait_for(lambda: set(sent) <= receiver.delivered(), 60, interval_s=0.1)
        firsts = receiver.first_success()
        latencies = sorted(firsts[d] - sent[d] for d in sent)
        figures["latency_p50_ms"] = round(statistics.median(latencies) * 1000)
        figures["latency_p95_ms"] = round(latencies[int(len(latencies) * 0.95)] * 1000)
        figures["latency_max_ms"] = round(latencies[-1] * 1000)

        tag = uuid.uuid4().hex
        backlog = [message(i, tag) for i in range(2000)]
        started = time.monotonic()
        await kafka_io.produce(pipe.bootstrap, pipe.topic_alerts, [(k, v) for k, v, _ in backlog])
        wanted = {d for _, _, d in backlog}
        await wait_for(lambda: wanted <= receiver.delivered(), 300, interval_s=0.2)
        elapsed = time.monotonic() - started
        figures["backlog_2000_s"] = round(elapsed, 2)
        figures["backlog_per_s"] = round(2000 / elapsed)
        figures["repeats"] = len(receiver.repeats())
    finally:
        await asyncio.to_thread(notifier.stop)
        await receiver.stop()
        await pipe.close()
    return figures


async def main(runs: int) -> None:
    stack = stack_env()
    results = []
    for _ in range(runs):
        figures = await one_run(stack)
        print(json.dumps(figures), flush=True)
        results.append(figures)
    print("median", json.dumps({k: statistics.median(r[k] for r in results) for k in results[0]}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
