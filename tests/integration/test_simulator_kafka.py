"""The simulator against the real local Kafka (`make up`): exact counts, keys, partitions, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import datetime
from itertools import islice

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devkit import kafka_io
from devkit.paths import ROOT
from telemetrypulse.kafka_admin import ensure_topics
from telemetrypulse.settings import Settings
from telemetrypulse.simulator import VALID, Simulator, produce

pytestmark = pytest.mark.integration

START = "2024-05-06T08:00:00Z"
PARTITIONS = 4


@pytest.fixture
def settings(stack) -> Settings:
    return Settings(kafka_bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"], topic_partitions=PARTITIONS)


@pytest.fixture
async def topics(stack):
    """Unique topic names; whatever of them exists afterwards is deleted."""
    names: list[str] = []

    def new() -> str:
        names.append(f"tp-sim-{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield new
    await kafka_io.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], names)


def by_key(records) -> dict[bytes, list[tuple[int, bytes]]]:
    out = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[record.key].append((record.partition, record.value))
    return out


def simulator(**overrides) -> Simulator:
    options = dict(seed=21, start=START, duplicate_fraction=0.05, invalid_fraction=0.05)
    return Simulator(**(options | overrides))


async def test_ensure_topics_creates_missing_topics_once(settings, topics):
    a, b = topics(), topics()
    await ensure_topics(settings, [a], 3)
    await ensure_topics(settings, [a, b], 3)  # a exists: no error, left as it is
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([a, b])}
    finally:
        await admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {a: 3, b: 3}


async def test_burst_and_paced_produce_exactly_the_generated_messages(settings, stack, topics):
    count = 600
    expected = list(islice(simulator().messages(), count))
    expected_by_key = defaultdict(list)
    for key, value, _kind in expected:
        expected_by_key[key].append(value)

    burst_topic, paced_topic = topics(), topics()
    burst = await produce(settings, simulator(), topic=burst_topic, count=count, burst=True)
    paced = await produce(settings, simulator(), topic=paced_topic, count=count, rate=2000)
    assert burst.sent == paced.sent == count
    assert burst.kinds == paced.kinds
    assert burst.kinds[VALID] < count  # duplicates and invalid ones went out too

    partition_of_key = {}
    for topic in (burst_topic, paced_topic):
        records = await kafka_io.read_topic(stack["KAFKA_BOOTSTRAP_SERVERS"], topic)
        assert len(records) == count
        received = by_key(records)
        # Per key: the same messages in the same order, all in one partition.
        assert {key: [v for _, v in items] for key, items in received.items()} == expected_by_key
        for key, items in received.items():
            partitions = {p for p, _ in items}
            assert len(partitions) == 1
            # Burst mode picks partitions itself; they must be the ones producer.send() picked.
            assert partition_of_key.setdefault(key, partitions.pop()) == items[0][0]
        for record in records:
            try:
                event = json.loads(record.value)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("device_id"), str):
                assert record.key == event["device_id"].encode()
    assert len(set(partition_of_key.values())) > 1


def _cli_env(stack) -> dict[str, str]:
    env = dict(os.environ)
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack["KAFKA_BOOTSTRAP_SERVERS"], TOPIC_PARTITIONS=str(PARTITIONS))
    return env


async def test_cli_burst_with_count(stack, topics):
    topic = topics()
    argv = ["--burst", "--count", "300", "--seed", "5", "--start", START, "--topic", topic, "--sites", "1"]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "telemetrypulse.simulator", *argv],
        env=_cli_env(stack),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    records = await kafka_io.read_topic(stack["KAFKA_BOOTSTRAP_SERVERS"], topic)
    assert len(records) == 300
    assert {r.key for r in records} == {
        f"site-01.zone-0{z}.dev-0{d}".encode() for z in range(1, 6) for d in (1, 2, 3)
    }


async def test_cli_rate_mode_stops_cleanly_on_sigint_and_loses_nothing(stack, topics):
    topic = topics()
    process = subprocess.Popen(
        [sys.executable, "-m", "telemetrypulse.simulator", "--rate", "40", "--topic", topic],
        env=_cli_env(stack),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(4)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode()
    produced = re.search(rb"produced (\d+) events", stderr)
    assert produced, stderr.decode()
    sent = int(produced.group(1))
    assert sent > 40  # about 4 s at 40/s, minus start-up
    records = await kafka_io.read_topic(stack["KAFKA_BOOTSTRAP_SERVERS"], topic)
    assert len(records) == sent
    # Live mode: event time is the clock.
    newest = max(json.loads(r.value)["ts_event"] for r in records)
    assert abs(time.time() - datetime.fromisoformat(newest).timestamp()) < 120
