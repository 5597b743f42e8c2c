"""`/health/ready` follows PostgreSQL and Kafka without a restart: 503 quickly while one is unreachable,
200 again once it is back. Reachability is cut with a TCP proxy in front of the real service, so the
shared stack keeps running for everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from devkit.waiting import wait_for
from tests.api.conftest import api_settings, app_client, free_port

pytestmark = pytest.mark.integration


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `close()` refuses new connections and drops open ones."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
        self._writers -= {client_writer, upstream_writer}


async def ready_status(client) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = await client.get("/health/ready")
    return response.status_code, response.json(), time.monotonic() - started


async def wait_ready(client, timeout_s: float = 30) -> dict:
    async def ready():
        status, body, _ = await ready_status(client)
        return body if status == 200 else None

    return await wait_for(ready, timeout_s, interval_s=0.3, what="/health/ready to say 200")


async def test_postgres_going_away_and_coming_back(stack, api_dsn):
    parts = urlsplit(api_dsn)
    proxy = TcpProxy(parts.hostname, parts.port)
    await proxy.open()
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"))
    try:
        async with app_client(api_settings(stack, proxied), ready_timeout_s=1.0) as client:
            await wait_ready(client)

            await proxy.close()
            status, body, seconds = await ready_status(client)
            reads = await client.get("/sites")
            assert status == 503
            assert body["checks"]["postgres"]["ok"] is False and body["checks"]["kafka"]["ok"] is True
            assert seconds < 5, "readiness must answer quickly while PostgreSQL is away"
            assert reads.status_code == 503 and reads.json()["error"] == "database_unavailable"

            await proxy.open()
            body = await wait_ready(client)
            assert body["checks"]["postgres"]["ok"] is True
            assert (await client.get("/sites")).status_code == 200
    finally:
        await proxy.close()


async def test_kafka_unreachable_at_start_then_reachable(stack, api_dsn):
    host, port = stack["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)
    # Only the bootstrap goes through the proxy (the broker then advertises its own address), which is
    # exactly the "broker not reachable yet" case: nothing answers until the proxy opens.
    proxy = TcpProxy(host, int(port))
    try:
        settings = api_settings(stack, api_dsn, kafka_bootstrap_servers=f"127.0.0.1:{proxy.port}")
        async with app_client(settings, ready_timeout_s=1.0) as client:
            status, body, seconds = await ready_status(client)
            assert status == 503 and body["checks"]["kafka"]["ok"] is False
            assert body["checks"]["postgres"]["ok"] is True
            assert seconds < 5

            await proxy.open()
            body = await wait_ready(client)
            assert body["checks"]["kafka"]["ok"] is True
    finally:
        await proxy.close()
