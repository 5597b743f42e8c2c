"""telemetrypulse.aio: a loop stopped by cancel() stops, even when its event is set at that very moment."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from telemetrypulse.aio import wait_set


async def _loop(event: asyncio.Event, wait) -> None:
    while True:
        await wait(event, 10)
        event.clear()


async def _cancel_as_the_event_is_set(wait) -> asyncio.Task:
    event = asyncio.Event()
    task = asyncio.create_task(_loop(event, wait))
    await asyncio.sleep(0)  # the loop is waiting
    event.set()  # the waiter wakes first...
    task.cancel()  # ...and the cancellation arrives in the same turn
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        async with asyncio.timeout(1):
            await asyncio.shield(task)
    return task


async def test_a_cancellation_arriving_as_the_event_is_set_stops_the_loop():
    task = await _cancel_as_the_event_is_set(wait_set)
    assert task.cancelled()


async def test_wait_for_on_this_python_loses_it_which_is_why_wait_set_exists():
    async def wait_for(event: asyncio.Event, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    task = await _cancel_as_the_event_is_set(wait_for)
    try:
        if task.cancelled():
            pytest.skip("this Python's wait_for keeps the cancellation (3.12+)")
        assert not task.done()  # still looping: whoever awaits it would hang
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
