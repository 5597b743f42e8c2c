"""Generation: sites x zones x devices, each device reporting co2, temperature, humidity and occupancy as SPEC §3
events, with a daily temperature cycle, CO2 following office-hours occupancy, drifting humidity, noise, and anomaly
episodes that open and then resolve SPEC §5 alerts; on request re-sent duplicates and malformed events of every kind
(`malformed`). A seed makes the output byte-for-byte reproducible (event ids included) when event time is simulated
(`start`), which it is for backfills and benchmarks. No Kafka here: the benchmark and the tests use it as it is.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

import orjson

from telemetrypulse.models import SENSOR_UNITS
from telemetrypulse.simulator.clock import TsFormatter, epoch_ms
from telemetrypulse.simulator.malformed import INVALID_KINDS, malformed

# SPEC §3's sensors, in the order a device reports them (one event each per reading).
SENSORS = tuple(SENSOR_UNITS)
# Normal (non-anomalous) readings are clamped below each alert rule's resolve level (alerts.RULES; a unit test
# keeps the two in step), so alerts come only from anomaly episodes and every episode is over (resolved) once its
# last reading has passed.
NORMAL_RANGE = {"co2": (380.0, 900.0), "temperature": (12.0, 28.0), "humidity": (20.0, 74.0)}
# Episode peaks, well clear of the opening threshold even with the (bounded) noise added on top.
PEAK_RANGE = {"co2": (1150.0, 2600.0), "temperature": (31.5, 38.0), "humidity": (83.0, 96.0)}
PEAK_NOISE = {"co2": 25.0, "temperature": 0.25, "humidity": 0.6}

VALID = "valid"
DUPLICATE = "duplicate"

# Local UTC offsets of the sites, in hours: spread over the globe so some site is always in office hours.
_SITE_UTC_OFFSETS_H = (1.0, -5.0, 8.0, 0.0, -8.0, 5.5, 10.0, -3.0)
_RECENT_FOR_DUPLICATES = 1024
_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Topology:
    """How many sites, zones per site and devices per zone; ids `site-01`, `zone-02`, `site-01.zone-02.dev-03`."""

    sites: int = 3
    zones: int = 5
    devices_per_zone: int = 3

    def __post_init__(self) -> None:
        for name in ("sites", "zones", "devices_per_zone"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 9999:
                raise ValueError(f"{name} must be an integer from 1 to 9999, got {value!r}")

    @property
    def device_count(self) -> int:
        return self.sites * self.zones * self.devices_per_zone

    def ids(self) -> list[tuple[str, str, str]]:
        """(site_id, zone_id, device_id) of every device, in reporting order."""
        sw, zw, dw = (max(2, len(str(n))) for n in (self.sites, self.zones, self.devices_per_zone))
        out = []
        for s in range(1, self.sites + 1):
            site_id = f"site-{s:0{sw}d}"
            for z in range(1, self.zones + 1):
                zone_id = f"zone-{z:0{zw}d}"
                for d in range(1, self.devices_per_zone + 1):
                    out.append((site_id, zone_id, f"{site_id}.{zone_id}.dev-{d:0{dw}d}"))
        return out


class _Episode:
    """One anomaly on one sensor: rises to `peak`, holds, falls back; `i` counts the readings done."""

    __slots__ = ("fall", "i", "n", "peak", "rise")

    def __init__(self, n: int, peak: float) -> None:
        self.n = n
        self.rise = max(1, n // 4)
        self.fall = max(1, n // 4)
        self.peak = peak
        self.i = 0

    def shape(self) -> float:
        i = self.i
        if i < self.rise:
            return (i + 1) / self.rise
        if i >= self.n - self.fall:
            return (self.n - i) / (self.fall + 1)
        return 1.0


class _Device:
    __slots__ = (
        "capacity",
        "co2",
        "device_id",
        "episodes",
        "hum",
        "hum_base",
        "key",
        "last_ms",
        "occ",
        "phase_ms",
        "site_id",
        "temp_offset",
        "utc_offset_ms",
        "vent",
        "zone_id",
    )

    def __init__(
        self, site_id: str, zone_id: str, device_id: str, site_index: int, rng: random.Random
    ) -> None:
        self.site_id = site_id
        self.zone_id = zone_id
        self.device_id = device_id
        self.key = device_id.encode()
        self.utc_offset_ms = int(_SITE_UTC_OFFSETS_H[site_index % len(_SITE_UTC_OFFSETS_H)] * 3_600_000)
        self.capacity = rng.randint(2, 10)  # people in the area this device watches
        self.vent = rng.uniform(0.8, 1.2)  # CO2 ppm per person relative to a well-ventilated room
        self.temp_offset = rng.uniform(-1.2, 1.2)
        self.hum_base = rng.uniform(35.0, 55.0)
        self.hum = self.hum_base + rng.uniform(-3.0, 3.0)
        self.occ: float | None = None
        self.co2: float | None = None
        self.last_ms: int | None = None
        self.phase_ms = 0
        self.episodes: list[_Episode | None] = [None, None, None]  # co2, temperature, humidity


def _office_presence(hour: float) -> float:
    """Share of a zone's capacity present at a local weekday hour: arrivals 7:30-9, lunch dip, gone by 19."""
    if hour < 7.5 or hour >= 19.0:
        return 0.0
    if hour < 9.0:
        return 0.9 * (hour - 7.5) / 1.5
    if 12.0 <= hour < 13.0:
        return 0.65
    if hour < 17.0:
        return 0.9
    return 0.9 * (19.0 - hour) / 2.0


# uuid.UUID(int=..., version=4) clears these bits (variant, version) and sets the RFC 4122 variant and version 4.
_UUID4_KEEP = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def uuid4_from_bits(bits: int) -> str:
    """str(uuid.UUID(int=bits, version=4)) without building a UUID object (a third of the per-event cost)."""
    h = f"{(bits & _UUID4_KEEP) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Simulator:
    """Deterministic (for a seed) stream of telemetry messages as `(key, value, kind)` byte tuples.

    `start` set: event time is simulated; device i of n reports at `start + k*interval + i*interval/n`, all four
    sensors with the same `ts_event`, so the stream is ordered by event time. `start` None: `ts_event` is the
    clock at generation (live mode), and the values depend on that clock too.
    `kind` is `valid`, `duplicate` (an earlier valid message re-sent byte for byte) or one of `INVALID_KINDS`.
    """

    seed: int | str | None = None
    start: datetime | str | None = None
    interval: float = 10.0
    topology: Topology = field(default_factory=Topology)
    duplicate_fraction: float = 0.0
    invalid_fraction: float = 0.0
    anomalies_per_device_hour: float = 0.5
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not (isinstance(self.interval, int | float) and 0.001 <= self.interval <= 86400):
            raise ValueError(f"interval must be between 0.001 and 86400 seconds, got {self.interval!r}")
        for name in ("duplicate_fraction", "invalid_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}")
        if self.duplicate_fraction + self.invalid_fraction > 1.0:
            raise ValueError("duplicate_fraction + invalid_fraction must not exceed 1")
        if self.anomalies_per_device_hour < 0:
            raise ValueError("anomalies_per_device_hour must be >= 0")
        if self.seed is None:
            self.seed = int.from_bytes(os.urandom(8), "big")
        self._start_ms = None if self.start is None else epoch_ms(self.start)
        self._interval_ms = max(1, round(self.interval * 1000))
        # The seed alone would give a backfill of another period, or another topology, the same event ids as
        # the first run, and the worker would drop them as duplicates; so the stream's seed includes those.
        t = self.topology
        self._rng = random.Random(
            f"telemetrypulse:{self.seed}:{self._start_ms}:{self._interval_ms}:{t.sites}x{t.zones}x{t.devices_per_zone}"
        )
        ids = self.topology.ids()
        per_site = self.topology.zones * self.topology.devices_per_zone
        self._devices = [_Device(s, z, d, i // per_site, self._rng) for i, (s, z, d) in enumerate(ids)]
        for i, device in enumerate(self._devices):
            device.phase_ms = i * self._interval_ms // len(self._devices)
        self._fmt = TsFormatter()
        self._dt = -1.0
        self._k = (0.0, 0.0, 0.0, 0.0, 0.0)
        self._last_event: dict[str, Any] = {}
        self._last_ms = 0

    @property
    def event_time_ms(self) -> int:
        """`ts_event` of the latest reading generated, epoch ms (0 before the first)."""
        return self._last_ms

    @property
    def devices(self) -> list[tuple[str, str, str]]:
        """(site_id, zone_id, device_id) of every simulated device."""
        return [(d.site_id, d.zone_id, d.device_id) for d in self._devices]

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        """`messages()` without the kinds: (key, value) only, one generator layer less when all are valid."""
        if self.duplicate_fraction == 0.0 and self.invalid_fraction == 0.0:
            return self._readings()
        return ((key, value) for key, value, _ in self.messages())

    def messages(self) -> Iterator[tuple[bytes, bytes, str]]:
        """The endless message stream; the fractions pick each slot's kind, independently per message."""
        readings = self._readings()
        p_dup = self.duplicate_fraction
        p_bad = p_dup + self.invalid_fraction
        if p_bad == 0.0:
            for key, value in readings:
                yield key, value, VALID
            return
        rnd = self._rng.random
        recent: list[tuple[bytes, bytes]] = []
        slot = 0
        while True:
            r = rnd()
            if r < p_dup and recent:
                key, value = recent[int(rnd() * len(recent))]
                yield key, value, DUPLICATE
            elif r < p_bad and p_dup <= r:
                # The next reading, garbled in transit: the stream keeps its pace and every sensor gets its share.
                kind = INVALID_KINDS[int(rnd() * len(INVALID_KINDS))]
                next(readings)
                key, value = malformed(
                    kind, self._last_event, self._rng, last_ms=self._last_ms, start_ms=self._start_ms
                )
                yield key, value, kind
            else:
                key, value = next(readings)
                if len(recent) < _RECENT_FOR_DUPLICATES:
                    recent.append((key, value))
                else:
                    recent[slot] = (key, value)
                    slot = (slot + 1) % _RECENT_FOR_DUPLICATES
                yield key, value, VALID

    def _readings(self) -> Iterator[tuple[bytes, bytes]]:
        """Valid events, four per device reading (one per sensor)."""
        rng = self._rng
        bits = rng.getrandbits
        dumps = orjson.dumps
        fmt = self._fmt
        devices = self._devices
        start_ms = self._start_ms
        interval_ms = self._interval_ms
        clock = self.clock
        keep, set_ = _UUID4_KEEP, _UUID4_SET  # uuid4_from_bits, inlined: it is a fifth of the per-event cost
        co2_unit, temperature_unit, humidity_unit, occupancy_unit = map(SENSOR_UNITS.__getitem__, SENSORS)
        tick = 0
        while True:
            base = None if start_ms is None else start_ms + tick * interval_ms
            for d in devices:
                ts_ms = math.floor(clock() * 1000) if base is None else base + d.phase_ms
                co2, temperature, humidity, occupancy = self._read(d, ts_ms)
                self._last_ms = ts_ms
                ts = fmt(ts_ms)
                key = d.key
                device_id, site_id, zone_id = d.device_id, d.site_id, d.zone_id
                for sensor, value, unit in (
                    ("co2", co2, co2_unit),
                    ("temperature", temperature, temperature_unit),
                    ("humidity", humidity, humidity_unit),
                    ("occupancy", occupancy, occupancy_unit),
                ):
                    h = f"{(bits(128) & keep) | set_:032x}"
                    event = {
                        "event_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                        "device_id": device_id,
                        "site_id": site_id,
                        "zone_id": zone_id,
                        "sensor_type": sensor,
                        "value": value,
                        "ts_event": ts,
                        "unit": unit,
                    }
                    self._last_event = event
                    yield key, dumps(event)
            tick += 1

    def _read(self, d: _Device, ts_ms: int) -> tuple[float, float, float, int]:
        """Advance one device to `ts_ms` and return its (co2, temperature, humidity, occupancy) reading."""
        rng = self._rng
        gauss = rng.gauss
        dt = self.interval if d.last_ms is None else max(0.001, (ts_ms - d.last_ms) / 1000.0)
        d.last_ms = ts_ms
        local_h = (ts_ms + d.utc_offset_ms) / 3_600_000.0
        day, hour = divmod(local_h, 24.0)
        weekday = (int(day) + 3) % 7  # 1970-01-01 was a Thursday; 5 and 6 are the weekend
        target_occ = d.capacity * _office_presence(hour) if weekday < 5 else 0.0
        co2_target = 420.0 + 38.0 * target_occ * d.vent
        if dt != self._dt:
            # People arrive and leave over ~10 min, CO2 follows with ~15 min ventilation lag, humidity reverts
            # to its base over ~2 h. With simulated time dt is constant, so these are computed once.
            self._dt = dt
            self._k = (
                1.0 - math.exp(-dt / 600.0),
                1.0 - math.exp(-dt / 900.0),
                1.0 - math.exp(-dt / 7200.0),
                0.25 * math.sqrt(dt / 10.0),
                self.anomalies_per_device_hour * dt / 3600.0,
            )
        k_occ, k_co2, k_hum, hum_step, p_anomaly = self._k
        if d.occ is None:
            d.occ = target_occ
            d.co2 = co2_target
        else:
            d.occ += (target_occ - d.occ) * k_occ
            d.co2 += (420.0 + 38.0 * d.occ * d.vent - d.co2) * k_co2
        occupancy = max(0, round(d.occ + gauss(0.0, 0.25 + 0.1 * math.sqrt(d.occ))))
        daily = math.sin(_TWO_PI * (hour - 9.0) / 24.0)  # peaks at 15:00 local
        # Humidity: mean-reverting random walk around the device's base, drier while it is warm.
        d.hum += (d.hum_base - d.hum) * k_hum + gauss(0.0, hum_step)
        lo, hi = NORMAL_RANGE["co2"]
        co2 = min(hi, max(lo, d.co2 + gauss(0.0, 8.0)))
        lo, hi = NORMAL_RANGE["temperature"]
        temperature = min(hi, max(lo, 21.5 + d.temp_offset + 2.0 * daily + 0.12 * d.occ + gauss(0.0, 0.12)))
        lo, hi = NORMAL_RANGE["humidity"]
        humidity = min(hi, max(lo, d.hum - 3.0 * daily + gauss(0.0, 0.3)))

        episodes = d.episodes
        if rng.random() < p_anomaly:
            idle = [i for i in range(3) if episodes[i] is None]
            if idle:
                i = idle[int(rng.random() * len(idle))]
                episodes[i] = _Episode(rng.randint(6, 30), rng.uniform(*PEAK_RANGE[SENSORS[i]]))
        if episodes[0] is not None or episodes[1] is not None or episodes[2] is not None:
            values = [co2, temperature, humidity]
            for i in range(3):
                episode = episodes[i]
                if episode is None:
                    continue
                shape = episode.shape()
                sigma = PEAK_NOISE[SENSORS[i]]
                noise = min(2.0 * sigma, max(-2.0 * sigma, gauss(0.0, sigma)))
                values[i] += (episode.peak - values[i]) * shape + noise * shape
                episode.i += 1
                if episode.i >= episode.n:
                    episodes[i] = None
            co2, temperature, humidity = values
        return round(co2, 1), round(temperature, 2), round(humidity, 1), occupancy


def generate_events(
    count: int,
    seed: int | str | None = None,
    start: datetime | str | None = None,
    *,
    topology: Topology | None = None,
    interval: float = 10.0,
    duplicate_fraction: float = 0.0,
    invalid_fraction: float = 0.0,
    anomalies_per_device_hour: float = 0.5,
) -> Iterator[tuple[bytes, bytes]]:
    """`count` messages as (key, value) bytes: what `telemetrypulse simulate` would produce (for the benchmark)."""
    sim = Simulator(
        seed=seed,
        start=start,
        interval=interval,
        topology=topology or Topology(),
        duplicate_fraction=duplicate_fraction,
        invalid_fraction=invalid_fraction,
        anomalies_per_device_hour=anomalies_per_device_hour,
    )
    return islice(sim.pairs(), count)
