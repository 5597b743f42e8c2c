"""Event time for the simulator: epoch milliseconds as ISO-8601 UTC text, and `--start` parsed."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

DAY_MS = 86_400_000


def format_ts(ms: int) -> str:
    """Epoch milliseconds -> `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return TsFormatter()(ms)


class TsFormatter:
    """Formats epoch ms as ISO-8601 UTC, caching the date part (datetime.isoformat per event is slow)."""

    __slots__ = ("day", "prefix")

    def __init__(self) -> None:
        self.day = None
        self.prefix = ""

    def __call__(self, ms: int) -> str:
        day, rest = divmod(ms, DAY_MS)
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


def epoch_ms(start: datetime | str) -> int:
    moment = parse_start(start) if isinstance(start, str) else start
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp() * 1000)
