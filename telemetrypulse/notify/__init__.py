"""`telemetrypulse notify`: the webhook notifier (SPEC §10).

    telemetry.alerts ──► consumer (group <APP_ID>-notifier)
                            │ one pending delivery per (receiver, `{alert_id}:{status}`), inserted
                            │ ON CONFLICT DO NOTHING, *before* the offset is committed
                            ▼
                  webhook_deliveries (PostgreSQL outbox and delivery log)
                            │ one sender task per receiver, in creation order, an alert's resolve
                            │ never before its open; every attempt recorded; retried with backoff
                            ▼
                  POST <receiver url>   (signed: X-TelemetryPulse-Signature)

`outbox.py` owns the tables, `sender.py` one receiver's delivery loop, `service.py` the process (consumer,
receiver reload, the sender lease, shutdown). The rules themselves are in `telemetrypulse/webhooks.py`.
"""
