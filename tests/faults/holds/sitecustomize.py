"""Test-only timing holds for worker processes: they force an interleaving that can happen on its own, at a
moment the test chooses. Python imports `sitecustomize` from PYTHONPATH at start; a test puts this folder on
the worker's PYTHONPATH and names the holds in TP_TEST_HOLDS (comma-separated). Nothing here changes what the
worker does, only when.

- `no_commit`: the worker never commits consumer offsets (it dies before its first commit interval).
- `slow_recovery_fetch`: every fetch that asks for changelog partitions only (the recovery's reads) waits
  0.3 s before it looks at its partitions, so a fetch is in flight when recovery pauses them.
- `hold_recovery_end`: the end of recovery (seek, resume) waits 2 s, so the paused state lasts.

Together, `slow_recovery_fetch` and `hold_recovery_end` reproduce issue 10's trigger on every start that
restores state: the fetch waiting when the last changelog partition is paused drained every buffered record.
"""

import os

HOLDS = {name.strip() for name in os.environ.get("TP_TEST_HOLDS", "").split(",") if name.strip()}

if "no_commit" in HOLDS:
    from faust.transport import consumer as _consumer

    async def _no_commit(self, *args, **kwargs) -> bool:
        return False

    _consumer.Consumer.commit = _no_commit

if "slow_recovery_fetch" in HOLDS:
    import asyncio

    from aiokafka.consumer import fetcher as _fetcher

    _fetched_records = _fetcher.Fetcher.fetched_records

    async def _slow_fetched_records(self, partitions, timeout=0, max_records=None):
        try:
            # Faust may hand over its live set, which the main thread changes meanwhile.
            topics = [tp.topic for tp in list(partitions or ())]
        except RuntimeError:
            topics = []
        if topics and all(topic.endswith("-changelog") for topic in topics):
            await asyncio.sleep(0.3)
        return await _fetched_records(self, partitions, timeout=timeout, max_records=max_records)

    _fetcher.Fetcher.fetched_records = _slow_fetched_records

if "hold_recovery_end" in HOLDS:
    import asyncio

    from faust.tables import recovery as _faust_recovery

    from telemetrypulse import recovery as _recovery

    for _cls in (_recovery.SeekFirstRecovery, _faust_recovery.Recovery):
        if "on_recovery_completed" in vars(_cls):
            _completed = _cls.on_recovery_completed

            async def _held(self, *args, _completed=_completed, **kwargs):
                await asyncio.sleep(2.0)
                return await _completed(self, *args, **kwargs)

            _cls.on_recovery_completed = _held
            break
