"""The sink agent: batches of worker changes from the internal changes topic into PostgreSQL.

While PostgreSQL is down the agent waits (retrying) and Kafka holds the changes; the process agent
keeps going. Offsets of the changes topic are committed only after the batch is written.
"""

from __future__ import annotations

import faust

from telemetrypulse.app import app, settings
from telemetrypulse.sink import Changes, PostgresSink
from telemetrypulse.topology import changes_topic

SINK_BATCH_MESSAGES = 200
SINK_BATCH_WITHIN_S = 0.1


@app.agent(changes_topic)
async def write_changes(stream: faust.StreamT) -> None:
    sink = PostgresSink(settings.dsn)
    try:
        async for values in stream.take(SINK_BATCH_MESSAGES, within=SINK_BATCH_WITHIN_S):
            await sink.write_until_done(Changes.from_messages(values))
    finally:
        await sink.close()
