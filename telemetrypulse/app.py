"""The Faust app: settings wiring only. Topics and tables are in `topology.py`, agents in `agents/`.

`faust -A telemetrypulse.app worker -l info` imports this module; importing `agents` registers them.
"""

from __future__ import annotations

import asyncio
import logging
import warnings

import faust
import prometheus_client
from faust.exceptions import AlreadyConfiguredWarning

from telemetrypulse import db
from telemetrypulse.exceptions import SettingsError
from telemetrypulse.rule_feed import RuleFeed
from telemetrypulse.settings import Settings, get_settings, kafka_ssl_context
from telemetrypulse.transport import PipelineTransport

log = logging.getLogger(__name__)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
        return credentials
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class PipelineApp(faust.App):
    def _new_transport(self) -> faust.types.TransportT:
        return PipelineTransport(self.conf.broker_consumer, self)

    def on_init_dependencies(self):
        # `faust … worker` sets web_enabled from its --with-web/--without-web flag (default: with), over the
        # app's setting; WORKER_WEB_PORT=0 must still mean no web server, or two workers on one host (scale-out,
        # the fault tests) fight over port 6066 and the second one exits.
        if settings.worker_web_port == 0:
            with warnings.catch_warnings():
                # Faust warns that the value was already read; the boot strategy reads it again right after this.
                warnings.simplefilter("ignore", AlreadyConfiguredWarning)
                self.conf.web_enabled = False
        return super().on_init_dependencies()

    async def _stop_consumer(self) -> None:
        # Before Faust stops the fetch loop and the tables: let the slice in hand finish and snapshot every partition,
        # so that a clean restart replays nothing.
        processor = getattr(self, "events_processor", None)
        if processor is not None:
            await processor.close()
        await super()._stop_consumer()

    async def on_first_start(self) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
        await super().on_first_start()
        # Topics before the consumer subscribes (managed Kafka often disables auto-creation), and the
        # schema before the sinks write; both wait for a service that is still starting.
        from telemetrypulse.topology import ensure_changelog_topics, ensure_pipeline_topics

        await ensure_pipeline_topics(settings)
        await ensure_changelog_topics(settings)
        # Every rule version the topic holds now, before the consumer starts: no event is judged without them.
        await self.rule_feed.start()
        # The worker writes nothing to PostgreSQL (the sink does): it must start and alert while the database is
        # away (SPEC §9), so the migrations wait for the database in the background.
        self._migrations = asyncio.ensure_future(_migrate_when_reachable())

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.rule_feed.close()
        migrations = getattr(self, "_migrations", None)
        if migrations is not None and not migrations.done():
            migrations.cancel()


async def _migrate_when_reachable() -> None:
    try:
        await db.wait_for_database(settings.dsn)
        applied = await db.migrate(settings.dsn)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the sink and the API apply them too; the worker does not depend on them
        log.warning("migrations not applied by the worker: %s", e)
        return
    if applied:
        log.info("applied migrations %s", applied)


def create_app(settings: Settings) -> PipelineApp:
    app = PipelineApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=1,
        TableManager="telemetrypulse.recovery:PipelineTableManager",
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        producer_acks=-1,
        producer_max_request_size=4 * 1024 * 1024,
        producer_linger=0.005,
        stream_buffer_maxsize=20000,
        web_enabled=settings.worker_web_port != 0,
        web_port=settings.worker_web_port or 6066,
        web_host="127.0.0.1",
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
    )
    # Topics delivered to a handler one fetched partition slice at a time (transport.PipelineConsumer), and where
    # each of their partitions must start to rebuild its state; both filled in by agents.process.
    app.batch_handlers = {}
    app.replay_starts = {}
    app.events_processor = None
    # The alert rules (SPEC §9), followed from the rules topic; agents.process judges events by them.
    app.rule_feed = RuleFeed(settings)
    return app


try:
    settings = get_settings()
    settings.dsn  # noqa: B018 -- fail at start, with the variable's name, not at the first sink write
except SettingsError as e:
    raise SystemExit(f"telemetrypulse: configuration error: {e}") from None
app = create_app(settings)

from telemetrypulse.agents import process, retention  # noqa: E402, F401 -- registers the agents and timers


@app.page("/metrics")
async def metrics_page(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    return web.bytes(prometheus_client.generate_latest(), content_type=prometheus_client.CONTENT_TYPE_LATEST)


def main() -> None:
    app.main()
