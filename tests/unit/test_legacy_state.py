"""The per-device JSON state the worker still runs (telemetrypulse.legacy_state): SPEC §3–§5 on pure state.

Deleted with that module once the worker uses telemetrypulse.state.PartitionState (tests/unit/test_state.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from telemetrypulse import alerts
from telemetrypulse.legacy_state import BatchOutput, DeviceState, Source, apply_events
from telemetrypulse.models import Event, to_us
from telemetrypulse.windows import is_final, window_start_us

T0 = to_us(datetime(2026, 3, 1, 23, 55, tzinfo=UTC))
S = 1_000_000
GRACE = 300


def ev(
    ts_us: int, value: float = 500.0, sensor: str = "co2", event_id: str | None = None, device: str = "d1"
) -> Event:
    return Event(event_id or str(uuid.uuid4()), device, "s1", "z1", sensor, value, ts_us, None)


class Feed:
    """Feeds events to one device's state with increasing offsets, like a partition would."""

    def __init__(self) -> None:
        self.state = DeviceState()
        self.offset = 0

    def __call__(self, *events: Event, grace: int = GRACE):
        batch = []
        for event in events:
            batch.append((event, Source(0, self.offset, 0)))
            self.offset += 1
        return apply_events(self.state, batch, grace)


def test_window_start_floors_to_the_epoch_grid():
    assert window_start_us(T0, 300) == T0
    assert window_start_us(T0 + 299_999_999, 300) == T0
    assert window_start_us(T0 + 300 * S, 300) == T0 + 300 * S
    assert window_start_us(T0, 900) == to_us(datetime(2026, 3, 1, 23, 45, tzinfo=UTC))
    assert window_start_us(-1, 300) == -300 * S  # before 1970 still floors, not truncates


def test_windows_at_boundaries_and_across_midnight():
    feed = Feed()
    out = feed(ev(T0), ev(T0 + 300 * S - 1), ev(T0 + 300 * S), ev(T0 + 600 * S + 1))
    five = {row[3]: row for key, row in out.windows.items() if key[2] == 300}
    assert {start: row[6] for start, row in five.items()} == {T0: 2, T0 + 300 * S: 1, T0 + 600 * S: 1}
    midnight = to_us(datetime(2026, 3, 2, tzinfo=UTC))
    assert midnight == T0 + 300 * S
    fifteen = {row[3]: row[6] for key, row in out.windows.items() if key[2] == 900}
    assert fifteen == {midnight - 900 * S: 2, midnight: 2}


def test_aggregate_values():
    feed = Feed()
    out = feed(ev(T0, 400), ev(T0 + S, 700), ev(T0 + 2 * S, 550))
    row = out.windows[("d1", "co2", 300, T0)]
    _, _, _, _, _, _, count, total, low, high, first, last, version = row
    assert (count, total, low, high, first, last, version) == (3, 1650, 400, 700, T0, T0 + 2 * S, 2)


def test_lateness_at_and_just_past_the_grace_boundary():
    feed = Feed()
    feed(ev(T0 + 1000 * S))
    at_boundary = feed(ev(T0 + 700 * S))  # exactly grace older than the watermark: accepted
    assert (at_boundary.accepted, at_boundary.late) == (1, 0)
    past = feed(ev(T0 + 700 * S - 1))  # one µs more: too late
    assert (past.accepted, past.late) == (0, 1)
    assert len(past.stored) == 1 and past.stored[0][-1] is True  # stored raw, flagged late
    assert not past.windows and not past.latest and not past.alert_messages


def test_late_event_is_never_the_latest_value_nor_alerted():
    feed = Feed()
    feed(ev(T0 + 1000 * S, 500))
    out = feed(ev(T0, 5000))
    assert out.late == 1 and not out.alert_messages
    assert feed.state.latest["co2"][0] == 500


def test_duplicates_are_dropped_even_with_other_content():
    feed = Feed()
    first = ev(T0, 500, event_id="11111111-1111-4111-8111-111111111111")
    feed(first)
    out = feed(ev(T0 + S, 900, event_id=first.event_id), first)
    assert (out.accepted, out.duplicates) == (0, 2)
    assert not out.stored and not out.windows


def test_same_event_id_on_another_device_is_not_a_duplicate():
    a, b = DeviceState(), DeviceState()
    eid = "22222222-2222-4222-8222-222222222222"
    apply_events(a, [(ev(T0, event_id=eid, device="d1"), Source(0, 0, 0))], GRACE)
    out = apply_events(b, [(ev(T0, event_id=eid, device="d2"), Source(0, 1, 0))], GRACE)
    assert out.accepted == 1


def test_ids_are_forgotten_only_beyond_the_grace_horizon():
    feed = Feed()
    old = ev(T0)
    feed(old)
    feed(ev(T0 + GRACE * S))  # watermark exactly grace past: id still remembered
    assert old.event_id in feed.state.seen
    feed(ev(T0 + GRACE * S + 1))
    assert old.event_id not in feed.state.seen
    out = feed(old)  # now too late anyway
    assert (out.duplicates, out.late, out.accepted) == (0, 1, 0)


def test_windows_are_dropped_by_the_event_time_watermark():
    feed = Feed()
    feed(ev(T0))
    key = f"co2|300|{T0}"
    end = T0 + 300 * S
    feed(ev(end + GRACE * S - 1))
    assert key in feed.state.windows
    assert not is_final(T0, 300, end + GRACE * S - 1, GRACE * S)
    feed(ev(end + GRACE * S))
    assert key not in feed.state.windows
    assert is_final(T0, 300, end + GRACE * S, GRACE * S)


def test_latest_is_greatest_event_time_and_a_tie_goes_to_the_later():
    feed = Feed()
    feed(ev(T0 + 10 * S, 600), ev(T0 + 5 * S, 700))
    assert feed.state.latest["co2"][0] == 600
    feed(ev(T0 + 10 * S, 650))
    assert feed.state.latest["co2"][0] == 650


def test_hysteresis_episode():
    feed = Feed()
    values = [900, 1000, 1001, 1200, 960, 951, 1100, 950, 1300, 949]
    messages = []
    for i, value in enumerate(values):
        messages += feed(ev(T0 + i * S, value)).alert_messages
    assert [(m["status"], m["value"], m["peak_value"]) for m in messages] == [
        ("open", 1001, 1001),
        ("resolved", 1001, 1200),
        ("open", 1300, 1300),
        ("resolved", 1300, 1300),
    ]
    opened = messages[0]
    assert (
        opened["alert_type"] == "CO2_HIGH" and opened["rule"] == "threshold" and opened["threshold"] == 1000
    )
    assert opened["resolved_at"] is None
    assert messages[1]["alert_id"] == opened["alert_id"]
    assert messages[1]["resolved_at"] == "2026-03-01T23:55:07Z"
    assert messages[2]["alert_id"] != opened["alert_id"]


@pytest.mark.parametrize(
    ("sensor", "open_at", "stay", "resolve"),
    [("temperature", 30.01, 29.01, 29.0), ("humidity", 80.5, 77.1, 77.0)],
)
def test_rules_of_other_sensors(sensor, open_at, stay, resolve):
    feed = Feed()
    statuses = []
    for i, value in enumerate([30.0 if sensor == "temperature" else 80.0, open_at, stay, resolve]):
        statuses += [m["status"] for m in feed(ev(T0 + i * S, value, sensor=sensor)).alert_messages]
    assert statuses == ["open", "resolved"]


def test_occupancy_never_alerts():
    feed = Feed()
    assert not feed(ev(T0, 5000, sensor="occupancy")).alert_messages


def test_alert_id_is_uuid5_of_device_sensor_and_opening_event():
    event = ev(T0, 1500)
    message = Feed()(event).alert_messages[0]
    expected = uuid.uuid5(uuid.NAMESPACE_URL, f"telemetrypulse:d1:co2:{event.event_id}")
    assert message["alert_id"] == str(expected) == alerts.alert_id("d1", "co2", event.event_id)
    assert uuid.UUID(message["alert_id"]).version == 5


def test_fence_skips_replayed_events_and_state_round_trips():
    events = [ev(T0 + i * S, 1000 + i * 10) for i in range(5)]
    batch = [(e, Source(0, i, 0)) for i, e in enumerate(events)]
    state = DeviceState()
    first = apply_events(state, batch[:3], GRACE)
    assert first.accepted == 3 and len(first.alert_messages) == 1
    restored = DeviceState.from_bytes(state.to_bytes())
    # The crash came after the state was written: the source replays from offset 0.
    replay = apply_events(restored, batch, GRACE)
    assert (replay.replayed, replay.accepted, replay.alert_messages) == (3, 2, [])
    straight = DeviceState()
    apply_events(straight, batch, GRACE)
    assert restored.to_bytes() == straight.to_bytes()


def test_fence_of_another_partition_does_not_skip():
    state = DeviceState(partition=1, offset=100)
    out = apply_events(state, [(ev(T0), Source(2, 5, 0))], GRACE)
    assert out.accepted == 1 and state.partition == 2 and state.offset == 5


def test_changes_records_stay_under_a_managed_kafka_message_limit():
    """A batch at the worker's size, every row at its widest (64-char ids, alerts opening), is cut
    into records under 1 MB that together hold every row once, in order."""
    output = BatchOutput()
    long_id = "x" * 60
    for n in range(4000):
        event = Event(
            str(uuid.uuid4()), f"{long_id}{n:04d}", "s" * 64, "z" * 64, "co2", 123456.789012345, T0 + n, "ppm"
        )
        apply_events(DeviceState(), [(event, Source(0, n, T0 + n))], GRACE, output)
    assert len(output.alert_rows) == 4000
    encoded = output.changes_messages()
    assert max(len(r) for r in encoded) < 1_000_000, [len(r) for r in encoded]
    records = [orjson.loads(r) for r in encoded]
    for kind, expected in [
        ("events", output.stored),
        ("windows", list(output.windows.values())),
        ("latest", list(output.latest.values())),
        ("alerts", list(output.alert_rows.values())),
    ]:
        assert [row for r in records for row in r[kind]] == orjson.loads(orjson.dumps(expected))
    assert BatchOutput().changes_messages() == []
