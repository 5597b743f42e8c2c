"""F1 (SIGKILL ×3), F2 (SIGKILL + RocksDB folder deleted) and F7 (poison heads + restart): the worker
process dies while data flows; the outcome must still be exactly the SPEC model's."""

from __future__ import annotations

import shutil

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devkit import kafka_io
from tests.faults.harness import FaultRun, Item, dataset_items
from tests.pipeline_model import Dataset, Message, build_dataset

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

KAFKA_DEFAULT_MAX_MESSAGE = 1_048_588  # Kafka's max.message.bytes default


async def set_topic_config(pipe, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=pipe.bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)
                for name in (pipe.topic_events, pipe.topic_alerts, pipe.topic_dlq)
            ]
        )
    finally:
        await admin.close()


async def test_f1_worker_sigkilled_three_times(pipeline):
    dataset = build_dataset(seed=101)
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    async with FaultRun(pipeline, dataset, "F1-sigkill-x3", chunks=30, pause_s=1.0) as run:
        for fraction in (0.2, 0.5, 0.8):
            await run.reached(fraction)
            await run.kill_and_restart(worker, f"SIGKILL at {fraction:.0%}")
        result = await run.verify()
    run.report(result)


async def test_f2_worker_sigkilled_and_its_rocksdb_deleted(pipeline):
    dataset = build_dataset(seed=102)
    worker = pipeline.add_worker()
    worker.start()
    await worker.wait_ready()
    data_dir = pipeline.tmp / "worker-0"
    async with FaultRun(pipeline, dataset, "F2-sigkill-rocksdb-deleted", chunks=24, pause_s=1.0) as run:
        await run.reached(0.5)
        fault = run.fault("SIGKILL + rm -rf DATA_DIR at 50%")
        worker.kill()
        assert any(data_dir.rglob("*.sst")) or any(data_dir.rglob("CURRENT")), "RocksDB was on disk"
        shutil.rmtree(data_dir)
        worker.start()
        await run.progress(fault)
        result = await run.verify()
    run.report(result)


async def test_f7_poison_heads_then_restart(pipeline):
    """Poison at offset 0 of every partition, the dataset behind it, then a SIGKILL restart: each poison is
    dead-lettered once, nothing stalls or loops, and the rest lands exactly."""
    dataset = build_dataset(seed=107 + 1)
    # Kafka's own default message limit (what managed clusters keep): a dead letter holds its payload in
    # base64, a third larger than the message it came from.
    await set_topic_config(pipeline, {"max.message.bytes": str(KAFKA_DEFAULT_MAX_MESSAGE)})
    poisons = [
        (0, b"\xff\xfe", b"\x00\xff not even utf-8"),  # neither key nor value decodes
        (1, b"dev-1", b"[" * 100_000 + b"]" * 100_000),  # nesting beyond any JSON parser's depth
        (
            2,
            b"dev-2",
            b"{" + b"x" * (KAFKA_DEFAULT_MAX_MESSAGE - 2000),
        ),  # fits the topic; its dead letter not
        (3, None, b'{"event_id": 5}'),  # no key, a field of the wrong type, the rest missing
    ]
    messages = [Message(key, value, "invalid") for _, key, value in poisons] + dataset.messages
    items = [Item(key, value, partition) for partition, key, value in poisons] + dataset_items(dataset)
    heads = Dataset(messages, dataset.devices)
    async with FaultRun(
        pipeline, heads, "F7-poison-heads-restart", chunks=24, pause_s=1.0, items=items
    ) as run:
        await run.reached(0.1)  # the poison heads and the first chunk are in the topic
        worker = pipeline.add_worker()
        worker.start()
        await worker.wait_ready()
        await run.reached(0.5)
        await run.kill_and_restart(worker, "SIGKILL + restart with poison heads behind the committed offsets")
        result = await run.verify()
    dead = kafka_io.json_values(await kafka_io.read_topic(pipeline.bootstrap, pipeline.topic_dlq))
    per_head = {
        p: sum(1 for d in dead if (d["source_partition"], d["source_offset"]) == (p, 0)) for p in range(4)
    }
    result["dead_letters_per_poison_head"] = per_head
    result["dead_letter_errors"] = {
        p: next(d["error"] for d in dead if (d["source_partition"], d["source_offset"]) == (p, 0))
        for p in per_head
    }
    run.report(result)
    # Once each, twice at most (a crash between publishing the dead letter and recording the partition fence).
    assert all(1 <= n <= 2 for n in per_head.values()), per_head
    assert worker.alive()
