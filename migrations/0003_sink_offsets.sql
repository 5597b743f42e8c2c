-- The sink process (issue 11): its consumed positions, kept in the same transaction as the rows they cover, and
-- the sum of squares of each device window (issue 14 builds the population stddev and its exact roll-ups on it).

-- Per consumer group, topic and partition: the next offset to read. Only ever moves forward (GREATEST), so
-- several sinks of one group, or a sink rewriting older records, can never move it back.
CREATE TABLE IF NOT EXISTS sink_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL CHECK (partition >= 0),
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

ALTER TABLE telemetry_device_agg_5m ADD COLUMN IF NOT EXISTS sum_sq_value double precision NOT NULL DEFAULT 0;
ALTER TABLE telemetry_device_agg_15m ADD COLUMN IF NOT EXISTS sum_sq_value double precision NOT NULL DEFAULT 0;
