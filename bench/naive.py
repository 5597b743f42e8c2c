"""The naive baseline: the per-event pipeline of the kind the seed started from.

One Kafka record at a time: decode and validate it (the product's own validator), then one database round trip
that inserts the raw row and upserts its 5 m and 15 m windows (`count + 1`, `sum + value`, …), committed on its
own. No batching, no state: the database is the state. Kafka offsets are auto-committed, as a seed consumer does.
It is correct for a single in-order pass (duplicates by event id are not counted twice), which is all a benchmark
on unique events asks of it; it is what one writes first, and what the worker's design has to beat.

Run as its own process (`python -m bench.naive …`) on a prefix of the benchmark topic; last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from tqdm import tqdm

from bench.span import FromFirstRecord
from devkit.epoch import floor_us
from telemetrypulse import db
from telemetrypulse.models import Invalid, from_us, now_us, validate_event

_WINDOW_UPSERT = """
    INSERT INTO {table} AS t (window_start, window_end, device_id, site_id, zone_id, sensor_type, count_events,
                              sum_value, avg_value, min_value, max_value, first_ts, last_ts, version)
    SELECT {start}, {start} + interval '{size} seconds', $2, $3, $4, $5, 1, value, value, value, value,
           ts_event, ts_event, 0
    FROM ev
    ON CONFLICT (device_id, sensor_type, window_start) DO UPDATE SET
        count_events = t.count_events + 1,
        sum_value = t.sum_value + excluded.sum_value,
        avg_value = (t.sum_value + excluded.sum_value) / (t.count_events + 1),
        min_value = LEAST(t.min_value, excluded.min_value),
        max_value = GREATEST(t.max_value, excluded.max_value),
        first_ts = LEAST(t.first_ts, excluded.first_ts),
        last_ts = GREATEST(t.last_ts, excluded.last_ts),
        updated_at = now()
"""

PER_EVENT_SQL = f"""
WITH ev AS (
    INSERT INTO telemetry_events (event_id, device_id, site_id, zone_id, sensor_type, value, unit, ts_event, ts_ingest)
    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT DO NOTHING
    RETURNING ts_event, value
), w5 AS ({_WINDOW_UPSERT.format(table="telemetry_device_agg_5m", start="$10::timestamptz", size=300)}
), w15 AS ({_WINDOW_UPSERT.format(table="telemetry_device_agg_15m", start="$11::timestamptz", size=900)}
)
SELECT 1
"""


async def run(bootstrap: str, topic: str, dsn: str, count: int) -> dict:
    await db.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    partitions = db.DailyPartitions()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-naive-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    await consumer.start()
    span = FromFirstRecord()
    done = invalid = 0
    try:
        with tqdm(total=count, desc="naive", unit="ev", unit_scale=True, leave=False, mininterval=0.5) as bar:
            while done < count:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                if batch:
                    span.first_record()
                for records in batch.values():
                    for r in records:
                        if done >= count:
                            break
                        event = validate_event(r.value, now_us())
                        done += 1
                        bar.update(1)
                        if isinstance(event, Invalid):
                            invalid += 1
                            continue
                        day = date(1970, 1, 1) + timedelta(days=event.ts_event_us // 86_400_000_000)
                        await partitions.ensure(conn, {day})
                        await conn.execute(
                            PER_EVENT_SQL,
                            event.event_id,
                            event.device_id,
                            event.site_id,
                            event.zone_id,
                            event.sensor_type,
                            event.value,
                            event.unit,
                            from_us(event.ts_event_us),
                            datetime.fromtimestamp(r.timestamp / 1000, UTC),
                            from_us(floor_us(event.ts_event_us, 300)),
                            from_us(floor_us(event.ts_event_us, 900)),
                        )
        elapsed = span.seconds()
        raw = await conn.fetchval("SELECT count(*) FROM telemetry_events")
        w5 = await conn.fetchval("SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_5m")
        w15 = await conn.fetchval("SELECT coalesce(sum(count_events), 0) FROM telemetry_device_agg_15m")
    finally:
        await consumer.stop()
        await conn.close()
    return {
        "events": done,
        "invalid": invalid,
        "seconds": elapsed,
        "rate": done / elapsed if elapsed else 0.0,
        "cpu_s": span.cpu_s(),
        "raw_rows": raw,
        "window_5m_events": int(w5),
        "window_15m_events": int(w15),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    result = asyncio.run(run(args.bootstrap, args.topic, args.dsn, args.count))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
