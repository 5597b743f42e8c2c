"""The FastAPI application (`telemetrypulse.api.main:app`) and `telemetrypulse api` (`serve`).

At start: wait for PostgreSQL, apply pending migrations, open the read-only pool, start the alert feed,
and let the Kafka producer connect in the background (the API serves reads, and says 503 on
`/health/ready`, while Kafka is away).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from telemetrypulse import db
from telemetrypulse.api.alert_feed import AlertFeed
from telemetrypulse.api.data_access import Reader, Writer
from telemetrypulse.api.errors import install_error_handlers
from telemetrypulse.api.http_metrics import MetricsMiddleware
from telemetrypulse.api.kafka import EventPublisher
from telemetrypulse.api.resources import ApiOptions, ApiState
from telemetrypulse.api.routes import ROUTERS
from telemetrypulse.api.routes.dashboard import STATIC_DIR
from telemetrypulse.api.rule_history import RuleHistory
from telemetrypulse.exceptions import TelemetryPulseError
from telemetrypulse.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Analytics over the TelemetryPulse pipeline: live zone status, window trends (5 minutes to a day, with
standard deviations), site × zone heatmaps, alerts (paged and live as server-sent events), device drill-down
and raw readings, and ingestion into Kafka. `/trends`, `/alerts` and readings also answer CSV (`format=csv`).

All times are ISO-8601 UTC (`Z`). Query times must carry an offset. Errors are
`{"error": code, "detail": message, "errors": [...]}`; 503 means PostgreSQL or Kafka is unreachable.

Access: scoped keys in `X-API-Key` (`API_KEYS`: read, ingest, operate, admin; admin implies all). Reads and
ingest are open until some key has that scope; acknowledging and notes need `operate`, webhooks and alert rules
`admin`.
Missing or unknown key → 401, a key without the scope → 403.
"""

TAGS = [
    {"name": "health", "description": "Liveness and readiness (PostgreSQL and Kafka)"},
    {"name": "sites", "description": "Sites and their zones"},
    {"name": "devices", "description": "Devices, the device drill-down and its raw readings (JSON or CSV)"},
    {"name": "status", "description": "Live zone status"},
    {"name": "trends", "description": "Tumbling-window aggregates over time (5m, 15m, 1h, 1d; JSON or CSV)"},
    {"name": "heatmap", "description": "Site × zone matrix per sensor"},
    {"name": "alerts", "description": "Alert episodes, paged and live; acknowledgements, notes and timeline"},
    {
        "name": "webhooks",
        "description": "Webhook receivers of the notifier and its delivery log (admin scope)",
    },
    {
        "name": "rules",
        "description": "Alert rules as versioned data: thresholds above/below, pending periods, severity, scopes "
        "(admin scope)",
    },
    {"name": "ingest", "description": "Submit events (validated like the worker, produced to Kafka)"},
    {"name": "metrics", "description": "Prometheus"},
]


def _lifespan(settings: Settings | None, options: ApiOptions):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        dsn = resolved.dsn
        await db.wait_for_database(dsn)
        applied = await db.migrate(dsn)
        if applied:
            log.info("applied migrations %s", applied)
        pool = await db.create_pool(dsn, read_only=True, min_size=1, max_size=options.pool_max_size)
        reader = Reader(pool, timeout_s=options.query_timeout_s)
        # Operator writes are rare: no connection is held until the first one.
        write_pool = await db.create_pool(dsn, role=db.OPERATOR_ROLE, min_size=0, max_size=4)
        writer = Writer(write_pool, timeout_s=options.query_timeout_s)
        publisher = EventPublisher(resolved)
        publisher.start()
        feed = AlertFeed(dsn, reader, poll_s=options.alert_poll_s)
        await feed.start()
        keys = resolved.key_ring()
        log.info("API keys: %s", ", ".join(repr(k) for k in keys.keys) or "none (reads and ingest are open)")
        rules = RuleHistory(resolved, reader, writer, publisher)
        rules.start()
        app.state.api = ApiState(resolved, options, pool, reader, publisher, feed, keys, writer, rules)
        try:
            yield
        finally:
            app.state.api = None
            await rules.close()
            await feed.close()
            await publisher.close()
            await write_pool.close()
            await pool.close()

    return lifespan


def create_app(settings: Settings | None = None, options: ApiOptions | None = None) -> FastAPI:
    """The app; `settings` defaults to `get_settings()`, read at startup (not at import)."""
    app = FastAPI(
        title="TelemetryPulse API",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=_lifespan(settings, options or ApiOptions()),
    )
    app.state.api = None
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


app = create_app()


def serve(argv: list[str]) -> int:
    """`telemetrypulse api [--host H] [--port P]`: run the API with uvicorn until interrupted."""
    parser = argparse.ArgumentParser(prog="telemetrypulse api", description="Run the HTTP API and dashboard")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 on a platform)")
    parser.add_argument("--port", type=int, default=None, help="port (default: PORT, else 8000)")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        settings.dsn  # noqa: B018 - fail now, with the variable's name, rather than inside the lifespan
    except TelemetryPulseError as e:
        print(f"telemetrypulse api: {e}", file=sys.stderr)
        return 2
    import uvicorn

    port = args.port if args.port is not None else settings.port
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=port,
        log_level=settings.log_level,
        # Open SSE streams would otherwise hold a shutdown (Ctrl-C) until they end by themselves.
        timeout_graceful_shutdown=3,
        proxy_headers=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(serve(sys.argv[1:]))
