"""The span a baseline is timed over: wall and CPU time of this process from the first record it fetched —
connecting and seeking are not throughput. One clock for the ceiling, the Faust floor, the batch and the naive
baselines, so that they are timed alike."""

from __future__ import annotations

import time

import psutil


class FromFirstRecord:
    def __init__(self) -> None:
        self._me = psutil.Process()
        self.began: float | None = None
        self._cpu0 = 0.0

    def _cpu(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    def first_record(self) -> None:
        """Call on every fetch that brought records: only the first starts the span."""
        if self.began is None:
            self.began = time.monotonic()
            self._cpu0 = self._cpu()

    def seconds(self) -> float:
        return time.monotonic() - self.began if self.began is not None else 0.0

    def cpu_s(self) -> float:
        return self._cpu() - self._cpu0
