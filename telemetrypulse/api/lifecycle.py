"""The alert lifecycle in PostgreSQL for the API: acknowledgements, notes, and an alert's timeline.

Writes go to the operator tables only (`alert_acknowledgements`, `alert_notes`), through the operator
pool; the sink owns `telemetry_alerts` and never touches them, so a replayed or late resolve can change an
alert's status but never its acknowledgement or notes. Reads go through the read-only pool.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from telemetrypulse.api.alert_feed import ALERT_COLUMNS, ALERT_SOURCE
from telemetrypulse.api.data_access import Reader, Writer
from telemetrypulse.webhooks import event_name

# The first acknowledgement wins; a repeat (the same operator's double click, or a colleague a second
# later) changes nothing. `found` tells "unknown alert" (404) from "already acknowledged".
ACKNOWLEDGE = """
WITH alert AS (SELECT alert_id FROM telemetry_alerts WHERE alert_id = $1),
added AS (
    INSERT INTO alert_acknowledgements (alert_id, acknowledged_by, note, key_name)
    SELECT alert_id, $2, $3, $4 FROM alert
    ON CONFLICT (alert_id) DO NOTHING
    RETURNING alert_id
)
SELECT EXISTS (SELECT 1 FROM alert) AS found, EXISTS (SELECT 1 FROM added) AS added
"""

ADD_NOTE = """
INSERT INTO alert_notes (alert_id, author, text, key_name)
SELECT alert_id, $2, $3, $4 FROM telemetry_alerts WHERE alert_id = $1
RETURNING note_id, author AS by, text, created_at, key_name
"""

# Ties in time keep a natural order: an alert opens before anything else happens to it.
_KIND_ORDER = {
    "opened": 0,
    "acknowledged": 1,
    "note": 2,
    "delivered": 3,
    "delivery_expired": 4,
    "resolved": 5,
}


async def acknowledge(
    writer: Writer, alert_id: UUID, by: str, note: str | None, key_name: str | None
) -> bool | None:
    """True if this call acknowledged the alert, False if it already was, None if the alert is unknown."""
    row = await writer.fetchrow(ACKNOWLEDGE, alert_id, by, note, key_name)
    if not row["found"]:
        return None
    return row["added"]


async def add_note(writer: Writer, alert_id: UUID, by: str, text: str, key_name: str | None) -> dict | None:
    row = await writer.fetchrow(ADD_NOTE, alert_id, by, text, key_name)
    return dict(row) if row is not None else None


async def alert_detail(reader: Reader, alert_id: UUID) -> dict[str, Any] | None:
    """The alert with its acknowledgement, notes and timeline; None if unknown."""
    alert = await reader.fetchrow(
        f"SELECT {ALERT_COLUMNS} FROM {ALERT_SOURCE} WHERE a.alert_id = $1", alert_id
    )
    if alert is None:
        return None
    ack = await reader.fetchrow(
        "SELECT acknowledged_by AS by, acknowledged_at AS at, note, key_name"
        " FROM alert_acknowledgements WHERE alert_id = $1",
        alert_id,
    )
    notes = await reader.fetch(
        "SELECT note_id, author AS by, text, created_at, key_name FROM alert_notes"
        " WHERE alert_id = $1 ORDER BY note_id",
        alert_id,
    )
    deliveries = await reader.fetch(
        "SELECT receiver, status, state, attempts, last_status_code, delivered_at, expired_at"
        " FROM webhook_deliveries WHERE alert_id = $1 AND state <> 'pending' ORDER BY seq",
        alert_id,
    )
    detail = dict(alert)
    detail["acknowledgement"] = dict(ack) if ack is not None else None
    detail["notes"] = [dict(n) for n in notes]
    detail["timeline"] = timeline(
        detail, detail["acknowledgement"], detail["notes"], [dict(d) for d in deliveries]
    )
    return detail


def timeline(alert: dict, ack: dict | None, notes: list[dict], deliveries: list[dict]) -> list[dict]:
    """Everything that happened to an alert, oldest first."""
    entries: list[dict[str, Any]] = [
        {
            "at": alert["opened_at"],
            "kind": "opened",
            "by": None,
            "text": f"{alert['alert_type']} opened at {alert['value']:g}",
        }
    ]
    if ack is not None:
        entries.append({"at": ack["at"], "kind": "acknowledged", "by": ack["by"], "text": ack["note"]})
    entries.extend({"at": n["created_at"], "kind": "note", "by": n["by"], "text": n["text"]} for n in notes)
    for d in deliveries:
        event = event_name(d["status"])
        if d["state"] == "delivered":
            text = f"{event} delivered (HTTP {d['last_status_code']}, attempt {d['attempts']})"
            entries.append({"at": d["delivered_at"], "kind": "delivered", "by": d["receiver"], "text": text})
        elif d["state"] == "expired" and d["expired_at"] is not None:
            text = f"{event} given up after {d['attempts']} attempts"
            entries.append(
                {"at": d["expired_at"], "kind": "delivery_expired", "by": d["receiver"], "text": text}
            )
    if alert["resolved_at"] is not None:
        text = f"resolved; peak {alert['peak_value']:g}"
        entries.append({"at": alert["resolved_at"], "kind": "resolved", "by": None, "text": text})
    return sorted(entries, key=lambda e: (e["at"], _KIND_ORDER[e["kind"]]))
