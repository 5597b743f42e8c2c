-- TelemetryPulse schema (SPEC §7). Applied once, in a transaction, under an advisory lock.

-- Raw readings: every valid event that is not a duplicate (accepted or too late), once.
-- Range-partitioned by day on ts_event; the sink creates a day's partition before writing into it.
-- The primary key must contain the partition key, hence (ts_event, device_id, event_id).
CREATE TABLE telemetry_events (
    event_id     uuid             NOT NULL,
    device_id    text             NOT NULL,
    site_id      text             NOT NULL,
    zone_id      text             NOT NULL,
    sensor_type  text             NOT NULL,
    value        double precision NOT NULL,
    unit         text,
    ts_event     timestamptz      NOT NULL,
    ts_ingest    timestamptz      NOT NULL,
    late         boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (ts_event, device_id, event_id)
) PARTITION BY RANGE (ts_event);
CREATE INDEX telemetry_events_device_ts ON telemetry_events (device_id, ts_event DESC);
CREATE INDEX telemetry_events_site_zone_ts ON telemetry_events (site_id, zone_id, ts_event DESC);

-- Device-level tumbling windows. `version` is the source offset of the last event folded in: the
-- sink only ever moves a row forward (replays and zombie writes carry a lower or equal version).
CREATE TABLE telemetry_device_agg_5m (
    window_start     timestamptz      NOT NULL,
    window_end       timestamptz      NOT NULL,
    device_id        text             NOT NULL,
    site_id          text             NOT NULL,
    zone_id          text             NOT NULL,
    sensor_type      text             NOT NULL,
    count_events     bigint           NOT NULL,
    sum_value        double precision NOT NULL,
    avg_value        double precision NOT NULL,
    min_value        double precision NOT NULL,
    max_value        double precision NOT NULL,
    first_ts         timestamptz      NOT NULL,
    last_ts          timestamptz      NOT NULL,
    version          bigint           NOT NULL,
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, sensor_type, window_start)
);
CREATE INDEX telemetry_device_agg_5m_zone ON telemetry_device_agg_5m (site_id, zone_id, sensor_type, window_start);
CREATE INDEX telemetry_device_agg_5m_time ON telemetry_device_agg_5m (sensor_type, window_start);

CREATE TABLE telemetry_device_agg_15m (LIKE telemetry_device_agg_5m INCLUDING ALL);

-- Zone roll-ups: exact by construction (counts and sums add, min of mins, max of maxes).
CREATE VIEW telemetry_agg_5m AS
SELECT window_start, window_end, site_id, zone_id, sensor_type,
       sum(count_events)::bigint                 AS count_events,
       sum(sum_value) / sum(count_events)        AS avg_value,
       min(min_value)                            AS min_value,
       max(max_value)                            AS max_value,
       sum(sum_value)                            AS sum_value,
       count(*)::int                             AS device_count
FROM telemetry_device_agg_5m
GROUP BY window_start, window_end, site_id, zone_id, sensor_type;

CREATE VIEW telemetry_agg_15m AS
SELECT window_start, window_end, site_id, zone_id, sensor_type,
       sum(count_events)::bigint                 AS count_events,
       sum(sum_value) / sum(count_events)        AS avg_value,
       min(min_value)                            AS min_value,
       max(max_value)                            AS max_value,
       sum(sum_value)                            AS sum_value,
       count(*)::int                             AS device_count
FROM telemetry_device_agg_15m
GROUP BY window_start, window_end, site_id, zone_id, sensor_type;

-- Latest accepted reading per device and sensor, by event time (a tie goes to the later one).
CREATE TABLE telemetry_device_latest (
    device_id    text             NOT NULL,
    sensor_type  text             NOT NULL,
    site_id      text             NOT NULL,
    zone_id      text             NOT NULL,
    value        double precision NOT NULL,
    ts_event     timestamptz      NOT NULL,
    event_id     uuid             NOT NULL,
    version      bigint           NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, sensor_type)
);
CREATE INDEX telemetry_device_latest_site ON telemetry_device_latest (site_id, zone_id);

-- Alert episodes (SPEC §5). `change_seq` orders every insert and update, for the SSE stream and its
-- Last-Event-ID resume; a trigger notifies listeners.
CREATE SEQUENCE telemetry_alerts_change_seq;
CREATE TABLE telemetry_alerts (
    alert_id     uuid             PRIMARY KEY,
    status       text             NOT NULL CHECK (status IN ('open', 'resolved')),
    rule         text             NOT NULL,
    alert_type   text             NOT NULL,
    device_id    text             NOT NULL,
    site_id      text             NOT NULL,
    zone_id      text             NOT NULL,
    sensor_type  text             NOT NULL,
    threshold    double precision NOT NULL,
    value        double precision NOT NULL,
    peak_value   double precision NOT NULL,
    opened_at    timestamptz      NOT NULL,
    resolved_at  timestamptz,
    event_id     uuid             NOT NULL,
    resolved_event_id uuid,
    change_seq   bigint           NOT NULL DEFAULT nextval('telemetry_alerts_change_seq'),
    updated_at   timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX telemetry_alerts_opened ON telemetry_alerts (opened_at DESC, alert_id DESC);
CREATE INDEX telemetry_alerts_status ON telemetry_alerts (status, opened_at DESC);
CREATE INDEX telemetry_alerts_site_zone ON telemetry_alerts (site_id, zone_id, opened_at DESC);
CREATE UNIQUE INDEX telemetry_alerts_change ON telemetry_alerts (change_seq);

CREATE FUNCTION telemetry_alerts_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.change_seq := nextval('telemetry_alerts_change_seq');
        NEW.updated_at := now();
    END IF;
    PERFORM pg_notify('telemetry_alerts', NEW.change_seq::text);
    RETURN NEW;
END $$;
CREATE TRIGGER telemetry_alerts_touch BEFORE INSERT OR UPDATE ON telemetry_alerts
    FOR EACH ROW EXECUTE FUNCTION telemetry_alerts_touch();

-- Least privilege for the API: a read-only role it switches to (SET ROLE) on every connection.
-- Roles are cluster-wide, so two databases migrating at once may race to create it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_reader') THEN
        CREATE ROLE telemetrypulse_reader NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'cannot create role telemetrypulse_reader; the API will read with its own role';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_reader') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO telemetrypulse_reader';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO telemetrypulse_reader';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO telemetrypulse_reader';
        BEGIN
            EXECUTE format('GRANT telemetrypulse_reader TO %I', current_user);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END IF;
END $$;
