"""The per-partition state (telemetrypulse.state): SPEC §3–§5 per batch, against the independent model.

The folded outputs of whole datasets must be what tests/pipeline_model.py says, however the stream is cut into
batches, with replays of what was already applied, and with the state stored and loaded again at random points
(including crashes that replay from an older snapshot). The rules' edge cases follow, one test each.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest

from telemetrypulse import alerts, dedup_ids
from telemetrypulse.batch_result import BatchResult
from telemetrypulse.changes import SENSORS, AlertRow
from telemetrypulse.decode import DecodedBatch
from telemetrypulse.models import Event, Invalid, iso_utc, now_us, to_us, validate_event
from telemetrypulse.state import PartitionState
from telemetrypulse.state_records import PARTITION_KEY, decode_device_record, record_fence
from tests.pipeline_model import GRACE_S, build_dataset, expected_outcome, parse_us

T0 = to_us(datetime(2026, 3, 1, 23, 55, tzinfo=UTC))
S = 1_000_000
GRACE = 300


def ev(
    ts_us: int,
    value: float = 500.0,
    sensor: str = "co2",
    event_id: str | None = None,
    device: str = "d1",
    site: str = "s1",
    zone: str = "z1",
    unit: str | None = None,
) -> Event:
    return Event(event_id or str(uuid.uuid4()), device, site, zone, sensor, value, ts_us, unit)


def decoded(events: list[Event | None]) -> DecodedBatch:
    """The batch of a fetched slice: None stands for an invalid input (it takes an offset, nothing else)."""
    valid = [(p, e) for p, e in enumerate(events) if e is not None]
    invalid = [(p, Invalid("invalid_json", "test")) for p, e in enumerate(events) if e is None]
    return DecodedBatch.from_events(valid, invalid)


class Feed:
    """One source partition: each call is one fetched slice, offsets follow on."""

    def __init__(self, grace: int = GRACE) -> None:
        self.state = PartitionState(0, grace)
        self.offset = 0

    def __call__(self, *events: Event | None, emit: bool = True) -> BatchResult:
        batch = decoded(list(events))
        first = self.offset
        self.offset += len(events)
        offsets = batch.valid + first
        return self.state.apply(batch, offsets, offsets * 10, last_offset=self.offset - 1, emit=emit)


def stored(state: PartitionState) -> dict[bytes, bytes]:
    return dict(state.snapshot())


def record(state: PartitionState, device: str = "d1"):
    return decode_device_record(stored(state)[device.encode()])


# ---------------------------------------------------------------------------------------------------------------
# Folding outputs as the sinks keep them.


@dataclass
class Folded:
    """What PostgreSQL and an alerts consumer hold after every output so far (re-sent outputs included)."""

    raw: dict[tuple[str, str], dict] = field(default_factory=dict)  # first row wins (ON CONFLICT DO NOTHING)
    windows: dict[tuple, dict] = field(default_factory=dict)  # highest version wins
    latest: dict[tuple[str, str], dict] = field(default_factory=dict)  # highest version wins
    alerts: dict[str, AlertRow] = field(default_factory=dict)  # open -> resolved only
    messages: dict[tuple[str, str], dict] = field(default_factory=dict)  # (alert_id, status) -> message
    accepted: int = 0
    duplicates: int = 0
    late: int = 0

    def add(self, result: BatchResult, count: bool = True) -> None:
        if count:
            self.accepted += result.accepted
            self.duplicates += result.duplicates
            self.late += result.late
        dims = result.dims
        for row in result.raw.tolist():
            dim, event_id, sensor, late, unit_given, value, ts, _ingest = row
            key = (dims[dim][0], str(uuid.UUID(bytes=event_id)))
            self.raw.setdefault(
                key,
                {"late": late, "sensor": SENSORS[sensor], "value": value, "ts": ts, "unit_given": unit_given},
            )
        for row in result.windows:
            device, site, zone = dims[row["dim"]]
            key = (int(row["size_s"]), device, SENSORS[row["sensor"]], int(row["start_us"]))
            new = {name: row[name].item() for name in row.dtype.names if name != "dim"} | {
                "zone": (site, zone)
            }
            old = self.windows.get(key)
            if old is not None and old["version"] == new["version"]:
                assert old == new, "a window re-sent with the same version must be identical"
            if old is None or new["version"] > old["version"]:
                self.windows[key] = new
        for row in result.latest:
            key = (dims[row["dim"]][0], SENSORS[row["sensor"]])
            new = {"value": float(row["value"]), "ts": int(row["ts_us"]), "version": int(row["version"])}
            if key not in self.latest or new["version"] >= self.latest[key]["version"]:
                self.latest[key] = new
        for alert in result.alert_rows:
            old = self.alerts.get(alert.alert_id)
            if old is None or old.status == "open":
                self.alerts[alert.alert_id] = alert
        for message in result.alert_messages:
            key = (message["alert_id"], message["status"])
            if key in self.messages:
                assert self.messages[key] == message, "a re-sent alert message must be identical"
            self.messages[key] = message


def assert_matches_model(folded: Folded, expected) -> None:
    assert (folded.accepted, folded.duplicates, folded.late) == (
        expected.accepted,
        expected.duplicates,
        expected.late,
    )
    # Raw rows: every accepted and too-late event once, flagged as the model says.
    assert folded.raw.keys() == expected.raw.keys()
    for key, event in expected.raw.items():
        row = folded.raw[key]
        assert row["late"] == (key in expected.late_keys), key
        assert (row["sensor"], row["value"], row["ts"]) == (
            event["sensor_type"],
            float(event["value"]),
            parse_us(event["ts_event"]),
        )
        assert row["unit_given"] == ("unit" in event)
    # Windows: count, sum (bit for bit: the model adds in the same order), min, max.
    assert folded.windows.keys() == expected.windows.keys()
    for key, agg in expected.windows.items():
        row = folded.windows[key]
        assert (row["count"], row["sum"], row["min"], row["max"]) == (
            agg["count"],
            agg["sum"],
            agg["min"],
            agg["max"],
        ), key
    # Sum of squares, first and last ts_event: computed here from the model's accepted events, in order.
    independent: dict[tuple, list] = {}
    for (device, event_id), event in expected.raw.items():
        if (device, event_id) in expected.late_keys:
            continue
        ts, value = parse_us(event["ts_event"]), float(event["value"])
        for size in (300, 900):
            start = ts // (size * S) * size * S
            agg = independent.setdefault((size, device, event["sensor_type"], start), [0.0, ts, ts])
            agg[0] += value * value
            agg[1], agg[2] = min(agg[1], ts), max(agg[2], ts)
    for key, (sum_sq, first, last) in independent.items():
        row = folded.windows[key]
        assert (row["sum_sq"], row["first_us"], row["last_us"]) == (sum_sq, first, last), key
    # Latest values.
    assert {k: v["value"] for k, v in folded.latest.items()} == expected.latest
    # Alert episodes: ids, peaks, opening and resolving readings.
    assert folded.alerts.keys() == expected.alerts.keys()
    for alert_id, want in expected.alerts.items():
        row = folded.alerts[alert_id]
        assert row.status == want["status"]
        assert (row.alert_type, row.device_id, row.sensor_type) == (
            want["alert_type"],
            want["device_id"],
            want["sensor_type"],
        )
        assert (row.value, row.peak_value, row.event_id) == (
            want["value"],
            want["peak_value"],
            want["event_id"],
        )
        assert row.opened_at == iso_utc(want["opened_at"])
        assert row.resolved_at == (None if want["resolved_at"] is None else iso_utc(want["resolved_at"]))
    statuses = {(a, s) for a, s in folded.messages}
    assert statuses == {(a, "open") for a in expected.alerts} | {
        (a, "resolved") for a, w in expected.alerts.items() if w["status"] == "resolved"
    }


# ---------------------------------------------------------------------------------------------------------------
# Whole datasets against the model.


class Partition:
    """A dataset as one source partition (offset = message index), driven the way the worker drives the state:
    fetched slices, snapshots stored into a table, crashes that reload the table and replay from its offset."""

    def __init__(self, dataset) -> None:
        now = now_us()
        self.events: list[Event | None] = []
        for message in dataset.messages:
            result = validate_event(message.value, now)
            self.events.append(result if isinstance(result, Event) else None)
        assert sum(e is None for e in self.events) == sum(m.kind == "invalid" for m in dataset.messages)
        self.state = PartitionState(0, GRACE_S)
        self.table: dict[bytes, bytes] = {}
        self.folded = Folded()

    def __len__(self) -> int:
        return len(self.events)

    def apply(self, start: int, end: int, *, emit: bool = True) -> BatchResult:
        batch = decoded(self.events[start:end])
        offsets = batch.valid + start
        return self.state.apply(batch, offsets, offsets + T0, last_offset=end - 1, emit=emit)

    def run(
        self, start: int, end: int, cut: int, *, emit: bool = True, count: bool = True
    ) -> list[BatchResult]:
        results = []
        for a in range(start, end, cut):
            result = self.apply(a, min(end, a + cut), emit=emit)
            self.folded.add(result, count=count)
            results.append(result)
        return results

    def store(self, records: list[tuple[bytes, bytes]]) -> None:
        self.table.update(records)

    def restart(self) -> int:
        """A new worker: the state loaded from the table; returns the first offset to fetch."""
        self.state = PartitionState(0, GRACE_S)
        self.state.load(self.table.items())
        return self.state.snapshot_offset + 1


@pytest.fixture(scope="module")
def dataset():
    return build_dataset()


@pytest.fixture(scope="module")
def expected(dataset):
    return expected_outcome(dataset)


@pytest.mark.parametrize("cut", [1, 7, 100, 4000])
def test_a_whole_dataset_folds_to_the_model(dataset, expected, cut):
    partition = Partition(dataset)
    partition.run(0, len(partition), cut)
    assert_matches_model(partition.folded, expected)


# What happens after each batch, in turn: every kind of disturbance comes up whatever the number of batches.
AFTER_BATCH = ("snapshot", "replay", "crash", "nothing", "partial snapshot", "snapshot", "crash", "replay")


@pytest.fixture(scope="module")
def large_dataset():
    """Enough messages (~10,400) for several batches of 4,000."""
    dataset = build_dataset(seed=23, devices_per_zone=4, readings_per_sensor=150)
    return dataset, expected_outcome(dataset)


@pytest.mark.parametrize("cut", [1, 7, 100, 4000])
def test_replays_snapshots_and_crashes_fold_to_the_model_and_to_the_same_state(
    dataset, expected, large_dataset, cut
):
    """After each batch, in turn: a snapshot stored; a replay of an applied stretch; a crash (the state reloaded
    from the table, the source replayed from its snapshot offset with another cut); a snapshot only partly stored
    when the worker died. The published outputs fold to the model, and the stored state ends byte for byte where
    a straight run's ends."""
    if cut == 4000:
        dataset, expected = large_dataset
    rng = random.Random(cut)
    partition = Partition(dataset)
    end = len(partition)
    assert end > 2 * cut or cut < 4000
    done: dict[str, int] = {}
    position = 0
    for k, start in enumerate(range(0, end, cut)):
        position = min(end, start + cut)
        partition.run(start, position, cut)
        action = AFTER_BATCH[k % len(AFTER_BATCH)] if position < end else "crash"
        done[action] = done.get(action, 0) + 1
        if action == "replay":
            # Something already applied comes again: every event skipped, nothing emitted.
            since = rng.randrange(0, position)
            results = partition.run(since, position, max(rng.choice([1, 13, 500]), (position - since) // 40))
            assert sum(r.accepted + r.duplicates + r.late for r in results) == 0
            assert sum(r.replayed for r in results) == sum(
                e is not None for e in partition.events[since:position]
            )
            assert all(len(r.raw) + len(r.windows) + len(r.latest) + len(r.alert_rows) == 0 for r in results)
        elif action == "snapshot":
            partition.store(partition.state.snapshot())
        elif (
            action == "partial snapshot"
        ):  # the worker died while storing: some device records, no partition one
            records = partition.state.snapshot()
            partition.store(rng.sample(records[:-1], rng.randrange(0, len(records))))
            _crash(partition, position, rng)
        elif action == "crash":
            _crash(partition, position, rng)
    assert done.get("crash", 0) >= 1 and (cut == 4000 or len(done) == 5)
    assert_matches_model(partition.folded, expected)

    straight = Partition(dataset)
    straight.run(0, end, end)
    straight.store(straight.state.snapshot())
    partition.store(partition.state.snapshot())
    assert partition.table == straight.table


def _crash(partition: Partition, published_up_to: int, rng: random.Random) -> None:
    """A restart from the table. Everything below `published_up_to` was published: replay it without emitting
    (what the worker does when it knows), or re-publishing (identical outputs are harmless), with another cut."""
    replay_from = partition.restart()
    assert replay_from <= published_up_to
    emit = rng.random() < 0.5
    cut = max(rng.choice([1, 5, 64, 4000]), (published_up_to - replay_from) // 40)
    partition.run(replay_from, published_up_to, cut, emit=emit, count=False)


def test_id_hash_collisions_only_slow_things_down(dataset, expected, monkeypatch):
    """Ids are found by a short hash first; with a 1-bit hash nearly every event has a look-alike, goes down the
    exact per-event path, and the outcome (through a snapshot, a load and a replay) is still the model's."""
    monkeypatch.setattr(dedup_ids, "_ID_HASH_BITS", 1)
    partition = Partition(dataset)
    half = len(partition) // 2
    partition.run(0, half, 100)
    partition.store(partition.state.snapshot())
    partition.run(half, half + 300, 100)
    _crash(partition, half + 300, random.Random(1))
    partition.run(half + 300, len(partition), 100)
    assert_matches_model(partition.folded, expected)


@pytest.mark.parametrize("seed", [11, 12])
def test_random_cuts_of_a_larger_dataset_fold_to_the_model(seed):
    dataset = build_dataset(seed=seed, devices_per_zone=3, readings_per_sensor=80, interval_s=15)
    expected = expected_outcome(dataset)
    rng = random.Random(seed)
    partition = Partition(dataset)
    position = 0
    while position < len(partition):
        size = rng.choice([1, 2, 3, 50, 333, 1200])
        partition.run(position, min(len(partition), position + size), size)
        position += size
    assert_matches_model(partition.folded, expected)


# ---------------------------------------------------------------------------------------------------------------
# Lateness and the watermark.


def test_exactly_the_grace_is_accepted_one_microsecond_more_is_too_late():
    feed = Feed()
    feed(ev(T0 + 1000 * S))
    at_boundary = feed(ev(T0 + 700 * S))
    assert (at_boundary.accepted, at_boundary.late) == (1, 0)
    past = feed(ev(T0 + 700 * S - 1))
    assert (past.accepted, past.late) == (0, 1)
    assert past.raw["late"].tolist() == [True]
    assert len(past.windows) == len(past.latest) == len(past.alert_messages) == len(past.alert_rows) == 0


def test_the_grace_boundary_is_the_same_within_one_batch():
    feed = Feed()
    out = feed(ev(T0 + 1000 * S), ev(T0 + 700 * S), ev(T0 + 700 * S - 1))
    assert out.raw["late"].tolist() == [False, False, True]


def test_out_of_order_events_within_the_grace_are_folded_and_the_watermark_is_the_maximum():
    feed = Feed()
    out = feed(ev(T0 + 100 * S, 10), ev(T0 + 50 * S, 20), ev(T0 + 250 * S, 30), ev(T0 + 10 * S, 40))
    assert (out.accepted, out.late) == (4, 0)
    five = out.windows[out.windows["size_s"] == 300]
    assert five["count"].tolist() == [4] and five["first_us"].tolist() == [T0 + 10 * S]
    assert five["last_us"].tolist() == [T0 + 250 * S]
    assert out.latest["value"].tolist() == [30]  # greatest ts_event, not the last offset
    # The watermark is T0+250s: a reading older than T0-50s is too late, even though T0+10s came last.
    assert feed(ev(T0 - 50 * S - 1)).late == 1
    assert feed(ev(T0 - 50 * S)).accepted == 1


def test_a_too_late_event_changes_no_window_no_latest_value_and_no_alert():
    feed = Feed()
    feed(ev(T0 + 1000 * S, 500))
    out = feed(ev(T0, 5000), ev(T0 + 1, 4000, sensor="temperature"))
    assert out.late == 2 and out.accepted == 0
    assert len(out.windows) == len(out.latest) == len(out.alert_messages) == len(out.alert_rows) == 0
    assert out.raw["late"].tolist() == [True, True]
    too_late = ev(T0 + 5, 3000)
    assert feed(too_late).late == 1
    again = feed(too_late)
    assert (again.late, again.duplicates) == (1, 0)  # its id was not remembered
    later = feed(ev(T0 + 1000 * S, 500))  # same ts as the latest: a tie, so it replaces it
    assert later.latest["value"].tolist() == [500]
    rec = record(feed.state)
    assert rec.latest_rows()["sensor"].tolist() == [SENSORS.index("co2")] and rec.episodes == []


def test_a_too_late_event_does_not_raise_the_watermark():
    feed = Feed()
    feed(ev(T0 + 1000 * S))
    feed(ev(T0))  # too late
    assert record(feed.state).watermark == T0 + 1000 * S


# ---------------------------------------------------------------------------------------------------------------
# Duplicates.


def test_duplicates_within_one_batch_and_across_batches():
    feed = Feed()
    first = ev(T0, 500, event_id="11111111-1111-4111-8111-111111111111")
    out = feed(first, ev(T0 + S, 900, event_id=first.event_id), ev(T0 + 2 * S, 600))
    assert (out.accepted, out.duplicates) == (2, 1)
    assert out.windows["count"].tolist() == [2, 2] and out.windows["sum"].tolist() == [1100, 1100]
    again = feed(first, ev(T0 + 3 * S, 700), ev(T0 + 4 * S, 1, event_id=first.event_id))
    assert (again.accepted, again.duplicates) == (1, 2)
    assert len(again.raw) == 1


def test_a_duplicate_is_judged_by_its_id_whatever_it_carries():
    feed = Feed()
    first = ev(T0, 500)
    feed(first)
    out = feed(ev(T0 + 200 * S, 5000, sensor="co2", event_id=first.event_id))
    assert (out.duplicates, out.accepted) == (1, 0)
    assert len(out.raw) == len(out.windows) == len(out.alert_messages) == 0


def test_the_same_event_id_on_another_device_is_not_a_duplicate():
    feed = Feed()
    eid = "22222222-2222-4222-8222-222222222222"
    out = feed(ev(T0, event_id=eid, device="d1"), ev(T0, event_id=eid, device="d2"))
    assert (out.accepted, out.duplicates) == (2, 0)
    assert feed(ev(T0, event_id=eid, device="d2")).duplicates == 1


def test_an_id_is_forgotten_once_the_watermark_passes_its_time_by_more_than_the_grace():
    feed = Feed()
    old = ev(T0)
    feed(old)
    feed(ev(T0 + GRACE * S))  # exactly the grace: still remembered
    assert feed(old).duplicates == 1
    feed(ev(T0 + GRACE * S + 1))
    out = feed(old)  # forgotten: an exact re-send is now judged by its time, too late
    assert (out.duplicates, out.late, out.accepted) == (0, 1, 0)
    assert old.event_id not in {str(uuid.UUID(bytes=i)) for i in record(feed.state).id_list()}


@pytest.mark.parametrize("together", [True, False])
def test_forgetting_follows_the_watermark_event_by_event_not_batch_by_batch(together):
    """An id forgotten by an event earlier in the same batch is forgotten for the events after it: the verdict
    does not depend on whether the two arrive in one batch or in two."""
    feed = Feed()
    old = ev(T0)
    feed(old)
    newer = ev(T0 + GRACE * S + 1)
    reused = ev(T0 + GRACE * S + 1, 700, event_id=old.event_id)  # same id, a fresh reading time
    results = [feed(newer, reused)] if together else [feed(newer), feed(reused)]
    assert sum(r.accepted for r in results) == 2 and sum(r.duplicates for r in results) == 0


def test_a_duplicate_never_moves_the_watermark():
    feed = Feed()
    first = ev(T0)
    feed(first)
    feed(ev(T0 + 2000 * S, event_id=first.event_id))  # a duplicate carrying a far later time
    assert feed(ev(T0 - 100 * S)).accepted == 1
    assert record(feed.state).watermark == T0


# ---------------------------------------------------------------------------------------------------------------
# Windows.


def test_windows_at_their_boundaries_and_across_midnight():
    feed = Feed()
    out = feed(ev(T0), ev(T0 + 300 * S - 1), ev(T0 + 300 * S), ev(T0 + 600 * S + 1))
    five = {r["start_us"]: r["count"] for r in out.windows if r["size_s"] == 300}
    assert five == {T0: 2, T0 + 300 * S: 1, T0 + 600 * S: 1}
    midnight = to_us(datetime(2026, 3, 2, tzinfo=UTC))
    fifteen = {r["start_us"]: r["count"] for r in out.windows if r["size_s"] == 900}
    assert fifteen == {midnight - 900 * S: 2, midnight: 2}


def test_window_rows_carry_the_whole_aggregate_and_the_last_events_place_and_offset():
    feed = Feed()
    feed(ev(T0, 400, zone="z1"))
    out = feed(ev(T0 + 2 * S, 700, zone="z2"), ev(T0 + S, 550, zone="z3"))
    row = out.windows[out.windows["size_s"] == 300][0]
    assert (row["count"], row["sum"], row["min"], row["max"]) == (3, 1650, 400, 700)
    assert (row["first_us"], row["last_us"], row["version"]) == (T0, T0 + 2 * S, 2)
    assert row["sum_sq"] == 400.0**2 + 700.0**2 + 550.0**2
    assert out.dims[row["dim"]] == ("d1", "s1", "z3")  # the last event folded, in offset order


def test_sums_are_folded_in_event_order_bit_for_bit_whatever_the_cuts():
    rng = random.Random(5)
    values = [rng.choice([0.1, 0.2, 0.3, 1e6, 123.456, 1e-3]) * rng.randint(1, 999) for _ in range(600)]
    total, total_sq = 0.0, 0.0
    for v in values:
        total += v
        total_sq += v * v
    assert total != math.fsum(values) or total_sq != math.fsum(v * v for v in values)  # order matters here
    for cut in (1, 7, 41, 600):
        feed = Feed()
        rows = []
        for a in range(0, len(values), cut):
            out = feed(*[ev(T0 + i * 1000, v) for i, v in enumerate(values[a : a + cut], start=a)])
            rows.extend(out.windows[out.windows["size_s"] == 300].tolist())
        final = max(rows, key=lambda r: r[-1])
        assert (final[5], final[8]) == (total, total_sq), cut


def test_a_window_is_dropped_from_state_once_the_watermark_reaches_its_end_plus_grace():
    feed = Feed()
    feed(ev(T0))
    end = T0 + 300 * S
    feed(ev(end + GRACE * S - 1))
    starts = {(r["size_s"], r["start_us"]) for r in record(feed.state).window_rows()}
    assert (300, T0) in starts
    feed(ev(end + GRACE * S))
    starts = {(r["size_s"], r["start_us"]) for r in record(feed.state).window_rows()}
    assert (300, T0) not in starts
    # Nothing can fall into it any more: a reading of that window is too late now.
    assert feed(ev(end - 1)).late == 1


def test_a_record_holds_exactly_the_windows_not_yet_final():
    feed = Feed()
    for i in range(40):  # one reading a minute for 40 minutes
        feed(ev(T0 + i * 60 * S))
    watermark = T0 + 39 * 60 * S
    touched = {(size, (T0 + i * 60 * S) // (size * S) * size * S) for i in range(40) for size in (300, 900)}
    open_ = {(size, start) for size, start in touched if watermark < start + size * S + GRACE * S}
    assert {(r["size_s"], r["start_us"]) for r in record(feed.state).window_rows()} == open_


# ---------------------------------------------------------------------------------------------------------------
# Latest values.


def test_latest_is_the_greatest_event_time_and_a_tie_goes_to_the_later_offset():
    feed = Feed()
    out = feed(ev(T0 + 10 * S, 600), ev(T0 + 5 * S, 700), ev(T0 + 10 * S, 650))
    assert out.latest["value"].tolist() == [650] and out.latest["version"].tolist() == [2]
    older = feed(ev(T0 + 9 * S, 1))
    assert len(older.latest) == 0
    tie = feed(ev(T0 + 10 * S, 2))
    assert tie.latest["value"].tolist() == [2]


# ---------------------------------------------------------------------------------------------------------------
# Alerts.


def test_an_episode_opens_peaks_and_resolves_with_todays_messages():
    feed = Feed()
    values = [900, 1000, 1001, 1200, 960, 951, 1100, 950, 1300, 949]
    events = [ev(T0 + i * S, v, site="site-a", zone="zone-b") for i, v in enumerate(values)]
    results = [feed(e) for e in events]
    messages = [m for r in results for m in r.alert_messages]
    first_id = alerts.alert_id("d1", "co2", events[2].event_id)
    assert messages[0] == {
        "alert_id": first_id,
        "status": "open",
        "rule": "threshold",
        "alert_type": "CO2_HIGH",
        "device_id": "d1",
        "site_id": "site-a",
        "zone_id": "zone-b",
        "sensor_type": "co2",
        "threshold": 1000.0,
        "value": 1001.0,
        "peak_value": 1001.0,
        "opened_at": "2026-03-01T23:55:02Z",
        "resolved_at": None,
        "event_id": events[2].event_id,
        "rule_id": "default-co2-high",  # SPEC §9: the default rule that opened it, and its severity
        "severity": "warning",
    }
    assert messages[1] == messages[0] | {
        "status": "resolved",
        "peak_value": 1200.0,
        "resolved_at": "2026-03-01T23:55:07Z",
        "resolved_event_id": events[7].event_id,
    }
    assert [(m["status"], m["value"], m["peak_value"]) for m in messages[2:]] == [
        ("open", 1300, 1300),
        ("resolved", 1300, 1300),
    ]
    # Rows: at open, when the peak moves (no message), at resolve.
    rows = [(i, row) for i, r in enumerate(results) for row in r.alert_rows]
    assert [(i, row.status, row.peak_value) for i, row in rows] == [
        (2, "open", 1001),
        (3, "open", 1200),
        (7, "resolved", 1200),
        (8, "open", 1300),
        (9, "resolved", 1300),
    ]
    assert rows[2][1].resolved_event_id == events[7].event_id
    assert uuid.UUID(first_id) == uuid.uuid5(
        uuid.NAMESPACE_URL, f"telemetrypulse:d1:co2:{events[2].event_id}"
    )


def test_one_batch_gives_each_alert_its_final_row_and_every_message_in_order():
    feed = Feed()
    values = [1001, 1200, 1100, 940, 1500]
    out = feed(*[ev(T0 + i * S, v) for i, v in enumerate(values)])
    assert [(m["status"], m["peak_value"]) for m in out.alert_messages] == [
        ("open", 1001),
        ("resolved", 1200),
        ("open", 1500),
    ]
    assert [(r.status, r.peak_value) for r in out.alert_rows] == [("resolved", 1200), ("open", 1500)]
    assert (out.alerts_opened, out.alerts_resolved) == (2, 1)


@pytest.mark.parametrize(
    ("sensor", "open_at", "stay", "resolve"),
    [("temperature", 30.01, 29.01, 29.0), ("humidity", 80.5, 77.1, 77.0)],
)
def test_the_rules_of_the_other_sensors(sensor, open_at, stay, resolve):
    feed = Feed()
    quiet = 30.0 if sensor == "temperature" else 80.0
    out = feed(*[ev(T0 + i * S, v, sensor=sensor) for i, v in enumerate([quiet, open_at, stay, resolve])])
    assert [m["status"] for m in out.alert_messages] == ["open", "resolved"]


def test_occupancy_never_alerts():
    assert not Feed()(ev(T0, 5000, sensor="occupancy")).alert_messages


def test_an_open_episode_survives_a_snapshot_and_resolves_after_a_load():
    feed = Feed()
    opened = feed(ev(T0, 1500))
    restored = PartitionState(0, GRACE)
    restored.load(feed.state.snapshot())
    feed.state = restored
    out = feed(ev(T0 + S, 1700), ev(T0 + 2 * S, 900))
    assert [m["status"] for m in out.alert_messages] == ["resolved"]
    assert out.alert_messages[0]["alert_id"] == opened.alert_messages[0]["alert_id"]
    assert out.alert_messages[0]["peak_value"] == 1700


# ---------------------------------------------------------------------------------------------------------------
# Fences, replays, emit=False.


def test_events_at_or_below_the_fence_are_skipped_and_change_nothing():
    feed = Feed()
    events = [ev(T0 + i * S, 1000 + i * 10) for i in range(5)]
    feed(*events[:3])
    before = stored(feed.state)
    batch = decoded(events[:3])
    replay = feed.state.apply(batch, batch.valid, batch.valid, last_offset=2)
    assert (replay.replayed, replay.accepted) == (3, 0)
    assert len(replay.raw) == len(replay.alert_messages) == 0 and replay.dims == []
    assert stored(feed.state).keys() == {PARTITION_KEY}  # nothing changed: no device record
    assert before.keys() == {b"d1", PARTITION_KEY}
    # A slice straddling the fence: only the events above it count.
    batch = decoded(events)
    mixed = feed.state.apply(batch, batch.valid, batch.valid, last_offset=4)
    assert (mixed.replayed, mixed.accepted) == (3, 2)


def test_emit_false_builds_nothing_and_leaves_the_same_state():
    events = [ev(T0 + i * S, v) for i, v in enumerate([900, 1500, 1600, 700, 1200])]
    events.append(ev(T0 + 5 * S, event_id=events[0].event_id))  # a duplicate
    events.append(ev(T0 - 1000 * S))  # too late
    emitting, silent = Feed(), Feed()
    loud = emitting(*events)
    quiet = silent(*events, emit=False)
    assert len(quiet.raw) == len(quiet.windows) == len(quiet.latest) == 0
    assert quiet.alert_messages == [] and quiet.alert_rows == [] and quiet.dims == []
    assert (quiet.accepted, quiet.duplicates, quiet.late, quiet.alerts_opened, quiet.alerts_resolved) == (
        loud.accepted,
        loud.duplicates,
        loud.late,
        loud.alerts_opened,
        loud.alerts_resolved,
    )
    assert stored(emitting.state) == stored(silent.state)
    # And both go on alike.
    follow = ev(T0 + 6 * S, 800)
    assert _same(emitting(follow), silent(follow))


def _same(a: BatchResult, b: BatchResult) -> bool:
    return (
        a.dims == b.dims
        and a.raw.tobytes() == b.raw.tobytes()
        and a.windows.tobytes() == b.windows.tobytes()
        and a.latest.tobytes() == b.latest.tobytes()
        and a.alert_messages == b.alert_messages
        and a.alert_rows == b.alert_rows
    )


def test_offsets_must_ascend():
    state = PartitionState(0, GRACE)
    batch = decoded([ev(T0), ev(T0 + S)])
    with pytest.raises(ValueError, match="ascending"):
        state.apply(batch, np.array([5, 5]), np.array([0, 0]), last_offset=5)


def test_an_empty_or_all_invalid_slice_only_moves_last_offset():
    feed = Feed()
    out = feed(None, None)
    assert (out.accepted, len(out.raw)) == (0, 0)
    assert feed.state.last_offset == 1
    assert stored(feed.state) == {PARTITION_KEY: stored_partition(1)}


def stored_partition(offset: int) -> bytes:
    state = PartitionState(0, GRACE)
    state.last_offset = offset
    return dict(state.snapshot())[PARTITION_KEY]


# ---------------------------------------------------------------------------------------------------------------
# Output rows.


def test_raw_rows_in_source_order_with_their_dims_and_only_the_dims_used():
    feed = Feed()
    first = ev(T0, device="d2", site="s9", zone="z9")
    feed(first)
    out = feed(
        ev(T0 + S, 12.5, sensor="temperature", device="d1", unit="celsius"),
        ev(T0 + S, event_id=first.event_id, device="d2", site="s9", zone="z9"),  # duplicate: leaves no row
        None,
        ev(T0 + 2 * S, 3, sensor="occupancy", device="d3", site="s3", zone="z3"),
    )
    assert out.dims == [("d1", "s1", "z1"), ("d3", "s3", "z3")]
    assert [out.dims[d][0] for d in out.raw["dim"].tolist()] == ["d1", "d3"]
    assert out.raw["unit_given"].tolist() == [True, False]
    assert out.raw["sensor"].tolist() == [SENSORS.index("temperature"), SENSORS.index("occupancy")]
    assert out.raw["ingest_us"].tolist() == [10, 40]  # the Feed's ingest time is offset * 10
    assert out.raw["event_id"][0].tobytes() == uuid.UUID(out.raw["event_id"][0].tobytes().hex()).bytes


# ---------------------------------------------------------------------------------------------------------------
# Snapshots and load.


def test_a_snapshot_holds_the_changed_devices_then_the_partition_record_and_clears_the_dirty_set():
    feed = Feed()
    feed(ev(T0, device="a"), ev(T0, device="b"), None)
    records = feed.state.snapshot()
    assert [k for k, _ in records] == [b"a", b"b", PARTITION_KEY]
    assert feed.state.snapshot_offset == 2 and record_fence(records[-1][1]) == 2
    assert record_fence(records[0][1]) == 0 and record_fence(records[1][1]) == 1
    assert [k for k, _ in feed.state.snapshot()] == [PARTITION_KEY]
    feed(ev(T0 + S, device="b"))
    assert [k for k, _ in feed.state.snapshot()] == [b"b", PARTITION_KEY]
    assert feed.state.device_count() == 2


def test_a_loaded_state_goes_on_exactly_like_the_original():
    rng = random.Random(3)
    devices = [f"dev-{i}" for i in range(6)]

    def reading(i: int) -> Event:
        sensor = rng.choice(SENSORS)
        value = rng.choice([20.0, 35.0, 85.0, 900.0, 1500.0]) if sensor != "occupancy" else 3
        return ev(T0 + i * 7 * S - rng.randint(0, 400) * S, value, sensor=sensor, device=rng.choice(devices))

    events = [reading(i) for i in range(400)]
    for i in range(0, 400, 9):
        events[i] = ev(
            events[i - 3].ts_event_us, event_id=events[i - 3].event_id, device=events[i - 3].device_id
        )
    original = Feed()
    original(*events[:200])
    copy = Feed()
    copy.state.load(original.state.snapshot())
    copy.offset = original.offset
    assert (copy.state.snapshot_offset, copy.state.last_offset) == (199, 199)
    assert copy.state.device_count() == original.state.device_count()
    for a in range(200, 400, 50):
        assert _same(original(*events[a : a + 50]), copy(*events[a : a + 50]))
    assert stored(original.state) == stored(copy.state)


def test_device_records_are_compact():
    feed = Feed()
    quiet = {"co2": 500.0, "temperature": 21.0, "humidity": 40.0, "occupancy": 3}
    events = [ev(T0 + i * 10 * S, quiet[s], sensor=s) for i in range(31) for s in SENSORS]
    feed(*events)
    value = stored(feed.state)[b"d1"]
    rec = decode_device_record(value)
    assert len(rec.id_list()) == 124  # 31 readings of 4 sensors, all within the grace
    assert len(value) < 124 * 20 + len(rec.windows) + len(rec.latest) + 64


def test_a_record_holds_only_the_ids_within_the_grace_horizon():
    feed = Feed()
    feed(*[ev(T0 + i * 100 * S) for i in range(10)])  # watermark T0 + 900 s: ids from T0 + 600 s on count
    rec = record(feed.state)
    assert sorted(rec.id_ts().tolist()) == [T0 + i * 100 * S for i in range(6, 10)]


def test_alert_row_types_match_the_changes_schema():
    out = Feed()(ev(T0, 1500))
    assert isinstance(out.alert_rows[0], AlertRow)
    assert out.alert_rows[0].opened_at == iso_utc(T0)
