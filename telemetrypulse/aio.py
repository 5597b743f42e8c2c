"""Waiting on an asyncio event with a time limit, in a task that may be cancelled.

`asyncio.wait_for(event.wait(), t)` on Python 3.11 loses a cancellation that arrives as the event is set: it returns
the result instead of raising (bpo-42130, fixed in 3.12). A loop stopped by `task.cancel()` then goes on for good and
whoever awaits the task hangs — seen once in `make test`, the API's alert feed never finishing its shutdown.
`asyncio.timeout` keeps an outside cancellation apart from its own.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` passes."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
