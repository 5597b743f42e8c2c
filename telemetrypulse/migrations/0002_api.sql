-- API (issue 4). The device drill-down (`GET /devices/{id}`) reads a device's open alerts; without this
-- index that is a scan of every open alert.
CREATE INDEX IF NOT EXISTS telemetry_alerts_device ON telemetry_alerts (device_id, status, opened_at DESC);
