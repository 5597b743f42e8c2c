"""Run-time rules and stale sensors in the per-partition state (SPEC §9), against the independent model of
tests/rules_model.py: however the stream is cut into batches, with replays, snapshots, crashes, and rule revisions
that change between snapshots. The rules' and stale sensors' edge cases follow, one test each."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from telemetrypulse import alerts
from telemetrypulse.changes import AlertRow
from telemetrypulse.models import Event, iso_utc, now_us, to_us, validate_event
from telemetrypulse.rules import RuleBook, RuleVersion
from telemetrypulse.state import PartitionState
from telemetrypulse.state_records import PARTITION_KEY, decode_device_record
from tests.rules_model import (
    GRACE_S,
    STALE_AFTER_S,
    ExpectedAlerts,
    build_rules_dataset,
    expected_alerts,
)
from tests.unit.test_state import AFTER_BATCH, Folded, _crash, decoded

S = 1_000_000
T0 = to_us(datetime(2025, 1, 6, 8, 0, tzinfo=UTC))
GRACE = 300
RECORD_START = to_us(datetime(2026, 1, 1, tzinfo=UTC))


def book_of(versions: list[dict]) -> RuleBook:
    """The rule versions as the rules topic would carry them: offset i is revision i + 1."""
    book = RuleBook()
    for offset, fields in enumerate(versions):
        book.add(offset, RuleVersion(version_id=str(uuid.uuid4()), **fields))
    return book


def assert_alerts_match(folded: Folded, expected: ExpectedAlerts) -> None:
    """Rows (as PostgreSQL keeps them) and messages (as the alerts topic has them) are the model's."""
    assert folded.alerts.keys() == expected.alerts.keys()
    for alert_id, want in expected.alerts.items():
        row = folded.alerts[alert_id]
        got = {
            "status": row.status, "rule": row.rule, "alert_type": row.alert_type, "rule_id": row.rule_id,
            "severity": row.severity, "device_id": row.device_id, "site_id": row.site_id, "zone_id": row.zone_id,
            "sensor_type": row.sensor_type, "threshold": row.threshold, "value": row.value,
            "peak_value": row.peak_value, "opened_at": row.opened_at, "resolved_at": row.resolved_at,
            "event_id": row.event_id,
        }  # fmt: skip
        wanted = dict(want, opened_at=iso_utc(want["opened_at"]))
        wanted["resolved_at"] = None if want["resolved_at"] is None else iso_utc(want["resolved_at"])
        wanted.pop("alert_id")
        assert got == wanted, alert_id
    assert set(folded.messages) == expected.statuses()
    # Each alert's messages in order: its open before its resolve.
    for alert_id, status in folded.messages:
        if status == "resolved":
            assert (alert_id, "open") in folded.messages


class RulesPartition:
    """The dataset as one source partition, driven like the worker drives the state (tests/unit/test_state.py's
    Partition, with rules): fetched slices, snapshots into a table, crashes that reload the table."""

    def __init__(self, dataset, book: RuleBook, revision: int, stale_after_s: int = STALE_AFTER_S) -> None:
        now = now_us()
        self.events: list[Event | None] = []
        for _, value, _ in dataset.messages:
            result = validate_event(value, now)
            self.events.append(result if isinstance(result, Event) else None)
        self.book = book
        self.stale_after_s = stale_after_s
        self.state = PartitionState(0, GRACE_S, rules=book.at(revision), stale_after_s=stale_after_s)
        self.table: dict[bytes, bytes] = {}
        self.folded = Folded()
        # Kafka record times: the data is replayed years after its event times (not live).
        self.record_start = RECORD_START
        # As the worker does for a partition it takes with no stored state: record the revision it starts with.
        self.store(self.state.snapshot())

    def __len__(self) -> int:
        return len(self.events)

    def apply(self, start: int, end: int, *, emit: bool = True):
        batch = decoded(self.events[start:end])
        offsets = batch.valid + start
        return self.state.apply(batch, offsets, offsets + self.record_start, last_offset=end - 1, emit=emit)

    def run(self, start: int, end: int, cut: int, *, emit: bool = True, count: bool = True):
        results = []
        for a in range(start, end, cut):
            result = self.apply(a, min(end, a + cut), emit=emit)
            self.folded.add(result, count=count)
            results.append(result)
        return results

    def store(self, records) -> None:
        self.table.update(records)

    def restart(self) -> int:
        self.state = PartitionState(0, GRACE_S, stale_after_s=self.stale_after_s)
        self.state.load(self.table.items(), rules_at=self.book.at)
        return self.state.snapshot_offset + 1


@pytest.fixture(scope="module")
def rules_dataset():
    return build_rules_dataset()


@pytest.fixture(scope="module")
def expected_one_partition(rules_dataset):
    return expected_alerts(rules_dataset, partitions=False)


def test_the_dataset_covers_every_case(rules_dataset, expected_one_partition):
    by_rule = {}
    for alert in expected_one_partition.alerts.values():
        by_rule.setdefault(alert["rule_id"] or alert["alert_type"], []).append(alert)
    assert {
        "lab-co2",
        "lab-site-co2",
        "cold-temp-low",
        "office-humidity",
        "dev-temp",
        "default-co2-high",
    } <= set(by_rule)
    assert "future-co2" not in by_rule
    low = by_rule["cold-temp-low"]
    assert {a["alert_type"] for a in low} == {"TEMPERATURE_LOW"} and {a["status"] for a in low} == {
        "resolved"
    }
    assert len(low) == 2  # the 60 s dip (shorter than for_s) opened nothing
    stale = by_rule["SENSOR_STALE"]
    assert {a["status"] for a in stale} == {"open", "resolved"}
    # The exact gap of STALE_AFTER_S (lab.z1.d2 humidity) raised nothing.
    assert not [a for a in stale if (a["device_id"], a["sensor_type"]) == ("lab.z1.d2", "humidity")]
    partitioned = expected_alerts(rules_dataset)
    # Alone in its partition, the device that went quiet is never stale: nothing moves its watermark.
    assert any(a["device_id"] == "hall.z9.d1" for a in stale)
    assert not any(
        a["device_id"] == "hall.z9.d1" and a["rule"] == "stale" for a in partitioned.alerts.values()
    )


@pytest.mark.parametrize("cut", [1, 7, 100, 4000])
def test_rules_and_stale_sensors_fold_to_the_model(rules_dataset, expected_one_partition, cut):
    book = book_of(rules_dataset.versions)
    partition = RulesPartition(rules_dataset, book, book.revision)
    partition.run(0, len(partition), cut)
    assert_alerts_match(partition.folded, expected_one_partition)


@pytest.mark.parametrize("cut", [1, 7, 100, 4000])
def test_replays_snapshots_and_crashes_give_the_model_and_the_same_state(
    rules_dataset, expected_one_partition, cut
):
    book = book_of(rules_dataset.versions)
    rng = random.Random(cut)
    partition = RulesPartition(rules_dataset, book, book.revision)
    end = len(partition)
    for k, start in enumerate(range(0, end, cut)):
        position = min(end, start + cut)
        partition.run(start, position, cut)
        action = AFTER_BATCH[k % len(AFTER_BATCH)] if position < end else "crash"
        if action == "replay":
            since = rng.randrange(0, position)
            results = partition.run(since, position, max(rng.choice([1, 13, 500]), (position - since) // 40))
            assert all(not r.alert_messages and not r.alert_rows for r in results)
        elif action == "snapshot":
            partition.store(partition.state.snapshot())
        elif action == "partial snapshot":
            records = partition.state.snapshot()
            partition.store(rng.sample(records[:-1], rng.randrange(0, len(records))))
            _crash(partition, position, rng)
        elif action == "crash":
            _crash(partition, position, rng)
    assert_alerts_match(partition.folded, expected_one_partition)

    straight = RulesPartition(rules_dataset, book, book.revision)
    straight.run(0, end, end)
    straight.store(straight.state.snapshot())
    partition.store(partition.state.snapshot())
    assert partition.table == straight.table


def test_a_rule_revision_applies_from_the_snapshot_it_is_adopted_at_even_across_a_crash(rules_dataset):
    """The worker learns the rules while running: its partition switches from the defaults (revision 0) to every
    version at a snapshot; a crash later replays from that snapshot with the same revision. The alerts are the
    model's with that switch point, not the model's with every rule known from the start."""
    book = book_of(rules_dataset.versions)
    partition = RulesPartition(rules_dataset, book, 0)
    switch = 1500
    partition.run(0, switch, 200)
    partition.store(partition.state.snapshot(next_rules=book.at()))
    assert partition.state.rules_revision == book.revision
    partition.run(switch, 2300, 200)
    _crash(partition, 2300, random.Random(2))  # replays from the snapshot, under the revision it recorded
    assert partition.state.rules_revision == book.revision
    partition.run(2300, len(partition), 200)
    expected = expected_alerts(rules_dataset, partitions=False, revisions_from={0: 0, switch: book.revision})
    assert_alerts_match(partition.folded, expected)
    assert expected.alerts.keys() != expected_alerts(rules_dataset, partitions=False).alerts.keys()


def test_per_partition_watermarks_match_the_model(rules_dataset):
    """Each device in its own partition state: stale sensors are judged by their own partition's watermark."""
    book = book_of(rules_dataset.versions)
    folded = Folded()
    for p in range(4):
        messages = [m for m in rules_dataset.messages if rules_dataset.partition_of(m[2]["device_id"]) == p]
        subset = type(rules_dataset)(messages, rules_dataset.versions, rules_dataset.devices)
        partition = RulesPartition(subset, book, book.revision)
        partition.run(0, len(partition), 333)
        for key, value in partition.folded.alerts.items():
            folded.alerts[key] = value
        folded.messages.update(partition.folded.messages)
    assert_alerts_match(folded, expected_alerts(rules_dataset))


# ---------------------------------------------------------------------------------------------------------------
# Edge cases, one at a time.


def ev(
    ts_us: int,
    value: float,
    sensor: str = "temperature",
    device: str = "d1",
    site: str = "s1",
    zone: str = "z1",
):
    return Event(str(uuid.uuid4()), device, site, zone, sensor, value, ts_us, None)


class Feed:
    """One source partition fed slice by slice; record times follow the event times (a live partition) unless
    `historic`."""

    def __init__(self, versions: list[dict] = (), stale_after_s: int = 0, historic: bool = True) -> None:
        self.book = book_of(list(versions))
        self.state = PartitionState(0, GRACE, rules=self.book.at(), stale_after_s=stale_after_s)
        self.offset = 0
        self.historic = historic

    def __call__(self, *events: Event, record_us: list[int] | None = None):
        batch = decoded(list(events))
        offsets = batch.valid + self.offset
        self.offset += len(events)
        if record_us is None:
            record_us = [now_us() if self.historic else e.ts_event_us + 50_000 for e in events]
        records = [record_us[i] for i in batch.valid.tolist()]
        return self.state.apply(batch, offsets, records, last_offset=self.offset - 1)


def rule(**fields) -> dict:
    base = dict(rule_id="r1", sensor_type="temperature", direction="above", open_at=25, resolve_at=24)
    return base | fields


def statuses(results) -> list[tuple[str, str, float]]:
    return [(m["status"], m["alert_type"], m["value"]) for r in results for m in r.alert_messages]


def test_a_below_rule_opens_under_and_resolves_at_or_above_with_the_lowest_peak():
    feed = Feed([rule(rule_id="cold", direction="below", open_at=2, resolve_at=3, severity="critical")])
    results = [feed(ev(T0 + i * S, v)) for i, v in enumerate([4, 1.9, 0.5, 2.9, 3.0])]
    messages = [m for r in results for m in r.alert_messages]
    assert [m["status"] for m in messages] == ["open", "resolved"]
    opened, resolved = messages
    assert (opened["alert_type"], opened["rule_id"], opened["severity"], opened["threshold"]) == (
        "TEMPERATURE_LOW", "cold", "critical", 2.0,
    )  # fmt: skip
    assert (opened["value"], opened["peak_value"], resolved["peak_value"]) == (1.9, 1.9, 0.5)
    assert resolved["resolved_at"] == iso_utc(T0 + 4 * S)
    assert opened["alert_id"] == alerts.alert_id("d1", "temperature", messages[0]["event_id"])


def test_for_s_shorter_opens_nothing_and_a_lasting_one_opens_with_its_first_reading():
    feed = Feed([rule(for_s=60)])
    short = [feed(ev(T0 + i * 30 * S, v)) for i, v in enumerate([26, 27, 20])]  # 30 s over, then under
    assert statuses(short) == []
    first = ev(T0 + 200 * S, 26)
    lasting = [feed(first), feed(ev(T0 + 230 * S, 28)), feed(ev(T0 + 259 * S, 27))]
    assert statuses(lasting) == []  # 59 s: still pending
    opened = feed(ev(T0 + 260 * S, 26.5))  # exactly for_s after the first violating reading
    (message,) = opened.alert_messages
    assert (message["event_id"], message["value"], message["opened_at"]) == (
        first.event_id,
        26,
        iso_utc(first.ts_event_us),
    )
    assert message["peak_value"] == 28 and message["alert_id"] == alerts.alert_id(
        "d1", "temperature", first.event_id
    )
    assert [r.status for r in opened.alert_rows] == ["open"]


def test_a_reading_back_under_resets_the_pending_period():
    feed = Feed([rule(for_s=60)])
    out = [feed(ev(T0 + t * S, v)) for t, v in [(0, 26), (40, 24.5), (50, 26), (100, 26), (110, 26)]]
    (message,) = [m for r in out for m in r.alert_messages]
    assert message["opened_at"] == iso_utc(
        T0 + 50 * S
    )  # the pending period restarted at 50 s, opened at 110 s


def test_most_specific_scope_wins_and_a_tie_goes_to_the_later_version():
    versions = [
        rule(rule_id="everywhere", open_at=20, resolve_at=19),
        rule(rule_id="site", open_at=21, resolve_at=20, site_id="s1"),
        rule(rule_id="zone", open_at=22, resolve_at=21, site_id="s1", zone_id="z1"),
        rule(rule_id="zone-2", open_at=23, resolve_at=22, site_id="s1", zone_id="z1"),
        rule(rule_id="device", open_at=24, resolve_at=23, device_id="d1"),
    ]
    feed = Feed(versions)
    out = feed(
        ev(T0, 24.5, device="d1"),
        ev(T0, 23.5, device="d2"),
        ev(T0, 21.5, device="d3", zone="z2"),
        ev(T0, 20.5, device="d4", site="s2"),
        ev(T0, 19.5, device="d5", site="s2"),
    )
    assert [(m["device_id"], m["rule_id"]) for m in out.alert_messages] == [
        ("d1", "device"),
        ("d2", "zone-2"),
        ("d3", "site"),
        ("d4", "everywhere"),
    ]


def test_versions_apply_by_event_time_and_a_later_version_may_take_effect_earlier():
    versions = [
        rule(open_at=25, resolve_at=24),
        rule(open_at=30, resolve_at=29, effective_from=iso_utc(T0 + 100 * S)),
        rule(open_at=28, resolve_at=27, effective_from=iso_utc(T0 + 50 * S)),  # written last: wins from 50 s
    ]
    feed = Feed(versions)
    out = feed(
        ev(T0 + 10 * S, 26, device="a"), ev(T0 + 60 * S, 29, device="b"), ev(T0 + 200 * S, 28.5, device="c")
    )
    assert [(m["device_id"], m["threshold"]) for m in out.alert_messages] == [
        ("a", 25.0),
        ("b", 28.0),
        ("c", 28.0),
    ]


def test_a_rule_disabled_while_open_resolves_at_the_next_reading_or_by_the_rule_that_applies_then():
    versions = [
        rule(rule_id="low", direction="below", open_at=2, resolve_at=3),
        rule(rule_id="low", direction="below", open_at=2, resolve_at=3, enabled=False,
             effective_from=iso_utc(T0 + 100 * S)),
        rule(rule_id="co2", sensor_type="co2", open_at=800, resolve_at=700),
        rule(rule_id="co2", sensor_type="co2", open_at=800, resolve_at=700, enabled=False,
             effective_from=iso_utc(T0 + 100 * S)),
    ]  # fmt: skip
    feed = Feed(versions)
    feed(ev(T0, 1), ev(T0, 900, sensor="co2"))
    still_open = feed(ev(T0 + 99 * S, 0.5), ev(T0 + 99 * S, 850, sensor="co2"))
    assert still_open.alert_messages == []
    after = feed(
        ev(T0 + 100 * S, 0.4), ev(T0 + 101 * S, 960, sensor="co2"), ev(T0 + 102 * S, 950, sensor="co2")
    )
    # No rule for temperature below: the next reading resolves it. co2: the default (1000 / 950) applies now.
    assert [(m["sensor_type"], m["status"], m["resolved_at"]) for m in after.alert_messages] == [
        ("temperature", "resolved", iso_utc(T0 + 100 * S)),
        ("co2", "resolved", iso_utc(T0 + 102 * S)),
    ]


def test_with_the_default_rules_messages_carry_the_default_rule_and_warning():
    out = Feed()(ev(T0, 31), ev(T0, 81, sensor="humidity"), ev(T0, 1001, sensor="co2"))
    assert [(m["rule_id"], m["severity"], m["alert_type"]) for m in out.alert_messages] == [
        ("default-temperature-high", "warning", "TEMPERATURE_HIGH"),
        ("default-humidity-high", "warning", "HUMIDITY_HIGH"),
        ("default-co2-high", "warning", "CO2_HIGH"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Stale sensors.


def test_stale_exactly_at_the_boundary_is_not_stale_one_microsecond_more_is():
    feed = Feed(stale_after_s=600)
    last = ev(T0, 21, sensor="humidity", device="quiet")
    feed(last)
    assert feed(ev(T0 + 600 * S, 20, device="busy")).alert_messages == []
    out = feed(ev(T0 + 600 * S + 1, 20, device="busy"))
    (message,) = out.alert_messages
    assert message == {
        "alert_id": alerts.stale_alert_id("quiet", "humidity", last.event_id),
        "status": "open",
        "rule": "stale",
        "alert_type": "SENSOR_STALE",
        "device_id": "quiet",
        "site_id": "s1",
        "zone_id": "z1",
        "sensor_type": "humidity",
        "threshold": 600.0,
        "value": 21,
        "peak_value": 21,
        "opened_at": iso_utc(T0 + 600 * S),
        "resolved_at": None,
        "event_id": last.event_id,
        "rule_id": None,
        "severity": "warning",
    }
    back = ev(T0 + 700 * S, 22, sensor="humidity", device="quiet")
    (resolved,) = feed(back).alert_messages
    assert (resolved["status"], resolved["resolved_at"], resolved["resolved_event_id"]) == (
        "resolved", iso_utc(T0 + 700 * S), back.event_id,
    )  # fmt: skip


def test_a_stale_episode_is_raised_once_per_latest_reading():
    feed = Feed(stale_after_s=600)
    last = ev(T0 + 100 * S, 21, device="quiet")
    feed(last)
    feed(ev(T0 + 800 * S, 20, device="busy"))  # stale
    older = feed(
        ev(T0 + 50 * S, 19, device="quiet")
    )  # an older reading (within grace of its device): resolves it
    assert [m["status"] for m in older.alert_messages] == ["resolved"]
    # The latest value is still `last`: not raised again, however far the watermark goes.
    assert feed(ev(T0 + 5000 * S, 20, device="busy")).alert_messages == []


def test_within_one_batch_a_sensor_can_turn_stale_and_come_back():
    feed = Feed(stale_after_s=600)
    out = feed(
        ev(T0, 20, device="a"),
        ev(T0 + 601 * S, 20, device="b"),
        ev(T0 + 602 * S, 21, device="a"),
        ev(T0 + 1300 * S, 20, device="b"),
    )
    assert [(m["device_id"], m["status"]) for m in out.alert_messages] == [
        ("a", "open"), ("a", "resolved"), ("a", "open"),
    ]  # fmt: skip
    rows = {r.alert_id: r.status for r in out.alert_rows}
    assert sorted(rows.values()) == ["open", "resolved"]


def test_a_live_partition_gone_silent_turns_stale_by_record_time_and_by_the_clock():
    first = [ev(T0, 20, device="a"), ev(T0, 20, device="b")]
    feed = Feed(stale_after_s=600, historic=False)
    feed(*first)
    assert feed.state.stale_by_clock(T0 + 50_000 + 600 * S).alert_messages == []
    by_clock = feed.state.stale_by_clock(T0 + 50_000 + 601 * S)
    assert sorted(m["device_id"] for m in by_clock.alert_messages) == ["a", "b"]
    assert {m["opened_at"] for m in by_clock.alert_messages} == {iso_utc(T0 + 600 * S)}
    # The data's own record times say the same when the partition speaks again (a restart that lost the clock's
    # episodes raises them identically before the resuming reading resolves them).
    replay = Feed(stale_after_s=600, historic=False)
    replay(*first)
    resumed = replay(ev(T0 + 700 * S, 21, device="a"), record_us=[T0 + 50_000 + 700 * S])
    assert [(m["device_id"], m["status"]) for m in resumed.alert_messages] == [
        ("a", "open"), ("b", "open"), ("a", "resolved"),
    ]  # fmt: skip
    assert {m["alert_id"] for m in resumed.alert_messages} == {m["alert_id"] for m in by_clock.alert_messages}


def test_historic_data_is_never_advanced_by_the_clock_or_by_record_gaps():
    feed = Feed(stale_after_s=600, historic=True)
    feed(ev(T0, 20, device="a"), ev(T0, 20, device="b"))
    assert feed.state.stale_by_clock(now_us() + 10**12).alert_messages == []
    later = feed(ev(T0 + 10 * S, 21, device="a"), record_us=[now_us() + 10**12])
    assert later.alert_messages == []


def test_stale_is_off_at_zero():
    feed = Feed(stale_after_s=0)
    feed(ev(T0, 20, device="a"))
    assert feed(ev(T0 + 10**6 * S, 20, device="b")).alert_messages == []


# ---------------------------------------------------------------------------------------------------------------
# Stored state.


def test_pending_below_and_stale_episodes_survive_a_snapshot_and_a_load():
    versions = [rule(rule_id="low", direction="below", open_at=2, resolve_at=3, for_s=60)]
    feed = Feed(versions, stale_after_s=600)
    feed(ev(T0, 1, device="p"), ev(T0, 20, sensor="humidity", device="q"))
    feed(ev(T0 + 700 * S, 1.5, device="p"))  # p: pending → open (700 s ≥ 60 s); q humidity: stale
    feed(ev(T0 + 710 * S, 1, device="r"))  # r: pending
    records = dict(feed.state.snapshot())
    kinds = {
        name: sorted(e.get("status") + ":" + e.get("rule", e.get("direction", "")) for e in
                     decode_device_record(records[name.encode()]).episodes)
        for name in ("p", "q", "r")
    }  # fmt: skip
    assert kinds == {"p": ["open:threshold"], "q": ["open:stale"], "r": ["pending:below"]}
    copy = PartitionState(0, GRACE, stale_after_s=600)
    copy.load(records.items(), rules_at=feed.book.at)
    assert dict(copy.snapshot()) == {PARTITION_KEY: records[PARTITION_KEY]}
    feed.state = copy
    out = feed(
        ev(T0 + 771 * S, 1.2, device="r"),
        ev(T0 + 772 * S, 5, device="p"),
        ev(T0 + 773 * S, 30, "humidity", "q"),
    )
    assert [(m["device_id"], m["status"], m["rule"]) for m in out.alert_messages] == [
        ("r", "open", "threshold"), ("p", "resolved", "threshold"), ("q", "resolved", "stale"),
    ]  # fmt: skip


def test_a_state_stored_before_run_time_rules_loads_with_its_open_episode():
    """A format 1 device record (before this change): open `_HIGH` episodes without rule_id and severity."""
    old_episode = {
        "alert_id": alerts.alert_id("d1", "co2", "11111111-1111-4111-8111-111111111111"),
        "status": "open", "rule": "threshold", "alert_type": "CO2_HIGH", "device_id": "d1", "site_id": "s1",
        "zone_id": "z1", "sensor_type": "co2", "threshold": 1000.0, "value": 1200.0, "peak_value": 1200.0,
        "opened_at": iso_utc(T0), "resolved_at": None, "event_id": "11111111-1111-4111-8111-111111111111",
    }  # fmt: skip
    encoder = msgspec.msgpack.Encoder()
    device = encoder.encode([1, 0, T0, b"", b"", b"", b"", [old_episode]])
    partition = encoder.encode([1, 0])
    state = PartitionState(0, GRACE, stale_after_s=600)
    state.load([(b"d1", device), (PARTITION_KEY, partition)])
    batch = decoded([ev(T0 + S, 900, sensor="co2")])
    out = state.apply(batch, batch.valid + 1, [now_us()], last_offset=1)
    (message,) = out.alert_messages
    assert (message["alert_id"], message["status"]) == (old_episode["alert_id"], "resolved")
    assert AlertRow(**message).severity == "warning"
