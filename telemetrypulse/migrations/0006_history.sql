-- History (issue 14, SPEC §11): the population standard deviation of every window, hourly and daily windows kept
-- as exact roll-ups of the 15-minute windows, and the retention boundaries the sink and the worker share.

-- Population standard deviation from a window's count, sum and sum of squares (the worker folds all three; a zone
-- or a longer window adds them up, so its deviation is exact as well). sum_sq/n - mean² cancels catastrophically
-- when the spread is tiny next to the mean: float rounding can leave a variance of -1e-13 (clamped to 0), and a
-- window whose values are all equal gets exactly 0 rather than a rounding residue.
CREATE FUNCTION telemetry_stddev(n double precision, s double precision, q double precision,
                                 lo double precision, hi double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lo = hi THEN 0::double precision
                ELSE sqrt(GREATEST(q / n - (s / n) * (s / n), 0)) END
$$;

ALTER TABLE telemetry_device_agg_5m ADD COLUMN stddev_value double precision
    GENERATED ALWAYS AS (telemetry_stddev(count_events, sum_value, sum_sq_value, min_value, max_value)) STORED;
ALTER TABLE telemetry_device_agg_15m ADD COLUMN stddev_value double precision
    GENERATED ALWAYS AS (telemetry_stddev(count_events, sum_value, sum_sq_value, min_value, max_value)) STORED;

-- Hourly and daily device windows: the same columns, indexes and stddev as the 15-minute table. They are kept by
-- PostgreSQL itself (the triggers below), so every writer of the 15-minute table keeps them exact.
CREATE TABLE telemetry_device_agg_1h (LIKE telemetry_device_agg_15m INCLUDING ALL) WITH (fillfactor = 80);
CREATE TABLE telemetry_device_agg_1d (LIKE telemetry_device_agg_15m INCLUDING ALL) WITH (fillfactor = 80);

-- Retention boundaries (one row), moved forward only by the worker's retention job (telemetrypulse/retention.py):
-- raw rows with ts_event before `raw_before` and window rows ending at or before `window_5m_before` /
-- `window_15m_before` are gone, and the sink refuses to write them again. `-infinity`: nothing removed yet.
-- The job changes this row only under an exclusive advisory lock that every sink transaction holds shared
-- (db.HISTORY_LOCK_ID): a sink transaction sees one set of boundaries from start to end, and nothing the job
-- deletes afterwards can be written back by a transaction that started before.
CREATE TABLE telemetry_retention (
    singleton          boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    raw_before         timestamptz NOT NULL DEFAULT '-infinity',
    window_5m_before   timestamptz NOT NULL DEFAULT '-infinity',
    window_15m_before  timestamptz NOT NULL DEFAULT '-infinity',
    updated_at         timestamptz NOT NULL DEFAULT now()
);
INSERT INTO telemetry_retention DEFAULT VALUES;

-- Hourly and daily windows follow every change of a 15-minute window, in the same statement's transaction: a
-- statement trigger (one call per upsert of a whole batch, not one per row) adds what each changed window gained
-- since its previous version — its new events' count, sum and sum of squares; its min, max, first and last — to its
-- hour and its day. Deltas, not a recomputation from the 15-minute table: a window's new version always contains its
-- old version (the sink only moves a window forward), so counts and sums add, min of mins and max of maxes hold,
-- and the result does not need the 15-minute rows to still be there — retention deletes those while the hours and
-- days are kept forever. Two sinks writing at once stay exact: each version step of a 15-minute row happens once
-- (row lock and version guard), and additions commute. A rewrite of a window at the version it has (a replay) is
-- skipped by the sink's guard, so it adds nothing. A window at or before the 15-minute retention boundary adds
-- nothing either: its hour and day keep what they had when its day's 15-minute rows were deleted (the sink refuses
-- such rows anyway; this covers any other writer). Site and zone of an hour or a day follow its most recent change
-- (a device that moved keeps one row; one that moved inside a single sink batch takes either zone).
--
-- PostgreSQL allows transition tables on single-event triggers only, hence two triggers on one function; the
-- statement is built per call (EXECUTE sees the calling trigger's transition tables). One statement per call: the
-- deltas are read once, summed per hour, the hours summed per day, and both upserted. `date_bin` from the epoch:
-- UTC-aligned whatever the session's TimeZone; `+ 24 hours`, never `+ 1 day` (a calendar day in a DST zone is 23 or
-- 25 hours). Rows are upserted in key order (two sinks lock them in the same order). work_mem: a batch's deltas are
-- grouped in memory, not in temporary files. Cost: about two window upserts per changed 15-minute row (README,
-- Performance).
CREATE FUNCTION telemetry_rollup_15m() RETURNS trigger LANGUAGE plpgsql SET work_mem = '64MB' AS $fn$
DECLARE
    deltas text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        deltas := $d$
            SELECT n.device_id, n.site_id, n.zone_id, n.sensor_type, n.window_start, n.count_events AS n,
                   n.sum_value AS s, n.sum_sq_value AS q, n.min_value AS lo, n.max_value AS hi, n.first_ts,
                   n.last_ts, n.version
            FROM changed n
            WHERE n.window_end > COALESCE((SELECT window_15m_before FROM telemetry_retention), '-infinity')$d$;
    ELSE
        deltas := $d$
            SELECT n.device_id, n.site_id, n.zone_id, n.sensor_type, n.window_start,
                   n.count_events - o.count_events AS n, n.sum_value - o.sum_value AS s,
                   n.sum_sq_value - o.sum_sq_value AS q, n.min_value AS lo, n.max_value AS hi, n.first_ts,
                   n.last_ts, n.version
            FROM changed n
            JOIN previous o ON o.device_id = n.device_id AND o.sensor_type = n.sensor_type
                           AND o.window_start = n.window_start
            WHERE n.count_events > o.count_events
              AND n.window_end > COALESCE((SELECT window_15m_before FROM telemetry_retention), '-infinity')$d$;
    END IF;
    EXECUTE format($sql$
        WITH hour AS (
            SELECT device_id, sensor_type, date_bin('1 hour', window_start, timestamptz '1970-01-01 00:00:00+00') AS start,
                   max(site_id) AS site_id, max(zone_id) AS zone_id, sum(n) AS n, sum(s) AS s, sum(q) AS q, min(lo) AS lo,
                   max(hi) AS hi, min(first_ts) AS first_ts, max(last_ts) AS last_ts, max(version) AS version
            FROM (%s) d
            GROUP BY 1, 2, 3
        ), day AS (
            SELECT device_id, sensor_type, date_bin('24 hours', start, timestamptz '1970-01-01 00:00:00+00') AS start,
                   max(site_id) AS site_id, max(zone_id) AS zone_id, sum(n) AS n, sum(s) AS s, sum(q) AS q, min(lo) AS lo,
                   max(hi) AS hi, min(first_ts) AS first_ts, max(last_ts) AS last_ts, max(version) AS version
            FROM hour
            GROUP BY 1, 2, 3
        ), hours AS (
            INSERT INTO telemetry_device_agg_1h AS t (window_start, window_end, device_id, site_id, zone_id, sensor_type,
                   count_events, sum_value, avg_value, min_value, max_value, sum_sq_value, first_ts, last_ts, version)
            SELECT start, start + interval '1 hour', device_id, site_id, zone_id, sensor_type, n, s, s / n, lo, hi, q,
                   first_ts, last_ts, version
            FROM hour ORDER BY device_id, sensor_type, start
            ON CONFLICT (device_id, sensor_type, window_start) DO UPDATE SET
                count_events = t.count_events + excluded.count_events,
                sum_value = t.sum_value + excluded.sum_value,
                avg_value = (t.sum_value + excluded.sum_value) / (t.count_events + excluded.count_events),
                min_value = LEAST(t.min_value, excluded.min_value),
                max_value = GREATEST(t.max_value, excluded.max_value),
                sum_sq_value = t.sum_sq_value + excluded.sum_sq_value,
                first_ts = LEAST(t.first_ts, excluded.first_ts),
                site_id = CASE WHEN excluded.last_ts >= t.last_ts THEN excluded.site_id ELSE t.site_id END,
                zone_id = CASE WHEN excluded.last_ts >= t.last_ts THEN excluded.zone_id ELSE t.zone_id END,
                last_ts = GREATEST(t.last_ts, excluded.last_ts),
                version = GREATEST(t.version, excluded.version),
                updated_at = now()
        )
        INSERT INTO telemetry_device_agg_1d AS t (window_start, window_end, device_id, site_id, zone_id, sensor_type,
               count_events, sum_value, avg_value, min_value, max_value, sum_sq_value, first_ts, last_ts, version)
        SELECT start, start + interval '24 hours', device_id, site_id, zone_id, sensor_type, n, s, s / n, lo, hi, q,
               first_ts, last_ts, version
        FROM day ORDER BY device_id, sensor_type, start
        ON CONFLICT (device_id, sensor_type, window_start) DO UPDATE SET
            count_events = t.count_events + excluded.count_events,
            sum_value = t.sum_value + excluded.sum_value,
            avg_value = (t.sum_value + excluded.sum_value) / (t.count_events + excluded.count_events),
            min_value = LEAST(t.min_value, excluded.min_value),
            max_value = GREATEST(t.max_value, excluded.max_value),
            sum_sq_value = t.sum_sq_value + excluded.sum_sq_value,
            first_ts = LEAST(t.first_ts, excluded.first_ts),
            site_id = CASE WHEN excluded.last_ts >= t.last_ts THEN excluded.site_id ELSE t.site_id END,
            zone_id = CASE WHEN excluded.last_ts >= t.last_ts THEN excluded.zone_id ELSE t.zone_id END,
            last_ts = GREATEST(t.last_ts, excluded.last_ts),
            version = GREATEST(t.version, excluded.version),
            updated_at = now()
    $sql$, deltas);
    RETURN NULL;
END
$fn$;
CREATE TRIGGER telemetry_rollup_15m_inserted AFTER INSERT ON telemetry_device_agg_15m
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry_rollup_15m();
CREATE TRIGGER telemetry_rollup_15m_updated AFTER UPDATE ON telemetry_device_agg_15m
    REFERENCING OLD TABLE AS previous NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION telemetry_rollup_15m();

-- The windows already stored (a deployment upgrading to this migration) roll up once here.
INSERT INTO telemetry_device_agg_1h (window_start, window_end, device_id, site_id, zone_id, sensor_type,
                                     count_events, sum_value, avg_value, min_value, max_value, sum_sq_value,
                                     first_ts, last_ts, version)
SELECT b.start, b.start + interval '1 hour', device_id,
       (array_agg(site_id ORDER BY last_ts DESC))[1], (array_agg(zone_id ORDER BY last_ts DESC))[1], sensor_type,
       sum(count_events), sum(sum_value), sum(sum_value) / sum(count_events), min(min_value), max(max_value),
       sum(sum_sq_value), min(first_ts), max(last_ts), max(version)
FROM telemetry_device_agg_15m
CROSS JOIN LATERAL (SELECT date_bin(interval '1 hour', window_start, timestamptz '1970-01-01 00:00:00+00') AS start) b
GROUP BY device_id, sensor_type, b.start;

INSERT INTO telemetry_device_agg_1d (window_start, window_end, device_id, site_id, zone_id, sensor_type,
                                     count_events, sum_value, avg_value, min_value, max_value, sum_sq_value,
                                     first_ts, last_ts, version)
SELECT b.start, b.start + interval '24 hours', device_id,
       (array_agg(site_id ORDER BY last_ts DESC))[1], (array_agg(zone_id ORDER BY last_ts DESC))[1], sensor_type,
       sum(count_events), sum(sum_value), sum(sum_value) / sum(count_events), min(min_value), max(max_value),
       sum(sum_sq_value), min(first_ts), max(last_ts), max(version)
FROM telemetry_device_agg_15m
CROSS JOIN LATERAL (SELECT date_bin(interval '24 hours', window_start, timestamptz '1970-01-01 00:00:00+00') AS start) b
GROUP BY device_id, sensor_type, b.start;

-- Zone roll-ups of every window size, now with the stddev (exact through the sums of squares) and the sum of
-- squares itself (for roll-ups of roll-ups). New columns go last: CREATE OR REPLACE VIEW keeps the old ones.
CREATE OR REPLACE VIEW telemetry_agg_5m AS
SELECT window_start, window_end, site_id, zone_id, sensor_type,
       sum(count_events)::bigint                 AS count_events,
       sum(sum_value) / sum(count_events)        AS avg_value,
       min(min_value)                            AS min_value,
       max(max_value)                            AS max_value,
       sum(sum_value)                            AS sum_value,
       count(*)::int                             AS device_count,
       telemetry_stddev(sum(count_events), sum(sum_value), sum(sum_sq_value), min(min_value), max(max_value))
                                                 AS stddev_value,
       sum(sum_sq_value)                         AS sum_sq_value
FROM telemetry_device_agg_5m
GROUP BY window_start, window_end, site_id, zone_id, sensor_type;

CREATE OR REPLACE VIEW telemetry_agg_15m AS
SELECT window_start, window_end, site_id, zone_id, sensor_type,
       sum(count_events)::bigint                 AS count_events,
       sum(sum_value) / sum(count_events)        AS avg_value,
       min(min_value)                            AS min_value,
       max(max_value)                            AS max_value,
       sum(sum_value)                            AS sum_value,
       count(*)::int                             AS device_count,
       telemetry_stddev(sum(count_events), sum(sum_value), sum(sum_sq_value), min(min_value), max(max_value))
                                                 AS stddev_value,
       sum(sum_sq_value)                         AS sum_sq_value
FROM telemetry_device_agg_15m
GROUP BY window_start, window_end, site_id, zone_id, sensor_type;

CREATE VIEW telemetry_agg_1h AS
SELECT window_start, window_end, site_id, zone_id, sensor_type,
       sum(count_events)::bigint                 AS count_events,
       sum(sum_value) / sum(count_events)        AS avg_value,
       min(min_value)                            AS min_value,
       max(max_value)                            AS max_value,
       sum(sum_value)                            AS sum_value,
       count(*)::int                             AS device_count,
       telemetry_stddev(sum(count_events), sum(sum_value), sum(sum_sq_value), min(min_value), max(max_value))
                                                 AS stddev_value,
       sum(sum_sq_value)                         AS sum_sq_value
FROM telemetry_device_agg_1h
GROUP BY window_start, window_end, site_id, zone_id, sensor_type;

CREATE VIEW telemetry_agg_1d AS
SELECT window_start, window_end, site_id, zone_id, sensor_type,
       sum(count_events)::bigint                 AS count_events,
       sum(sum_value) / sum(count_events)        AS avg_value,
       min(min_value)                            AS min_value,
       max(max_value)                            AS max_value,
       sum(sum_value)                            AS sum_value,
       count(*)::int                             AS device_count,
       telemetry_stddev(sum(count_events), sum(sum_value), sum(sum_sq_value), min(min_value), max(max_value))
                                                 AS stddev_value,
       sum(sum_sq_value)                         AS sum_sq_value
FROM telemetry_device_agg_1d
GROUP BY window_start, window_end, site_id, zone_id, sensor_type;

-- The API reads as the read-only reader role (db.READER_ROLE); default privileges cover new tables, but only
-- those created by the role that set them: explicit, as in 0005.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_reader') THEN
        EXECUTE 'GRANT SELECT ON telemetry_device_agg_1h, telemetry_device_agg_1d, telemetry_agg_5m,'
                ' telemetry_agg_15m, telemetry_agg_1h, telemetry_agg_1d, telemetry_retention'
                ' TO telemetrypulse_reader';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_operator') THEN
        EXECUTE 'GRANT SELECT ON telemetry_device_agg_1h, telemetry_device_agg_1d, telemetry_agg_1h,'
                ' telemetry_agg_1d, telemetry_retention TO telemetrypulse_operator';
    END IF;
END $$;
