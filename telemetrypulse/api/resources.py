"""What the API holds for its lifetime (built in the lifespan, read by dependencies)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from telemetrypulse.access import KeyRing
from telemetrypulse.api.alert_feed import AlertFeed
from telemetrypulse.api.data_access import Reader, Writer
from telemetrypulse.api.kafka import EventPublisher
from telemetrypulse.api.rule_history import RuleHistory
from telemetrypulse.settings import Settings


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """Tunables that are not deployment settings (tests shorten them)."""

    pool_max_size: int = 10
    query_timeout_s: float = 10.0
    ready_timeout_s: float = 1.5
    alert_poll_s: float = 5.0
    sse_heartbeat_s: float = 15.0


@dataclass(slots=True)
class ApiState:
    settings: Settings
    options: ApiOptions
    pool: asyncpg.Pool
    reader: Reader
    publisher: EventPublisher
    feed: AlertFeed
    keys: KeyRing
    writer: Writer
    rules: RuleHistory
