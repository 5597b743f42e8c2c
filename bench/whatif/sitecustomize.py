"""WHAT-IF, not product code: Faust's consumer loop without a `wait_first` per message.

faust-streaming 0.15.3 hands every fetched message to the streams with
`await self.wait_first(callback(message), self.suspend_flow.wait())` (faust/transport/consumer.py,
`Consumer._drain_messages`): four asyncio tasks and an `asyncio.wait` per message, so that a rebalance can abort
a delivery blocked on a full stream buffer. This patch awaits the callback directly while the flow is not
suspended and keeps `wait_first` otherwise. It is NOT rebalance-safe as it stands (a delivery already blocked when
the flow is suspended is waited out instead of aborted), which is why it lives here and not in the worker.

Measure with it:  PYTHONPATH=bench/whatif make bench   (the report says the what-if was active).
Python imports `sitecustomize` from PYTHONPATH at start; the patch applies only in `faust … worker` processes.
"""

import os
import sys

if os.path.basename(sys.argv[0]) == "faust":
    import asyncio

    from faust.transport import consumer as _consumer

    async def _drain_messages(
        self, fetcher
    ) -> None:  # mirrors the original loop, minus the per-message wait_first
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in ait:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if self._commit_every is not None and self._n_acked >= self._commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if suspended():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, offset)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise

    _consumer.Consumer._drain_messages = _drain_messages
    os.environ["TELEMETRYPULSE_WHATIF"] = "faust-drain-fast-path"
