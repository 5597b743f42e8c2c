"""A real HTTP webhook receiver in the test process (aiohttp, a free loopback port) that records every
request it gets and checks each signature the way a user's receiver would (README: webhooks).

Behaviours a test can ask for: answer 500 for the first `fail_for_s` seconds, hang each request that
arrives in the first `hang_for_s` seconds for `hang_s` seconds, and hold every answer `answer_delay_s`
(widens the window in which a delivery is in flight, for the SIGKILL test).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from devkit.ports import free_port
from telemetrypulse.webhooks import verify_signature


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    delivery_id: str | None
    event: str | None
    content_type: str | None
    signature_ok: bool
    body: dict
    answered: int | None = None  # the status this receiver answered (None: hung, never answered)
    answered_at: float | None = None


@dataclass
class WebhookReceiver:
    secret: bytes
    name: str = "receiver"
    fail_for_s: float = 0.0
    hang_for_s: float = 0.0
    hang_s: float = 30.0
    answer_delay_s: float = 0.0
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    started_at: float = 0.0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{self.name}?token=t0ps3cret-{self.name}"

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.started_at = time.monotonic()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        received = Received(
            at=time.monotonic(),
            delivery_id=request.headers.get("X-TelemetryPulse-Delivery"),
            event=request.headers.get("X-TelemetryPulse-Event"),
            content_type=request.headers.get("Content-Type"),
            signature_ok=verify_signature(
                self.secret, raw, request.headers.get("X-TelemetryPulse-Signature")
            ),
            body=orjson.loads(raw),
        )
        self.requests.append(received)
        age = received.at - self.started_at
        if age < self.hang_for_s:
            await asyncio.sleep(self.hang_s)
            return web.Response(status=504)  # the notifier has given up long before
        status = 500 if age < self.fail_for_s else 200
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        received.answered, received.answered_at = status, time.monotonic()
        return web.Response(status=status, text="ok" if status == 200 else "not yet")

    # ------------------------------------------------------------------ what it saw

    def delivered(self) -> set[str]:
        """Delivery ids this receiver answered 2xx (at least once)."""
        return {r.delivery_id for r in self.requests if r.answered == 200}

    def repeats(self) -> dict[str, int]:
        """Delivery ids answered 2xx more than once, with how many times."""
        counts = Counter(r.delivery_id for r in self.requests if r.answered == 200)
        return {d: n for d, n in counts.items() if n > 1}

    def first_success(self) -> dict[str, float]:
        firsts: dict[str, float] = {}
        for r in self.requests:
            if r.answered == 200 and r.delivery_id not in firsts:
                firsts[r.delivery_id] = r.at
        return firsts

    def order_violations(self) -> list[str]:
        """Alerts whose `resolved` reached this receiver before it had answered 2xx to their `open`."""
        opened_ok: dict[str, float] = {}
        for r in self.requests:
            if r.answered == 200 and r.body["status"] == "open":
                opened_ok.setdefault(r.body["alert_id"], r.answered_at or r.at)
        bad = []
        for r in self.requests:
            if r.body["status"] == "resolved":
                ok_at = opened_ok.get(r.body["alert_id"])
                if ok_at is None or ok_at > r.at:
                    bad.append(r.body["alert_id"])
        return bad
