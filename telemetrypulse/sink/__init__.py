"""The PostgreSQL sink, a process of its own (`telemetrypulse sink`): the worker's change records from
`<APP_ID>-changes` into PostgreSQL, exactly once.

- batch.py: decode and check change records, merge a consumed batch, coalesce rows of one key
- copy.py: PostgreSQL's binary COPY format from numpy columns
- writer.py: one batch, one transaction (COPY into staging, set-based idempotent upserts, positions)
- service.py: the aiokafka consumer loop, positions from PostgreSQL, retries, SIGTERM, /metrics
"""
