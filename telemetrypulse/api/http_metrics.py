"""Prometheus metrics of the API process (served at `/metrics`) and the middleware that records requests.

Requests are labelled by route template (`/devices/{device_id}`), never by raw path, so a scan of
random URLs cannot blow up the number of series.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "telemetrypulse_api_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "telemetrypulse_api_request_seconds",
    "HTTP request duration by route (streams excluded)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INGESTED = Counter(
    "telemetrypulse_api_ingest_events_total", "Events received by POST /ingest*, by outcome", ["outcome"]
)
SSE_SUBSCRIBERS = Gauge("telemetrypulse_api_sse_subscribers", "Open GET /alerts/stream connections")
SSE_EVENTS = Counter(
    "telemetrypulse_api_alert_changes_total", "Alert changes read from PostgreSQL and fanned out"
)

STREAMING_ROUTES = frozenset({"/alerts/stream"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "GET")
            REQUESTS.labels(method, route, str(status)).inc()
            if route not in STREAMING_ROUTES:
                LATENCY.labels(method, route).observe(time.perf_counter() - started)
