"""Webhook rules (SPEC §10), pure: receivers and their filters, which alert message becomes which
delivery, the headers and HMAC signature, and the retry schedule.

The notifier (notify/) does the I/O around these; the API uses the receiver and severity rules to
validate `PUT /webhooks/{name}`. Nothing here imports Kafka, PostgreSQL or an HTTP client.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import orjson

SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
# Every alert message carries its rule's severity (SPEC §9); one without (written before run-time rules) is `warning`.
DEFAULT_SEVERITY = "warning"
STATUSES = ("open", "resolved")
RECEIVER_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
# Retries: 1 s, 2 s, 4 s … up to 5 minutes between attempts, ±10 % so receivers coming back are not hit
# by every notifier at the same instant.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else SEVERITIES.index(DEFAULT_SEVERITY)


def parse_webhook_urls(text: str) -> list[str]:
    """`WEBHOOK_URLS`: comma-separated http(s) URLs, in order, repeats dropped.

    A URL can carry a receiver's credentials (a token in its path or query), so a ValueError names the
    entry by position and shows at most its scheme and host.
    """
    urls: list[str] = []
    for position, entry in enumerate((part.strip() for part in text.split(",")), start=1):
        if not entry:
            continue
        problem = url_problem(entry)
        if problem is not None:
            raise ValueError(f"entry {position}: {problem}")
        if entry not in urls:
            urls.append(entry)
    return urls


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook receiver, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "the URL has no host"
    if any(ch.isspace() for ch in url):
        return "the URL contains whitespace"
    return None


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: enough to tell receivers apart in a log line, without their tokens."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def env_receiver_name(url: str) -> str:
    """A stable name for a receiver of `WEBHOOK_URLS`: its delivery log survives reordering the list."""
    return "env-" + hashlib.sha256(url.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    url: str
    site_id: str | None = None
    min_severity: str = "info"
    source: Literal["env", "api"] = "api"

    def accepts(self, alert: AlertMessage) -> bool:
        if self.site_id is not None and alert.site_id != self.site_id:
            return False
        return severity_rank(alert.severity) >= severity_rank(self.min_severity)

    def __repr__(self) -> str:
        return f"Receiver({self.name!r}, {redact_url(self.url)})"


def env_receivers(urls: list[str]) -> list[Receiver]:
    return [Receiver(env_receiver_name(url), url, source="env") for url in urls]


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """What the notifier needs of one message of the alerts topic; `body` is its exact bytes."""

    alert_id: str
    status: str
    site_id: str
    severity: str
    body: bytes

    @property
    def delivery_id(self) -> str:
        return delivery_id(self.alert_id, self.status)


def delivery_id(alert_id: str, status: str) -> str:
    return f"{alert_id}:{status}"


def event_name(status: str) -> str:
    return f"alert.{status}"


def parse_alert_message(raw: bytes | None) -> AlertMessage | str:
    """An alert message (SPEC §5), or why it is not one (the notifier logs and skips those)."""
    if raw is None:
        return "no value"
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(payload, dict):
        return "not a JSON object"
    status = payload.get("status")
    if status not in STATUSES:
        return f"status is not one of {', '.join(STATUSES)}"
    try:
        alert_id = str(uuid.UUID(str(payload.get("alert_id"))))
    except ValueError:
        return "alert_id is not a UUID"
    site_id = payload.get("site_id")
    if not isinstance(site_id, str) or not site_id:
        return "site_id is missing"
    severity = payload.get("severity")
    if severity not in SEVERITIES:
        severity = DEFAULT_SEVERITY
    return AlertMessage(alert_id, status, site_id, severity, bytes(raw))


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    receiver: str
    alert: AlertMessage


def plan_deliveries(alerts: list[AlertMessage], receivers: list[Receiver]) -> list[PlannedDelivery]:
    """One delivery per (message, receiver that accepts it), in message order: the outbox's insert order
    is the order each receiver is sent in, so an alert's open stays ahead of its resolve."""
    return [PlannedDelivery(r.name, alert) for alert in alerts for r in receivers if r.accepts(alert)]


def signature(secret: bytes, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of the exact body (the receiver recomputes it over the bytes it read)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does (documented in the README): constant-time compare of the recomputed value."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)


def delivery_headers(secret: bytes, delivery: str, status: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-TelemetryPulse-Event": event_name(status),
        "X-TelemetryPulse-Delivery": delivery,
        "X-TelemetryPulse-Signature": signature(secret, body),
    }


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1 → ~1 s, 2 → ~2 s, … at most ~5 min)."""
    base = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return base * (0.9 + 0.2 * (rng or random).random())
