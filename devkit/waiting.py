"""Waiting: poll a condition until it holds, and run a coroutine from plain code (even inside a running loop)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from typing import Any


async def wait_for(predicate: Callable, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    """Poll an (async or plain) predicate until it returns a truthy value, and return that value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """The coroutine's result, from plain code; from async code (a fault test) on a thread of its own, as
    asyncio.run refuses a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()
