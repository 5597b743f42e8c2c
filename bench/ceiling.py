"""The ceiling: a bare aiokafka consumer that only fetches and decodes (orjson) every event of a topic.

Nothing the pipeline does per event can be cheaper than this in Python on this machine, so pipeline/ceiling says
how much of the achievable rate the worker gets. Run as its own process (`python -m bench.ceiling …`) so that, like
the worker, it has a core to itself; the last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from bench.span import FromFirstRecord


async def consume(bootstrap: str, topic: str, expect: int) -> dict:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        # Faust's worker fetches with the same per-partition limit (aiokafka's default, 1 MiB).
        max_partition_fetch_bytes=1024 * 1024,
    )
    await consumer.start()
    span = FromFirstRecord()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = orjson.loads
        total = decoded_bytes = 0
        with tqdm(
            total=expect, desc="ceiling", unit="ev", unit_scale=True, leave=False, mininterval=0.5
        ) as bar:
            while total < expect:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
                if batch:
                    span.first_record()
                n = 0
                for records in batch.values():
                    for r in records:
                        loads(r.value)
                        decoded_bytes += len(r.value)
                    n += len(records)
                total += n
                bar.update(n)
        elapsed = span.seconds()
        return {
            "events": total,
            "seconds": elapsed,
            "rate": total / elapsed if elapsed else 0.0,
            "cpu_s": span.cpu_s(),
            "bytes": decoded_bytes,
        }
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.topic, args.expect))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
