"""Benchmark datasets: the outcome simulator events pre-produced into a fresh topic must have (per-window counts, sum,
min, max), computed here independently of the worker so each phase can check its counts exactly. The events are
produced with the kit's batch producer (`devkit.kafka_io.produce_burst`, `on_value=expected.add`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from devkit.epoch import floor_us, parse_us

WINDOW_SIZES_S = (300, 900)


@dataclass
class Expected:
    """What a dataset of valid, unique, in-order events must give: every event stored and in one window of each size."""

    events: int = 0
    windows: dict[tuple, list] = field(
        default_factory=dict
    )  # (size_s, device, sensor, start_us) -> [n, sum, min, max]
    devices: set[str] = field(default_factory=set)
    first_us: int | None = None
    last_us: int | None = None

    def add(self, value: bytes) -> None:
        event = orjson.loads(value)
        t = parse_us(event["ts_event"])
        v = float(event["value"])
        device, sensor = event["device_id"], event["sensor_type"]
        self.events += 1
        self.devices.add(device)
        self.first_us = t if self.first_us is None else min(self.first_us, t)
        self.last_us = t if self.last_us is None else max(self.last_us, t)
        for size in WINDOW_SIZES_S:
            key = (size, device, sensor, floor_us(t, size))
            agg = self.windows.get(key)
            if agg is None:
                self.windows[key] = [1, v, v, v]
            else:
                agg[0] += 1
                agg[1] += v
                if v < agg[2]:
                    agg[2] = v
                if v > agg[3]:
                    agg[3] = v
