"""Prometheus metrics of the notifier process (served on NOTIFIER_WEB_PORT at /metrics).

Receivers are labelled by name (webhook names, `env-…` for WEBHOOK_URLS), never by URL: a URL may
carry a receiver's token.
"""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "telemetrypulse_notifier_messages_total",
    "Alert messages consumed, by outcome: planned, invalid (not an alert message), too_old (beyond WEBHOOK_MAX_AGE_S)",
    ["outcome"],
)
DELIVERIES_CREATED = Counter(
    "telemetrypulse_notifier_deliveries_created_total", "Deliveries added to the outbox (repeats excluded)"
)
ATTEMPTS = Counter(
    "telemetrypulse_notifier_attempts_total",
    "Delivery attempts by receiver and outcome: delivered (2xx), http_error, transport_error",
    ["receiver", "outcome"],
)
EXPIRED = Counter(
    "telemetrypulse_notifier_expired_total", "Deliveries given up after WEBHOOK_MAX_AGE_S", ["receiver"]
)
PENDING = Gauge("telemetrypulse_notifier_pending", "Deliveries waiting to be sent or retried", ["receiver"])
DELIVERY_LATENCY = Histogram(
    "telemetrypulse_notifier_delivery_seconds",
    "From a delivery's creation to its recorded 2xx",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
OUTBOX_RETRIES = Counter(
    "telemetrypulse_notifier_outbox_retries_total",
    "PostgreSQL operations of the notifier retried after an error",
)
