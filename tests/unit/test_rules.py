"""Rule versions (telemetrypulse.rules): what is valid (every 422 of the API comes from here), how the rules topic's
messages become revisions, and which rule applies."""

from __future__ import annotations

import pytest

from telemetrypulse.rules import (
    DEFAULT_VERSIONS,
    RuleBook,
    RuleError,
    RuleVersion,
    decode_version,
    encode_version,
    problems_of,
)

T = 1_717_200_000_000_000  # 2024-06-01T00:00:00Z


def version(**fields) -> RuleVersion:
    base = dict(
        version_id="v", rule_id="r", sensor_type="co2", direction="above", open_at=1000, resolve_at=900
    )
    return RuleVersion(**(base | fields))


def fields_wrong(**fields) -> set[str]:
    return {field for field, _ in problems_of(version(**fields))}


def test_a_valid_version_has_no_problems():
    assert problems_of(version()) == []
    assert problems_of(version(direction="below", open_at=2, resolve_at=3, site_id="s", zone_id="z")) == []
    assert problems_of(version(device_id="d-1", for_s=0, severity="critical")) == []
    assert problems_of(version(open_at=5, resolve_at=5)) == []  # resolving at the open level is allowed


@pytest.mark.parametrize(
    ("fields", "wrong"),
    [
        ({"resolve_at": 1001}, {"resolve_at"}),  # above: resolve_at must be ≤ open_at
        ({"direction": "below", "open_at": 2, "resolve_at": 1}, {"resolve_at"}),  # below: ≥ open_at
        ({"direction": "sideways"}, {"direction"}),
        ({"sensor_type": "pressure"}, {"sensor_type"}),
        ({"zone_id": "z"}, {"zone_id"}),  # a zone without its site
        ({"device_id": "d", "site_id": "s"}, {"device_id"}),  # a device scope names the device alone
        ({"device_id": "d", "site_id": "s", "zone_id": "z"}, {"device_id"}),
        ({"site_id": "bad site"}, {"site_id"}),
        ({"for_s": -1}, {"for_s"}),
        ({"for_s": 10**9}, {"for_s"}),
        ({"severity": "fatal"}, {"severity"}),
        ({"effective_from": "2024-06-01T00:00:00"}, {"effective_from"}),  # no offset
        ({"effective_from": "yesterday"}, {"effective_from"}),
        ({"effective_from": "1969-12-31T23:59:59Z"}, {"effective_from"}),
        ({"rule_id": "no/slash"}, {"rule_id"}),
        ({"open_at": float("inf")}, {"open_at"}),
        ({"open_at": float("nan")}, {"open_at"}),
    ],
)
def test_every_invalid_rule_is_named(fields, wrong):
    assert fields_wrong(**fields) == wrong


def test_topic_messages_round_trip_and_bad_ones_are_refused():
    v = version(site_id="s", for_s=30.5, effective_from="2024-06-01T00:00:00+02:00")
    assert decode_version(encode_version(v)) == v
    assert v.key() == b"r/v"
    for bad in (None, b"{", b"[]", b'{"rule_id": "r"}', encode_version(version(resolve_at=2000))):
        with pytest.raises(RuleError):
            decode_version(bad)


def test_the_defaults_are_revision_zero_and_match_spec_5():
    rules = RuleBook().at(0)
    got = {
        (r.rule_id, r.sensor_type, r.open_at, r.resolve_at, r.severity, r.effective_us) for r in rules.rules
    }
    assert got == {
        ("default-co2-high", "co2", 1000.0, 950.0, "warning", 0),
        ("default-temperature-high", "temperature", 30.0, 29.0, "warning", 0),
        ("default-humidity-high", "humidity", 80.0, 77.0, "warning", 0),
    }
    assert len(DEFAULT_VERSIONS) == 3 and rules.revision == 0


def test_revisions_follow_offsets_skipping_bad_messages_and_repeats():
    book = RuleBook()
    assert book.add(0, version(version_id="a", open_at=500, resolve_at=400))
    assert not book.add(1, None)  # undecodable: still revision 2
    assert not book.add(2, version(version_id="a", open_at=600, resolve_at=400))  # a repeated version id
    assert not book.add(2, version(version_id="b"))  # an offset seen already
    assert book.revision == 3
    assert book.add(3, version(version_id="b", open_at=700, resolve_at=600))
    assert [r.revision for r in book.at().rules if r.rule_id == "r"] == [1, 4]
    assert book.at(2).applicable("d", "s", "z", 0, True, T).open_at == 500
    assert book.at(4).applicable("d", "s", "z", 0, True, T).open_at == 700
    with pytest.raises(ValueError):
        book.at(5)


def test_a_later_version_of_another_sensor_takes_the_rule_away_from_the_first():
    book = RuleBook()
    book.add(0, version(version_id="1", rule_id="x", open_at=10, resolve_at=9))
    book.add(1, version(version_id="2", rule_id="x", sensor_type="humidity", open_at=10, resolve_at=9))
    rules = book.at()
    assert rules.applicable("d", "s", "z", 0, True, T).rule_id == "default-co2-high"
    assert rules.applicable("d", "s", "z", 2, True, T).rule_id == "x"


def test_bounds_cover_every_enabled_version_only():
    book = RuleBook()
    book.add(0, version(version_id="1", rule_id="lo", direction="below", open_at=300, resolve_at=310))
    book.add(1, version(version_id="2", rule_id="hi", open_at=700, resolve_at=600, enabled=False))
    rules = book.at()
    assert rules.open_above_bound.tolist() == [1000.0, 30.0, 80.0, float("inf")]
    assert rules.open_below_bound.tolist()[0] == 300.0
