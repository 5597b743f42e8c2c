"""`GET /alerts/stream` over a real uvicorn: alerts pushed as they open and resolve, heartbeats, resume
by Last-Event-ID; and the feed behind it (out-of-order commits, a lost LISTEN connection)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import httpx
import orjson
import pytest

from telemetrypulse import db
from telemetrypulse.api.alert_feed import AlertFeed
from telemetrypulse.api.data_access import Reader
from tests.api.conftest import insert_alert, live_api, live_api_env, new_alert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(stack, api_dsn):
    with live_api(live_api_env(stack, api_dsn), "stream") as api:
        yield api


@pytest.fixture
async def writer(api_dsn):
    conn = await asyncpg.connect(api_dsn)
    yield conn
    await conn.close()


class EventStream:
    """Reads SSE events (dicts of field -> value, `data` decoded as JSON) from a streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = 10.0) -> dict:
        return await asyncio.wait_for(self._read(), timeout_s)

    async def next_of(self, kind: str, timeout_s: float = 10.0) -> dict:
        async def wanted() -> dict:
            while (event := await self._read())["event"] != kind:
                pass
            return event

        return await asyncio.wait_for(wanted(), timeout_s)

    async def _read(self) -> dict:
        event: dict = {}
        async for line in self._lines:
            if not line:
                if event:
                    if "data" in event:
                        event["data"] = orjson.loads(event["data"])
                    event.setdefault("event", "message")
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = event[name] + "\n" + value if name == "data" and name in event else value
        raise EOFError("stream ended")


@contextlib.asynccontextmanager
async def open_stream(base_url: str, params: dict | None = None, headers: dict | None = None):
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=None)) as client,
        client.stream("GET", "/alerts/stream", params=params or {}, headers=headers or {}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        hello = await stream.next()
        assert hello["event"] == "hello" and hello["retry"] == "3000"
        yield stream


async def test_alert_is_pushed_when_it_opens_and_when_it_resolves(server, writer):
    async with open_stream(server.url, {"heartbeat_s": 30}) as stream:
        alert = new_alert(device_id="dev-live", value=1500.0, peak_value=1500.0)
        opened_seq = await insert_alert(writer, alert)
        opened = await stream.next_of("alert")
        resolved_seq = await insert_alert(
            writer, alert | {"status": "resolved", "peak_value": 1600.0, "resolved_at": alert["opened_at"]}
        )
        resolved = await stream.next_of("alert")

    assert opened["id"] == str(opened_seq)
    assert opened["data"]["alert_id"] == str(alert["alert_id"]) and opened["data"]["status"] == "open"
    assert opened["data"]["change_seq"] == opened_seq
    assert resolved["id"] == str(resolved_seq) and resolved_seq > opened_seq
    assert resolved["data"]["status"] == "resolved" and resolved["data"]["peak_value"] == 1600.0
    assert resolved["data"]["resolved_at"].endswith("Z")


async def test_heartbeats_while_idle(server):
    async with open_stream(server.url, {"heartbeat_s": 1}) as stream:
        first = await stream.next(timeout_s=5)
        second = await stream.next(timeout_s=5)

    assert first["event"] == second["event"] == "heartbeat"
    assert first["data"]["server_time"].endswith("Z")
    assert first["data"]["listening"] is True


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_sends_what_was_missed_then_live_without_duplicates(server, writer, how):
    seqs = [await insert_alert(writer, new_alert(device_id=f"dev-missed-{how}-{i}")) for i in range(3)]
    resume = (
        {"headers": {"Last-Event-ID": str(seqs[0])}}
        if how == "header"
        else {"params": {"since_seq": seqs[0]}}
    )
    params = resume.get("params", {}) | {"heartbeat_s": 30}

    async with open_stream(server.url, params, resume.get("headers")) as stream:
        missed = [await stream.next_of("alert") for _ in range(2)]
        live_seq = await insert_alert(writer, new_alert(device_id=f"dev-after-{how}"))
        live = await stream.next_of("alert")

    assert [int(e["id"]) for e in missed] == seqs[1:]
    assert [e["data"]["device_id"] for e in missed] == [f"dev-missed-{how}-1", f"dev-missed-{how}-2"]
    assert int(live["id"]) == live_seq


async def test_header_wins_over_query(server, writer):
    seqs = [await insert_alert(writer, new_alert(device_id=f"dev-prio-{i}")) for i in range(2)]
    async with open_stream(server.url, {"since_seq": 0}, {"Last-Event-ID": str(seqs[0])}) as stream:
        first = await stream.next_of("alert")
    assert int(first["id"]) == seqs[1]


# ---------------------------------------------------------------- the feed itself


@pytest.fixture
async def feed(api_dsn):
    pool = await db.create_pool(api_dsn, read_only=True, max_size=2)
    feed = AlertFeed(api_dsn, Reader(pool), poll_s=0.5)
    await feed.start()
    yield feed
    await feed.close()
    await pool.close()


async def next_row(subscription, timeout_s: float = 10.0) -> dict:
    return await asyncio.wait_for(subscription.queue.get(), timeout_s)


async def test_a_change_committed_out_of_order_is_not_skipped(feed, api_dsn, writer):
    subscription = feed.subscribe()
    slow = await asyncpg.connect(api_dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        early_seq = await insert_alert(
            slow, new_alert(device_id="dev-slow")
        )  # numbered first, committed last
        late_seq = await insert_alert(writer, new_alert(device_id="dev-fast"))
        assert early_seq < late_seq
        first = await next_row(subscription)
        await transaction.commit()
        second = await next_row(subscription)
    finally:
        await slow.close()
        feed.unsubscribe(subscription)

    assert (first["change_seq"], second["change_seq"]) == (late_seq, early_seq)


async def test_changes_still_arrive_after_the_listen_connection_dies(feed, writer):
    await asyncio.wait_for(_until(lambda: feed.listening), 10)
    subscription = feed.subscribe()
    try:
        killed = await writer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        seq = await insert_alert(writer, new_alert(device_id="dev-after-loss"))
        row = await next_row(subscription)
        await asyncio.wait_for(_until(lambda: feed.listening), 15)
        again = await insert_alert(writer, new_alert(device_id="dev-relistened"))
        row_again = await next_row(subscription)
    finally:
        feed.unsubscribe(subscription)

    assert row["change_seq"] == seq
    assert row_again["change_seq"] == again


async def _until(predicate, interval_s: float = 0.1) -> None:
    while not predicate():
        await asyncio.sleep(interval_s)
