-- Alert lifecycle, access and notifications (issue 13, SPEC §10).
--
-- Operator data lives in tables the stream's sink never writes: acknowledgements, notes, webhooks and the
-- webhook delivery log. A replay, a repeated alert message or a late resolve rewrites `telemetry_alerts`
-- only, so it can never erase what an operator added. No foreign key to `telemetry_alerts` either: the
-- operator tables must not constrain how the sink (or a future retention job) manages alert rows; the API
-- checks that an alert exists before it acknowledges or annotates it.

-- Run-time rules (issue 12) will fill these; until then every threshold alert is a `warning`.
ALTER TABLE telemetry_alerts
    ADD COLUMN IF NOT EXISTS rule_id text,
    ADD COLUMN IF NOT EXISTS severity text NOT NULL DEFAULT 'warning'
        CHECK (severity IN ('info', 'warning', 'critical'));
CREATE INDEX IF NOT EXISTS telemetry_alerts_severity ON telemetry_alerts (severity, opened_at DESC, alert_id DESC);

-- One acknowledgement per alert: the first one wins, a repeated acknowledgement changes nothing.
-- `key_name` is the API key that made it (who typed `acknowledged_by` is the operator's word; the key is proof).
CREATE TABLE alert_acknowledgements (
    alert_id         uuid        PRIMARY KEY,
    acknowledged_by  text        NOT NULL,
    acknowledged_at  timestamptz NOT NULL DEFAULT now(),
    note             text,
    key_name         text
);

CREATE TABLE alert_notes (
    note_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    uuid        NOT NULL,
    author      text        NOT NULL,
    text        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    key_name    text
);
CREATE INDEX alert_notes_alert ON alert_notes (alert_id, note_id);

-- Receivers kept by `PUT /webhooks/{name}` (receivers of WEBHOOK_URLS live in the environment only).
CREATE TABLE webhooks (
    name          text        PRIMARY KEY,
    url           text        NOT NULL,
    site_id       text,
    min_severity  text        NOT NULL DEFAULT 'info' CHECK (min_severity IN ('info', 'warning', 'critical')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The notifier's outbox and delivery log: one row per (receiver, delivery id = `{alert_id}:{status}`),
-- inserted `ON CONFLICT DO NOTHING` before the alert message's offset is committed, so a delivery is
-- created once however often the message is consumed. `seq` is the creation order a receiver is sent in.
-- `state`: pending (to send or retry) → delivered (a 2xx was recorded: never sent again) | expired
-- (WEBHOOK_MAX_AGE_S passed without a 2xx: given up).
CREATE TABLE webhook_deliveries (
    receiver          text        NOT NULL,
    delivery_id       text        NOT NULL,
    seq               bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    alert_id          uuid        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('open', 'resolved')),
    site_id           text        NOT NULL,
    severity          text        NOT NULL,
    payload           bytea       NOT NULL,
    state             text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'expired')),
    attempts          integer     NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    delivered_at      timestamptz,
    expired_at        timestamptz,
    PRIMARY KEY (receiver, delivery_id)
);
-- The sender's question: "what is due for this receiver, oldest first?"
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (receiver, seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_alert ON webhook_deliveries (alert_id, receiver);

-- Every attempt, written before the request is sent and completed after the answer: an attempt without
-- `finished_at` after a crash was in flight (the receiver may have got it), so a repeat of it is expected.
CREATE TABLE webhook_attempts (
    attempt_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receiver     text        NOT NULL,
    delivery_id  text        NOT NULL,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    status_code  integer,
    error        text,
    duration_ms  double precision
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (receiver, delivery_id, attempt_id);
CREATE INDEX webhook_attempts_unfinished ON webhook_attempts (attempt_id) WHERE finished_at IS NULL;

-- Least privilege for the API's writes: an operator role that may read everything and write only the
-- operator tables (never the sink's). The API switches to it on its write pool, as it does to the reader.
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
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO telemetrypulse_operator';
        EXECUTE 'GRANT INSERT, UPDATE ON alert_acknowledgements, alert_notes TO telemetrypulse_operator';
        EXECUTE 'GRANT INSERT, UPDATE, DELETE ON webhooks TO telemetrypulse_operator';
        BEGIN
            EXECUTE format('GRANT telemetrypulse_operator TO %I', current_user);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END IF;
    -- The reader's default privileges cover these tables already; explicit in case they were created by
    -- another role than the one that set the defaults.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'telemetrypulse_reader') THEN
        EXECUTE 'GRANT SELECT ON alert_acknowledgements, alert_notes, webhooks, webhook_deliveries,'
                ' webhook_attempts TO telemetrypulse_reader';
    END IF;
END $$;
