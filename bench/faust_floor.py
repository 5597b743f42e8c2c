"""The framework's floor: a Faust agent that only counts the events of a topic, in `take_events` batches.

Same app settings that shape delivery as the worker (stream buffer, batch size and wait), nothing per event of
ours. What the worker loses against this is our own work; what this loses against the bare-consumer ceiling is
Faust's per-message machinery (consumer thread → conductor → stream → take buffer → acks). Run as its own process
(`python -m bench.faust_floor …`, a `faust worker` inside); the last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

import faust
import orjson

from bench.span import FromFirstRecord
from telemetrypulse.settings import get_settings


def build_app(bootstrap: str, topic_name: str, expect: int, data_dir: str, app_id: str) -> faust.App:
    settings = get_settings()
    # The batching today's worker had (WORKER_BATCH_MAX/WITHIN_S, gone from settings with the batch engine).
    batch_max = getattr(settings, "worker_batch_max", 4000)
    batch_within_s = getattr(settings, "worker_batch_within_s", 0.05)
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=data_dir,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=20000,  # as telemetrypulse.app
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    span = FromFirstRecord()
    seen = {"events": 0}

    @app.agent(topic)
    async def count(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(batch_max, within=batch_within_s):
            span.first_record()
            seen["events"] += len(batch)
            if seen["events"] >= expect:
                elapsed = span.seconds()
                result = {
                    "events": seen["events"],
                    "seconds": elapsed,
                    "rate": seen["events"] / elapsed,
                    "cpu_s": span.cpu_s(),
                }
                # File descriptor 1: Faust's worker has replaced sys.stdout with its logger.
                os.write(1, orjson.dumps(result) + b"\n")
                # Leaving the group cleanly takes seconds and measures nothing; the bench deletes the topic.
                os._exit(0)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faust_floor")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    # The bench passes one under its deployment's APP_ID, so that the deployment's clean-up deletes the internal
    # topics Faust creates for it.
    parser.add_argument("--app-id", default=f"bench-floor-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    app = build_app(args.bootstrap, args.topic, args.expect, args.data_dir, args.app_id)
    sys.argv = ["faust", "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
