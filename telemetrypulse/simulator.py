"""Synthetic building telemetry: `telemetrypulse simulate`.

Owns two things, kept apart so the benchmark can reuse the first without Kafka:

* generation (`Topology`, `Simulator`, `generate_events`): sites x zones x devices, each device reporting co2,
  temperature, humidity and occupancy as SPEC §3 events, with a daily temperature cycle, CO2 following office-hours
  occupancy, drifting humidity, noise, and anomaly episodes that open and then resolve SPEC §5 alerts; on request
  re-sent duplicates and malformed events of every kind. A seed makes the output byte-for-byte reproducible
  (event ids included) when event time is simulated (`start`), which it is for backfills and benchmarks.
* the producing edge (`produce`, `main`): paced production (`--rate`, token bucket on the loop clock) or `--burst`
  (pre-built per-partition record batches, as fast as the broker takes them) with aiokafka.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from telemetrypulse.settings import Settings

log = logging.getLogger(__name__)

SENSORS = ("co2", "temperature", "humidity", "occupancy")
UNITS = {"co2": "ppm", "temperature": "celsius", "humidity": "percent", "occupancy": "count"}
# SPEC §5: (opens when value >, resolves at first value <=).
THRESHOLDS = {"co2": (1000.0, 950.0), "temperature": (30.0, 29.0), "humidity": (80.0, 77.0)}
# Normal (non-anomalous) readings are clamped below each resolve level, so alerts come only from anomaly
# episodes and every episode is over (resolved) once its last reading has passed.
_NORMAL_RANGE = {"co2": (380.0, 900.0), "temperature": (12.0, 28.0), "humidity": (20.0, 74.0)}
# Episode peaks, well clear of the opening threshold even with the (bounded) noise added on top.
_PEAK_RANGE = {"co2": (1150.0, 2600.0), "temperature": (31.5, 38.0), "humidity": (83.0, 96.0)}
_PEAK_NOISE = {"co2": 25.0, "temperature": 0.25, "humidity": 0.6}

VALID = "valid"
DUPLICATE = "duplicate"
INVALID_KINDS = (
    "not_json",
    "json_array",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "bool_value",
    "nan_like",
    "out_of_range",
    "bad_unit",
    "bad_sensor_type",
    "bad_id",
    "future_ts",
    "ts_without_offset",
    "bad_ts",
)
REQUIRED_FIELDS = ("event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "ts_event")

# Local UTC offsets of the sites, in hours: spread over the globe so some site is always in office hours.
_SITE_UTC_OFFSETS_H = (1.0, -5.0, 8.0, 0.0, -8.0, 5.5, 10.0, -3.0)
_DAY_MS = 86_400_000
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


def format_ts(ms: int) -> str:
    """Epoch milliseconds -> `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return _TsFormatter()(ms)


class _TsFormatter:
    """Formats epoch ms as ISO-8601 UTC, caching the date part (datetime.isoformat per event is slow)."""

    __slots__ = ("day", "prefix")

    def __init__(self) -> None:
        self.day = None
        self.prefix = ""

    def __call__(self, ms: int) -> str:
        day, rest = divmod(ms, _DAY_MS)
        if day != self.day:
            self.day = day
            self.prefix = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)).strftime("%Y-%m-%dT")
        sec, milli = divmod(rest, 1000)
        h, sec = divmod(sec, 3600)
        m, s = divmod(sec, 60)
        return f"{self.prefix}{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


_RELATIVE_START = re.compile(r"^now(?:-(\d+(?:\.\d+)?)([smhd]))?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_start(text: str, *, now: Callable[[], float] = time.time) -> datetime:
    """`--start`: ISO-8601 (`Z` or an offset; no offset means UTC), or `now`, `now-90m`, `now-6h`, `now-2d`."""
    text = text.strip()
    relative = _RELATIVE_START.match(text)
    if relative:
        amount, unit = relative.groups()
        ago = float(amount) * _UNIT_SECONDS[unit] if amount else 0.0
        return datetime.fromtimestamp(now() - ago, UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time (or now, now-6h, now-2d): {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _epoch_ms(start: datetime | str) -> int:
    moment = parse_start(start) if isinstance(start, str) else start
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp() * 1000)


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
        self._start_ms = None if self.start is None else _epoch_ms(self.start)
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
        self._fmt = _TsFormatter()
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
                key, value = self._invalid(kind, self._last_event)
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
                    ("co2", co2, "ppm"),
                    ("temperature", temperature, "celsius"),
                    ("humidity", humidity, "percent"),
                    ("occupancy", occupancy, "count"),
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
        lo, hi = _NORMAL_RANGE["co2"]
        co2 = min(hi, max(lo, d.co2 + gauss(0.0, 8.0)))
        lo, hi = _NORMAL_RANGE["temperature"]
        temperature = min(hi, max(lo, 21.5 + d.temp_offset + 2.0 * daily + 0.12 * d.occ + gauss(0.0, 0.12)))
        lo, hi = _NORMAL_RANGE["humidity"]
        humidity = min(hi, max(lo, d.hum - 3.0 * daily + gauss(0.0, 0.3)))

        episodes = d.episodes
        if rng.random() < p_anomaly:
            idle = [i for i in range(3) if episodes[i] is None]
            if idle:
                i = idle[int(rng.random() * len(idle))]
                episodes[i] = _Episode(rng.randint(6, 30), rng.uniform(*_PEAK_RANGE[SENSORS[i]]))
        if episodes[0] is not None or episodes[1] is not None or episodes[2] is not None:
            values = [co2, temperature, humidity]
            for i in range(3):
                episode = episodes[i]
                if episode is None:
                    continue
                shape = episode.shape()
                sigma = _PEAK_NOISE[SENSORS[i]]
                noise = min(2.0 * sigma, max(-2.0 * sigma, gauss(0.0, sigma)))
                values[i] += (episode.peak - values[i]) * shape + noise * shape
                episode.i += 1
                if episode.i >= episode.n:
                    episodes[i] = None
            co2, temperature, humidity = values
        return round(co2, 1), round(temperature, 2), round(humidity, 1), occupancy

    def _invalid(self, kind: str, event: dict[str, Any]) -> tuple[bytes, bytes]:
        """A malformed message of `kind` made from a valid `event` (left unchanged), and its key."""
        rng = self._rng
        event = dict(event)
        key = event["device_id"].encode()
        sensor = event["sensor_type"]
        pick = rng.choice
        if kind == "not_json":
            good = orjson.dumps(event)
            value = pick(
                [
                    good[: len(good) // 2],
                    b"",
                    b"hello from a confused device",
                    b"\xff\xfe\x00garbage",
                    good.replace(b'"', b"'"),
                    good[:-1] + b",}",
                ]
            )
            return key, value
        if kind == "json_array":
            return key, orjson.dumps(pick([[event], [], [1, 2, 3]]))
        if kind == "not_an_object":
            return key, pick([b"42", b'"co2=812"', b"null", b"true"])
        if kind == "missing_field":
            del event[pick(REQUIRED_FIELDS)]
        elif kind == "wrong_type":
            name, bad = pick(
                [
                    ("value", str(event["value"])),
                    ("value", None),
                    ("value", {"reading": event["value"]}),
                    ("event_id", rng.getrandbits(64)),
                    ("device_id", 1234),
                    ("sensor_type", ["co2"]),
                    ("ts_event", self._last_ms / 1000.0),
                    ("unit", 7),
                ]
            )
            event[name] = bad
        elif kind == "bool_value":
            event["value"] = pick([True, False])
        elif kind == "nan_like":
            token = pick([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
            event["value"] = "__value__"
            return key, orjson.dumps(event).replace(b'"__value__"', token)
        elif kind == "out_of_range":
            event["value"] = pick(
                {
                    "co2": [-1.0, 40000.5, 1e6],
                    "temperature": [-50.5, 100.5, 250.0],
                    "humidity": [-0.5, 100.5, 150.0],
                    "occupancy": [-1, 2.5, 0.5],
                }[sensor]
            )
        elif kind == "bad_unit":
            wrong = [u for s, u in UNITS.items() if s != sensor]
            event["unit"] = pick([*wrong, "fahrenheit", "PPM", ""])
        elif kind == "bad_sensor_type":
            event["sensor_type"] = pick(["pressure", "CO2", "", "temp"])
        elif kind == "bad_id":
            name = pick(["device_id", "site_id", "zone_id"])
            event[name] = pick(["", "x" * 65, "site 01", "dev/01", "zone#2", "dév-01", "a\nb", "dev;drop"])
            if name == "device_id":
                key = event[name].encode()
        elif kind == "future_ts":
            if self._start_ms is None:
                # Live: a device clock minutes to days ahead of the worker's (SPEC §3 allows 5 min).
                ahead_ms = rng.randint(10 * 60_000, 2 * _DAY_MS)
            else:
                # Simulated time may be anything relative to the worker's clock; a century ahead is always future.
                ahead_ms = 36_525 * _DAY_MS + rng.randint(0, _DAY_MS)
            event["ts_event"] = format_ts(self._last_ms + ahead_ms)
        elif kind == "ts_without_offset":
            stamp = format_ts(self._last_ms)[:-1]
            event["ts_event"] = pick([stamp, stamp.replace("T", " "), stamp[:19]])
        elif kind == "bad_ts":
            event["ts_event"] = pick(
                ["yesterday", "", "2024-13-45T25:61:00Z", "12/05/2024 10:00", "2024-05-01T10:00Z+"]
            )
        else:  # pragma: no cover - INVALID_KINDS and this chain are kept in step by the tests
            raise ValueError(kind)
        return key, orjson.dumps(event)


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


# ---------------------------------------------------------------------------------------------------------------
# The producing edge.


@dataclass
class ProduceStats:
    """What one run produced; `kinds` counts messages by kind (valid, duplicate, each invalid kind)."""

    sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


BURST_BATCH_BYTES = 512 * 1024  # below the 1 MiB message.max.bytes default of Kafka and Redpanda
_BURST_CHUNK = 5000
_LOG_EVERY_S = 10.0


def _producer(settings: Settings, *, burst: bool) -> AIOKafkaProducer:
    from aiokafka import AIOKafkaProducer

    from telemetrypulse.settings import aiokafka_options

    return AIOKafkaProducer(
        **aiokafka_options(settings),
        client_id=settings.names.client_id("simulator"),
        acks="all",
        enable_idempotence=True,
        linger_ms=20 if burst else 5,
        max_batch_size=BURST_BATCH_BYTES if burst else 16384,
    )


async def produce(
    settings: Settings,
    simulator: Simulator,
    *,
    topic: str,
    count: int | None = None,
    rate: float | None = None,
    burst: bool = False,
    progress: bool = False,
    stop: asyncio.Event | None = None,
    create_topic: bool = True,
) -> ProduceStats:
    """Produce `count` messages (None: until `stop` is set) and wait until the broker has acknowledged all of them."""
    if not burst and (rate is None or rate <= 0):
        raise ValueError("rate must be > 0 unless burst")
    stop = stop or asyncio.Event()
    if create_topic:
        from telemetrypulse.kafka_admin import ensure_topics

        await ensure_topics(settings, [topic], settings.topic_partitions)
    producer = _producer(settings, burst=burst)
    await producer.start()
    stats = ProduceStats()
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        if burst:
            await _produce_burst(producer, topic, simulator, count, stop, stats, progress)
        else:
            assert rate is not None
            await _produce_paced(producer, topic, simulator, count, rate, stop, stats)
    finally:
        await producer.stop()  # flushes what is still buffered
        stats.elapsed_s = loop.time() - began
    return stats


class _Inflight:
    """Delivery futures not yet known to be done; the first failure is raised, not dropped."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future] = []
        self.limit = 256

    def add(self, future: asyncio.Future) -> None:
        self.futures.append(future)
        if len(self.futures) >= self.limit:
            self.check()

    def check(self) -> None:
        pending = []
        for future in self.futures:
            if future.done():
                future.result()
            else:
                pending.append(future)
        self.futures = pending
        # Amortised: a long backlog of unacknowledged sends must not be rescanned on every add.
        self.limit = max(256, 2 * len(pending))

    async def drain(self) -> None:
        if self.futures:
            await asyncio.gather(*self.futures)
        self.futures = []


async def _produce_paced(
    producer: AIOKafkaProducer,
    topic: str,
    simulator: Simulator,
    count: int | None,
    rate: float,
    stop: asyncio.Event,
    stats: ProduceStats,
) -> None:
    loop = asyncio.get_running_loop()
    messages = simulator.messages()
    inflight = _Inflight()
    # A 100 ms bucket keeps high rates smooth without sending a clump after a stall.
    capacity = max(1.0, rate * 0.1)
    tokens = 1.0
    last = loop.time()
    next_log = last + _LOG_EVERY_S
    logged_sent, logged_at = 0, last
    warned_future = False
    while not stop.is_set() and (count is None or stats.sent < count):
        now = loop.time()
        tokens = min(capacity, tokens + (now - last) * rate)
        last = now
        if tokens < 1.0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), (1.0 - tokens) / rate)
            continue
        n = int(tokens)
        if count is not None:
            n = min(n, count - stats.sent)
        tokens -= n
        for key, value, kind in islice(messages, n):
            inflight.add(await producer.send(topic, value, key=key))
            stats.kinds[kind] += 1
        stats.sent += n
        if now >= next_log:
            inflight.check()
            event_ms = simulator.event_time_ms
            log.info(
                "sent %d events in %.0f s (%.1f/s), total %d (%d duplicate, %d invalid), event time %s",
                stats.sent - logged_sent,
                now - logged_at,
                (stats.sent - logged_sent) / (now - logged_at),
                stats.sent,
                stats.kinds[DUPLICATE],
                stats.sent - stats.kinds[VALID] - stats.kinds[DUPLICATE],
                format_ts(event_ms),
            )
            if not warned_future and event_ms > time.time() * 1000 + 300_000:
                warned_future = True
                log.warning(
                    "simulated event time is now >5 min ahead of the clock: the worker will reject it"
                )
            logged_sent, logged_at, next_log = stats.sent, now, now + _LOG_EVERY_S
    await inflight.drain()


async def _produce_burst(
    producer: AIOKafkaProducer,
    topic: str,
    simulator: Simulator,
    count: int | None,
    stop: asyncio.Event,
    stats: ProduceStats,
    progress: bool,
) -> None:
    """Fill one record batch per partition and hand over full batches; no per-message send() or await.

    The partition is the one `send()` would pick (murmur2 of the key, Java-compatible), so every device keeps
    its partition whichever mode produced it. Record timestamps stay the produce time: event-time timestamps on
    a backfill would let retention delete the segments at once.
    """
    from aiokafka.partitioner import DefaultPartitioner

    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    partition_of: dict[bytes, int] = {}
    builders: dict[int, Any] = {}
    inflight = _Inflight()
    messages = simulator.messages()
    kinds = stats.kinds
    bar = _progress_bar(count) if progress else None
    try:
        while not stop.is_set() and (count is None or stats.sent < count):
            n = _BURST_CHUNK if count is None else min(_BURST_CHUNK, count - stats.sent)
            for key, value, kind in islice(messages, n):
                kinds[kind] += 1
                p = partition_of.get(key)
                if p is None:
                    p = partition_of[key] = partitioner(key, partitions, partitions)
                builder = builders.get(p)
                if builder is None:
                    builder = builders[p] = producer.create_batch()
                if builder.append(timestamp=None, key=key, value=value) is None:
                    # Awaiting here is the backpressure: it waits while the partition's previous batch is queued.
                    inflight.add(await producer.send_batch(builder, topic, partition=p))
                    builder = builders[p] = producer.create_batch()
                    if builder.append(timestamp=None, key=key, value=value) is None:
                        raise ValueError(f"message of {len(value)} bytes does not fit in a batch")
            stats.sent += n
            inflight.check()
            if bar is not None:
                bar.update(n)
            await asyncio.sleep(0)  # let the sender task and signal handlers run between chunks
        for p, builder in builders.items():
            if builder.record_count():
                inflight.add(await producer.send_batch(builder, topic, partition=p))
        await inflight.drain()
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(total: int | None) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a nicety; burst mode still logs its totals
        return None
    return tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr, smoothing=0.1, mininterval=0.5)


# ---------------------------------------------------------------------------------------------------------------
# Command line.


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _start(text: str) -> datetime:
    try:
        return parse_start(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemetrypulse simulate",
        description="Produce realistic synthetic building telemetry (SPEC §3 events) to Kafka.",
    )
    add = parser.add_argument
    add("--rate", type=_positive_float, help="events per second (default: EVENTS_PER_SECOND, 5)")
    add(
        "--count",
        type=_positive_int,
        help="stop after this many messages, duplicates and invalid ones included (default: run until stopped)",
    )
    add("--seed", help="seed: the same seed, --start and options give the same messages, event ids included")
    add(
        "--start",
        type=_start,
        help="simulated event time starting here (ISO-8601, or now-6h / now-2d) for backfills; "
        "default: event time is the wall clock",
    )
    add(
        "--interval",
        type=_positive_float,
        default=10.0,
        help="with --start: seconds of event time between a device's readings (default 10)",
    )
    add("--sites", type=_positive_int, default=3)
    add("--zones", type=_positive_int, default=5, help="zones per site")
    add("--devices-per-zone", type=_positive_int, default=3)
    add(
        "--duplicate-fraction",
        type=_fraction,
        default=0.0,
        help="share of messages that re-send an earlier event",
    )
    add("--invalid-fraction", type=_fraction, default=0.0, help="share of malformed messages (every kind)")
    add(
        "--anomalies-per-hour",
        type=float,
        default=0.5,
        help="anomaly episodes per device per hour of event time",
    )
    add("--burst", action="store_true", help="produce as fast as Kafka takes it (progress bar on stderr)")
    add("--topic", help="topic (default: TOPIC_EVENTS)")
    add("--no-create-topic", action="store_true", help="do not create the topic when it is missing")
    add(
        "--stdout",
        action="store_true",
        help="write the messages to stdout, one JSON value per line, not to Kafka",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`telemetrypulse simulate [options]`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    seed = int(args.seed) if args.seed is not None and re.fullmatch(r"-?\d+", args.seed) else args.seed
    try:
        simulator = Simulator(
            seed=seed,
            start=args.start,
            interval=args.interval,
            topology=Topology(args.sites, args.zones, args.devices_per_zone),
            duplicate_fraction=args.duplicate_fraction,
            invalid_fraction=args.invalid_fraction,
            anomalies_per_device_hour=args.anomalies_per_hour,
        )
    except ValueError as e:
        parser.error(str(e))
    if args.stdout:
        return _write_stdout(simulator, args.count)

    from telemetrypulse.exceptions import TelemetryPulseError
    from telemetrypulse.settings import get_settings

    try:
        settings = get_settings()
    except TelemetryPulseError as e:
        print(f"telemetrypulse simulate: {e}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    topic = args.topic or settings.topic_events
    rate = args.rate or settings.events_per_second
    try:
        return asyncio.run(_run(settings, simulator, args, topic, rate))
    except KeyboardInterrupt:
        return 130


async def _run(
    settings: Settings, simulator: Simulator, args: argparse.Namespace, topic: str, rate: float
) -> int:
    from aiokafka.errors import KafkaError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    mode = "burst" if args.burst else f"{rate:g} events/s"
    log.info(
        "simulating %d devices to %s at %s (%s), seed %s",
        simulator.topology.device_count,
        topic,
        settings.kafka_bootstrap_servers,
        mode,
        simulator.seed,
    )
    try:
        stats = await produce(
            settings,
            simulator,
            topic=topic,
            count=args.count,
            rate=rate,
            burst=args.burst,
            progress=args.burst,
            stop=stop,
            create_topic=not args.no_create_topic,
        )
    except (KafkaError, OSError, TimeoutError) as e:
        print(f"telemetrypulse simulate: Kafka at {settings.kafka_bootstrap_servers}: {e!r}", file=sys.stderr)
        return 1
    log.info(
        "produced %d events in %.1f s (%.0f/s): %d duplicate, %d invalid",
        stats.sent,
        stats.elapsed_s,
        stats.rate,
        stats.kinds[DUPLICATE],
        stats.sent - stats.kinds[VALID] - stats.kinds[DUPLICATE],
    )
    return 0


def _write_stdout(simulator: Simulator, count: int | None) -> int:
    out = sys.stdout.buffer
    try:
        for _key, value, _kind in islice(simulator.messages(), count):
            out.write(value + b"\n")
        out.flush()
    except BrokenPipeError:
        # `simulate --stdout | head`: stop quietly; point stdout at devnull so the exit-time flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
