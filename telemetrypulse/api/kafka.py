"""The API's Kafka edge: an idempotent producer for `POST /ingest`, and the broker half of readiness.

The producer connects in the background and keeps retrying, so the API starts (and `/health/ready`
says 503) while Kafka is down, and ingests again as soon as it is back, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from telemetrypulse.aio import wait_set
from telemetrypulse.api.errors import KafkaUnavailable
from telemetrypulse.settings import Settings, aiokafka_options

log = logging.getLogger(__name__)


class EventPublisher:
    """Produces validated events to the events topic, keyed by device_id."""

    def __init__(
        self, settings: Settings, *, send_timeout_s: float = 10.0, connect_wait_s: float = 3.0
    ) -> None:
        self.settings = settings
        self.topic = settings.topic_events
        self.send_timeout_s = send_timeout_s
        self.connect_wait_s = connect_wait_s
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._retired: asyncio.Task | None = None
        self.last_error: str | None = "connecting"

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_loop(), name="kafka-producer-connect")

    async def close(self) -> None:
        if self._retired is not None:
            with contextlib.suppress(Exception):
                await self._retired
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 10)
            self._producer = None

    def _new_producer(self) -> AIOKafkaProducer:
        # Idempotence makes the broker drop the duplicates that a retried send would otherwise write;
        # it requires acks=all.
        return AIOKafkaProducer(
            **aiokafka_options(self.settings),
            client_id=self.settings.names.client_id("api"),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=int(self.send_timeout_s * 1000),
        )

    async def _connect_loop(self) -> None:
        delay = 0.5
        while not self._connected.is_set():
            producer = self._new_producer()
            try:
                await producer.start()
            except (KafkaError, OSError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("Kafka producer cannot connect (%s); retrying in %.1fs", self.last_error, delay)
                with contextlib.suppress(Exception):
                    await producer.stop()
                self._retry_now.clear()
                await wait_set(self._retry_now, delay)
                delay = min(delay * 2, 10.0)
                continue
            self._producer = producer
            self.last_error = None
            self._connected.set()
            log.info("Kafka producer connected (topic %s)", self.topic)

    async def _ready_producer(self) -> AIOKafkaProducer:
        if not self._connected.is_set():
            self._retry_now.set()
            await wait_set(self._connected, self.connect_wait_s)
        if self._producer is None:
            raise KafkaUnavailable(f"Kafka is not reachable ({self.last_error}); retry shortly")
        return self._producer

    async def publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Send (key, value) pairs and wait until the broker acknowledged every one of them."""
        await self.publish_to(self.topic, messages)

    async def publish_to(self, topic: str, messages: list[tuple[bytes, bytes]]) -> list[int]:
        """Send (key, value) pairs to `topic`, wait for every acknowledgement; their offsets."""
        producer = await self._ready_producer()
        try:
            async with asyncio.timeout(self.send_timeout_s):
                futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
                return [metadata.offset for metadata in await asyncio.gather(*futures)]
        except TimeoutError as e:
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self.send_timeout_s:g} s; retry"
            ) from e
        except KafkaError as e:
            # Some producer errors are fatal for its session (fenced or out-of-sequence after a broker
            # lost data); a fresh producer is the way back, so the next request does not fail the same.
            self._replace_producer(producer)
            raise KafkaUnavailable(f"Kafka refused the events ({type(e).__name__}: {e}); retry") from e

    def _replace_producer(self, broken: AIOKafkaProducer) -> None:
        if self._producer is not broken:
            return  # another request already replaced it
        self._producer = None
        self._connected.clear()
        self.last_error = "reconnecting after a producer error"

        async def retire() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broken.stop(), 10)

        self._retired = asyncio.create_task(retire(), name="kafka-producer-retire")
        self.start()

    async def check(self, timeout_s: float) -> None:
        """One metadata round-trip to the cluster; raises KafkaUnavailable if it does not answer in time."""
        if self._producer is None:
            self._retry_now.set()
            raise KafkaUnavailable(f"not connected: {self.last_error}")
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except TimeoutError as e:
            raise KafkaUnavailable(f"no metadata answer within {timeout_s:g} s") from e
        except (KafkaError, OSError) as e:
            raise KafkaUnavailable(f"{type(e).__name__}: {e}") from e
