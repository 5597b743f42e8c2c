-- Alert rules at run time (issue 12, SPEC §9): the readable history of every rule version.
--
-- The rules topic (`<APP_ID>-rules`) is where versions live and what the workers follow; this table is the copy the
-- API answers `GET /rules…` from. The API writes a version here right after Kafka has it, and copies any version it
-- finds on the topic and not here (ON CONFLICT DO NOTHING), so the two agree. `revision` is the version's place in
-- the topic (its offset + 1), the order every worker applies; the built-in defaults are revision 0.
-- Numbered 0004 though applied after 0005 on deployments that already had it: it depends on nothing of 0005.

CREATE TABLE alert_rule_versions (
    version_id      text             PRIMARY KEY,
    revision        bigint           NOT NULL CHECK (revision >= 0),
    rule_id         text             NOT NULL,
    sensor_type     text             NOT NULL CHECK (sensor_type IN ('co2', 'temperature', 'humidity', 'occupancy')),
    direction       text             NOT NULL CHECK (direction IN ('above', 'below')),
    open_at         double precision NOT NULL,
    resolve_at      double precision NOT NULL,
    site_id         text,
    zone_id         text,
    device_id       text,
    for_s           double precision NOT NULL DEFAULT 0 CHECK (for_s >= 0),
    severity        text             NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    enabled         boolean          NOT NULL DEFAULT true,
    effective_from  timestamptz      NOT NULL,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    created_by      text,
    CHECK (CASE direction WHEN 'above' THEN resolve_at <= open_at ELSE resolve_at >= open_at END),
    CHECK (zone_id IS NULL OR site_id IS NOT NULL),
    CHECK (device_id IS NULL OR (site_id IS NULL AND zone_id IS NULL))
);
-- "The versions of a rule, in order" and "the latest version of each rule".
CREATE INDEX alert_rule_versions_rule ON alert_rule_versions (rule_id, revision DESC, version_id);
CREATE INDEX alert_rule_versions_revision ON alert_rule_versions (revision);

-- SPEC §5's thresholds as the default rules (rules.DEFAULT_VERSIONS holds the same for the workers).
INSERT INTO alert_rule_versions
    (version_id, revision, rule_id, sensor_type, direction, open_at, resolve_at, severity, effective_from, created_at,
     created_by)
VALUES
    ('default-co2-high:default', 0, 'default-co2-high', 'co2', 'above', 1000, 950, 'warning',
     '1970-01-01T00:00:00Z', '1970-01-01T00:00:00Z', 'migration 0004'),
    ('default-temperature-high:default', 0, 'default-temperature-high', 'temperature', 'above', 30, 29, 'warning',
     '1970-01-01T00:00:00Z', '1970-01-01T00:00:00Z', 'migration 0004'),
    ('default-humidity-high:default', 0, 'default-humidity-high', 'humidity', 'above', 80, 77, 'warning',
     '1970-01-01T00:00:00Z', '1970-01-01T00:00:00Z', 'migration 0004')
ON CONFLICT (version_id) DO NOTHING;

-- Stale sensors: the dashboard's list asks for open alerts of one rule.
CREATE INDEX IF NOT EXISTS telemetry_alerts_rule_open ON telemetry_alerts (rule, opened_at DESC) WHERE status = 'open';

-- The API writes rule versions with the operator role (0005), reads them with the reader role (0001). Roles are
-- cluster-wide: on a fresh database 0005 has not run yet, so the operator role may not exist; create it as 0005 does.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_operator') THEN
        CREATE ROLE telemetrypulse_operator NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'cannot create role telemetrypulse_operator; the API will write with its own role';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_operator') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO telemetrypulse_operator';
        EXECUTE 'GRANT SELECT, INSERT ON alert_rule_versions TO telemetrypulse_operator';
        BEGIN
            EXECUTE format('GRANT telemetrypulse_operator TO %I', current_user);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_reader') THEN
        EXECUTE 'GRANT SELECT ON alert_rule_versions TO telemetrypulse_reader';
    END IF;
END $$;
