"""The batch baseline, "batch + PostgreSQL transaction": the obvious fast design a user would measure us against.

aiokafka `getmany` batches; one PostgreSQL transaction per batch: COPY into a temporary staging table, `INSERT …
ON CONFLICT DO NOTHING RETURNING` into the raw table, set-based upserts of the 5 m and 15 m windows of only the rows
that were new, and the Kafka offsets stored in the same transaction — so a crash and restart anywhere gives every raw
row and every window count exactly once. No alerts, latest values, lateness or dead letters; the event contract is
left to PostgreSQL's casts (a bad event would fail its batch). The product's tables, in a database of its own
migrated with the product's migrations. Run as its own process (`python -m bench.batch_baseline …`) on the whole
benchmark topic; the last stdout line is the JSON result, and the bench then checks the database exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from bench.span import FromFirstRecord
from telemetrypulse import db

SETUP_SQL = """
CREATE TEMP TABLE stage (event_id text, device_id text, site_id text, zone_id text, sensor_type text,
                         value float8, unit text, ts_event text, ts_ingest_ms int8) ON COMMIT DELETE ROWS;
CREATE TABLE IF NOT EXISTS bench_batch_offsets (topic text, partition int, next_offset bigint NOT NULL,
                                                PRIMARY KEY (topic, partition));
"""

# Grouped first, so no upsert touches a row twice; `new` holds only the rows this batch really inserted.
WINDOW_UPSERT = """{table} AS (
    INSERT INTO {table} AS t (window_start, window_end, device_id, site_id, zone_id, sensor_type, count_events,
                              sum_value, avg_value, min_value, max_value, first_ts, last_ts, version)
    SELECT w, w + interval '{size} seconds', device_id, min(site_id), min(zone_id), sensor_type, count(*),
           sum(value), avg(value), min(value), max(value), min(ts_event), max(ts_event), 0
    FROM (SELECT date_bin('{size} seconds', ts_event, 'epoch') AS w, * FROM new) AS n
    GROUP BY w, device_id, sensor_type
    ON CONFLICT (device_id, sensor_type, window_start) DO UPDATE SET
        count_events = t.count_events + excluded.count_events, sum_value = t.sum_value + excluded.sum_value,
        avg_value = (t.sum_value + excluded.sum_value) / (t.count_events + excluded.count_events),
        min_value = least(t.min_value, excluded.min_value), max_value = greatest(t.max_value, excluded.max_value),
        first_ts = least(t.first_ts, excluded.first_ts), last_ts = greatest(t.last_ts, excluded.last_ts),
        updated_at = now())"""

BATCH_SQL = f"""
WITH new AS (
    INSERT INTO telemetry_events (event_id, device_id, site_id, zone_id, sensor_type, value, unit, ts_event, ts_ingest)
    SELECT event_id::uuid, device_id, site_id, zone_id, sensor_type, value, unit, ts_event::timestamptz,
           'epoch'::timestamptz + ts_ingest_ms * interval '1 millisecond'
    FROM stage ON CONFLICT DO NOTHING
    RETURNING device_id, site_id, zone_id, sensor_type, value, ts_event
), {WINDOW_UPSERT.format(table="telemetry_device_agg_5m", size=300)},
{WINDOW_UPSERT.format(table="telemetry_device_agg_15m", size=900)}
SELECT count(*) FROM new
"""

SAVE_OFFSETS = """
INSERT INTO bench_batch_offsets SELECT $1, unnest($2::int[]), unnest($3::int8[])
ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset
"""


async def run(bootstrap: str, topic: str, dsn: str, count: int, max_records: int) -> dict:
    await db.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    await conn.execute(SETUP_SQL)
    stored = dict(
        await conn.fetch("SELECT partition, next_offset FROM bench_batch_offsets WHERE topic = $1", topic)
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    await consumer._client.force_metadata_update()
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*(tp for tp in tps if tp.partition not in stored))
    for tp in tps:
        if tp.partition in stored:
            consumer.seek(tp, stored[tp.partition])  # resume exactly after the last committed batch
    partitions, span, loads = db.DailyPartitions(), FromFirstRecord(), orjson.loads
    done = inserted = batches = 0
    try:
        with tqdm(total=count, desc="batch baseline", unit="ev", unit_scale=True, leave=False) as bar:
            while done < count:
                batch = await consumer.getmany(timeout_ms=1000, max_records=max_records)
                if not batch:
                    continue
                span.first_record()
                rows = []
                for records in batch.values():
                    for r in records:
                        e = loads(r.value)
                        rows.append((e["event_id"], e["device_id"], e["site_id"], e["zone_id"], e["sensor_type"],
                                     float(e["value"]), e.get("unit"), e["ts_event"], r.timestamp))  # fmt: skip
                async with conn.transaction():
                    await conn.copy_records_to_table("stage", records=rows)
                    days = await conn.fetch(
                        "SELECT DISTINCT (ts_event::timestamptz AT TIME ZONE 'UTC')::date FROM stage"
                    )
                    await partitions.ensure(conn, {r[0] for r in days})
                    inserted += await conn.fetchval(BATCH_SQL)
                    ends = [(tp.partition, records[-1].offset + 1) for tp, records in batch.items()]
                    await conn.execute(SAVE_OFFSETS, topic, [p for p, _ in ends], [o for _, o in ends])
                done, batches = done + len(rows), batches + 1
                bar.update(len(rows))
        elapsed, cpu = span.seconds(), span.cpu_s()
    finally:
        await consumer.stop()
        await conn.close()
    return {"events": done, "inserted": inserted, "batches": batches, "seconds": elapsed,
            "rate": done / elapsed, "cpu_s": cpu}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_baseline")
    for name in ("--bootstrap", "--topic", "--dsn"):
        parser.add_argument(name, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument(
        "--max-records", type=int, default=20_000, help="records per getmany (one transaction)"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.bootstrap, args.topic, args.dsn, args.count, args.max_records))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
