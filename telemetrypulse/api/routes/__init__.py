"""One APIRouter per resource; `ROUTERS` is the order they are mounted in."""

from telemetrypulse.api.routes import (
    alerts,
    dashboard,
    devices,
    health,
    heatmap,
    ingest,
    metrics,
    readings,
    rules,
    sites,
    status,
    trends,
    webhooks,
)

ROUTERS = [
    health.router,
    sites.router,
    devices.router,
    readings.router,
    status.router,
    trends.router,
    heatmap.router,
    alerts.router,
    webhooks.router,
    rules.router,
    ingest.router,
    metrics.router,
    dashboard.router,
]
