"""Tumbling event-time windows (SPEC §4): assignment and the aggregate kept per window."""

from __future__ import annotations

WINDOW_SIZES_S = (300, 900)
WINDOW_NAMES = {300: "5m", 900: "15m"}


def window_start_us(ts_us: int, size_s: int) -> int:
    """`ts` floored to the window size since the epoch (floor division is right for pre-1970 times too)."""
    size_us = size_s * 1_000_000
    return ts_us // size_us * size_us


def window_key(sensor_type: str, size_s: int, start_us: int) -> str:
    return f"{sensor_type}|{size_s}|{start_us}"


def parse_window_key(key: str) -> tuple[str, int, int]:
    sensor_type, size_s, start_us = key.split("|")
    return sensor_type, int(size_s), int(start_us)


def new_aggregate(value: float, ts_us: int, site_id: str, zone_id: str, version: int) -> list:
    """[count, sum, min, max, first_ts_us, last_ts_us, site_id, zone_id, version] — a list so it
    serialises compactly in the device record."""
    return [1, value, value, value, ts_us, ts_us, site_id, zone_id, version]


def fold(aggregate: list, value: float, ts_us: int, site_id: str, zone_id: str, version: int) -> None:
    aggregate[0] += 1
    aggregate[1] += value
    if value < aggregate[2]:
        aggregate[2] = value
    if value > aggregate[3]:
        aggregate[3] = value
    if ts_us < aggregate[4]:
        aggregate[4] = ts_us
    if ts_us > aggregate[5]:
        aggregate[5] = ts_us
    aggregate[6] = site_id
    aggregate[7] = zone_id
    aggregate[8] = version


def is_final(start_us: int, size_s: int, watermark_us: int, grace_us: int) -> bool:
    """Final once the watermark has passed the window's end by the grace period: from then on every
    event that could fall in it is more than `grace` older than the watermark, i.e. too late."""
    return watermark_us >= start_us + size_s * 1_000_000 + grace_us
