"""Alert rules as versioned data (SPEC §9): what a rule version is, when it is valid, and which rule applies to a
reading.

A rule version is immutable. Versions reach the workers as messages of the rules topic (`<APP_ID>-rules`, one
partition, so one total order every worker shares); the n-th message of that topic is *revision* n (its offset + 1).
The three default rules of SPEC §5 are revision 0: built in here, so a worker knows them with an empty topic, and
written to PostgreSQL by migration 0004. `RuleBook` collects the versions in revision order; `RuleBook.at(r)` is
the `RuleSet` of every version up to revision r, which answers "which rule applies to this reading?":

  among the versions with effective_from ≤ the reading's ts_event, the latest version (highest revision) of each
  rule; of those, the enabled ones whose sensor, direction and scope match; of those, the most specific scope
  (device > zone > site > everywhere); a tie goes to the version written last (highest revision).

Pure logic: no Kafka, no database.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import msgspec
import numpy as np

from telemetrypulse.changes import SENSOR_CODES, SENSORS
from telemetrypulse.models import iso_utc, to_us

DIRECTIONS = ("above", "below")
SEVERITIES = ("info", "warning", "critical")
DEFAULT_SEVERITY = "warning"
RULE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
SCOPE_ID_PATTERN = RULE_ID_PATTERN  # SPEC §3 identifiers
MAX_FOR_S = 30 * 86400  # a pending period longer than a month is a typo
_ID = re.compile(RULE_ID_PATTERN)
# effective_from is an event time: kept where every layer can represent it (models.parse of ts_event, PostgreSQL).
EARLIEST_US = 0  # 1970-01-01T00:00:00Z
LATEST_US = to_us(datetime.fromisoformat("2999-12-31T00:00:00+00:00"))
DEFAULT_EFFECTIVE_FROM = "1970-01-01T00:00:00Z"


class RuleVersion(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One version of one rule, as the API writes it to the rules topic (JSON) and PostgreSQL keeps it.

    `version_id` identifies the version (a UUID; `{rule_id}:default` for the defaults): the topic is compacted by
    key = `{rule_id}/{version_id}`, unique per version, so compaction never removes one, and a version read twice
    (a producer retry) counts once.
    """

    version_id: str
    rule_id: str
    sensor_type: str
    direction: str
    open_at: float
    resolve_at: float
    site_id: str | None = None
    zone_id: str | None = None
    device_id: str | None = None
    for_s: float = 0.0
    severity: str = DEFAULT_SEVERITY
    enabled: bool = True
    effective_from: str = DEFAULT_EFFECTIVE_FROM  # ISO-8601 with offset
    created_at: str | None = None
    created_by: str | None = None  # the API key's name

    def key(self) -> bytes:
        return f"{self.rule_id}/{self.version_id}".encode()


_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(RuleVersion)


def encode_version(version: RuleVersion) -> bytes:
    return _json_encoder.encode(version)


class RuleError(ValueError):
    """A rule version that cannot be used; `problems` are (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


def parse_effective_from(text: str) -> int:
    """µs since the epoch of an ISO-8601 time with an offset, within 1970-01-01 .. 2999-12-31 (ValueError)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("has no UTC offset: add Z or ±hh:mm")
    us = to_us(moment)
    if not EARLIEST_US <= us <= LATEST_US:
        raise ValueError("out of range (1970-01-01 .. 2999-12-31)")
    return us


def problems_of(version: RuleVersion) -> list[tuple[str, str]]:
    """Everything wrong with a rule version (SPEC §9); empty if it is valid. The API answers these with 422; the
    worker skips a version on the topic that has any (it never came from the API)."""
    out: list[tuple[str, str]] = []
    if not _ID.fullmatch(version.rule_id):
        out.append(("rule_id", "must be 1-64 characters of [A-Za-z0-9._-]"))
    if version.sensor_type not in SENSOR_CODES:
        out.append(
            ("sensor_type", f"unknown sensor {version.sensor_type!r:.40} (one of {', '.join(SENSORS)})")
        )
    if version.direction not in DIRECTIONS:
        out.append(("direction", "must be 'above' or 'below'"))
    for name in ("open_at", "resolve_at", "for_s"):
        value = getattr(version, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            out.append((name, "must be a finite number"))
    if not out:
        if version.direction == "above" and version.resolve_at > version.open_at:
            out.append(
                ("resolve_at", "an 'above' rule resolves at or below its open_at: resolve_at ≤ open_at")
            )
        if version.direction == "below" and version.resolve_at < version.open_at:
            out.append(
                ("resolve_at", "a 'below' rule resolves at or above its open_at: resolve_at ≥ open_at")
            )
        if version.for_s < 0 or version.for_s > MAX_FOR_S:
            out.append(("for_s", f"must be between 0 and {MAX_FOR_S} seconds"))
    for name in ("site_id", "zone_id", "device_id"):
        value = getattr(version, name)
        if value is not None and not _ID.fullmatch(value):
            out.append((name, "must be 1-64 characters of [A-Za-z0-9._-]"))
    if version.zone_id is not None and version.site_id is None:
        out.append(("zone_id", "a zone scope needs its site_id (zone ids are only unique within a site)"))
    if version.device_id is not None and (version.site_id is not None or version.zone_id is not None):
        out.append(("device_id", "a device scope names the device alone (no site_id or zone_id)"))
    if version.severity not in SEVERITIES:
        out.append(("severity", f"must be one of {', '.join(SEVERITIES)}"))
    try:
        parse_effective_from(version.effective_from)
    except (TypeError, ValueError) as e:
        out.append(("effective_from", f"not an ISO-8601 time: {e}"))
    return out


def decode_version(value: bytes | None) -> RuleVersion:
    """A rules-topic message's value; RuleError if it is not a valid rule version."""
    if value is None:
        raise RuleError([("value", "empty message")])
    try:
        version = _json_decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise RuleError([("value", f"not a rule version: {e}")]) from None
    problems = problems_of(version)
    if problems:
        raise RuleError(problems)
    return version


def alert_type_of(sensor_type: str, direction: str) -> str:
    return f"{sensor_type.upper()}_{'HIGH' if direction == 'above' else 'LOW'}"


# ---------------------------------------------------------------------------------------------------------------
# The defaults (SPEC §5 as rules of SPEC §9).


def _default(rule_id: str, sensor_type: str, open_at: float, resolve_at: float) -> RuleVersion:
    return RuleVersion(
        version_id=f"{rule_id}:default",
        rule_id=rule_id,
        sensor_type=sensor_type,
        direction="above",
        open_at=open_at,
        resolve_at=resolve_at,
        effective_from=DEFAULT_EFFECTIVE_FROM,
        created_at=DEFAULT_EFFECTIVE_FROM,
        created_by="migration 0004",
    )


DEFAULT_VERSIONS = (
    _default("default-co2-high", "co2", 1000.0, 950.0),
    _default("default-temperature-high", "temperature", 30.0, 29.0),
    _default("default-humidity-high", "humidity", 80.0, 77.0),
)


# ---------------------------------------------------------------------------------------------------------------
# Compiled versions and the rule that applies.


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule version as the engine uses it (numbers in µs, the revision it came with)."""

    rule_id: str
    revision: int
    sensor: int  # changes.SENSORS code
    sensor_type: str
    above: bool
    open_at: float
    resolve_at: float
    site_id: str | None
    zone_id: str | None
    device_id: str | None
    for_us: int
    severity: str
    enabled: bool
    effective_us: int
    alert_type: str

    @property
    def direction(self) -> str:
        return "above" if self.above else "below"

    @property
    def specificity(self) -> int:
        """device 3 > zone 2 > site 1 > everywhere 0."""
        if self.device_id is not None:
            return 3
        if self.zone_id is not None:
            return 2
        return 1 if self.site_id is not None else 0

    def matches(self, device_id: str, site_id: str, zone_id: str) -> bool:
        if self.device_id is not None:
            return self.device_id == device_id
        if self.site_id is not None and self.site_id != site_id:
            return False
        return self.zone_id is None or self.zone_id == zone_id

    def violates(self, value: float) -> bool:
        return value > self.open_at if self.above else value < self.open_at

    def resolves(self, value: float) -> bool:
        return value <= self.resolve_at if self.above else value >= self.resolve_at


def compile_version(version: RuleVersion, revision: int) -> Rule:
    return Rule(
        rule_id=version.rule_id,
        revision=revision,
        sensor=SENSOR_CODES[version.sensor_type],
        sensor_type=version.sensor_type,
        above=version.direction == "above",
        open_at=float(version.open_at),
        resolve_at=float(version.resolve_at),
        site_id=version.site_id,
        zone_id=version.zone_id,
        device_id=version.device_id,
        for_us=round(version.for_s * 1_000_000),
        severity=version.severity,
        enabled=version.enabled,
        effective_us=parse_effective_from(version.effective_from),
        alert_type=alert_type_of(version.sensor_type, version.direction),
    )


class RuleSet:
    """Every rule version up to one revision: which rule applies to a reading, and cheap bounds for the batch
    engine's pre-check. Immutable; the answers per (device, site, zone, sensor, direction) are cached."""

    def __init__(self, revision: int, rules: list[Rule]) -> None:
        self.revision = revision
        self.rules = rules
        self._by_rule: dict[str, list[Rule]] = {}
        for rule in sorted(rules, key=lambda r: r.revision):
            self._by_rule.setdefault(rule.rule_id, []).append(rule)
        # Per (sensor, above): the rule ids with an enabled version for it (only those can ever apply).
        self._candidates: dict[tuple[int, bool], list[str]] = {}
        for rule in rules:
            if rule.enabled:
                ids = self._candidates.setdefault((rule.sensor, rule.above), [])
                if rule.rule_id not in ids:
                    ids.append(rule.rule_id)
        # A reading can open an episode only if it violates some enabled version: value > the lowest open_at of
        # the enabled `above` versions of its sensor (any scope, any time), or < the highest of the `below` ones.
        self.open_above_bound = np.full(len(SENSORS), np.inf)
        self.open_below_bound = np.full(len(SENSORS), -np.inf)
        for rule in rules:
            if not rule.enabled:
                continue
            if rule.above:
                self.open_above_bound[rule.sensor] = min(self.open_above_bound[rule.sensor], rule.open_at)
            else:
                self.open_below_bound[rule.sensor] = max(self.open_below_bound[rule.sensor], rule.open_at)
        self._timelines: dict[tuple, tuple[list[int], list[Rule | None]]] = {}

    def __repr__(self) -> str:
        return f"RuleSet(revision={self.revision}, versions={len(self.rules)})"

    def has_below(self) -> bool:
        return bool(np.isfinite(self.open_below_bound).any())

    def applicable(
        self, device_id: str, site_id: str, zone_id: str, sensor: int, above: bool, ts_us: int
    ) -> Rule | None:
        """The rule that applies to a reading in one direction (module docstring), or None."""
        key = (device_id, site_id, zone_id, sensor, above)
        timeline = self._timelines.get(key)
        if timeline is None:
            timeline = self._timelines[key] = self._timeline(device_id, site_id, zone_id, sensor, above)
        starts, chosen = timeline
        i = bisect.bisect_right(starts, ts_us) - 1
        return chosen[i] if i >= 0 else None

    def _timeline(
        self, device_id: str, site_id: str, zone_id: str, sensor: int, above: bool
    ) -> tuple[list[int], list[Rule | None]]:
        """The applicable rule as a step function of event time: (start of each step, its rule)."""
        histories = []
        for rule_id in self._candidates.get((sensor, above), ()):
            versions = self._by_rule[rule_id]
            if any(v.enabled and v.sensor == sensor and v.above == above and v.matches(device_id, site_id, zone_id)
                   for v in versions):  # fmt: skip
                histories.append(versions)
        starts = sorted({v.effective_us for versions in histories for v in versions})
        chosen: list[Rule | None] = []
        for start in starts:
            best: Rule | None = None
            for versions in histories:
                # The latest version (highest revision) in force at `start`; later revisions may take effect earlier.
                in_force = [v for v in versions if v.effective_us <= start]
                if not in_force:
                    continue
                current = max(in_force, key=lambda v: v.revision)
                if not (
                    current.enabled
                    and current.sensor == sensor
                    and current.above == above
                    and current.matches(device_id, site_id, zone_id)
                ):
                    continue
                if best is None or (current.specificity, current.revision) > (
                    best.specificity,
                    best.revision,
                ):
                    best = current
            chosen.append(best)
        return starts, chosen


class RuleBook:
    """The rule versions a worker has read, in revision order, with the defaults as revision 0.

    `add` takes each rules-topic message in offset order; `at(r)` gives the RuleSet of revision r (the last few
    are cached: partitions switch to a new revision one by one)."""

    CACHED_SETS = 8

    def __init__(self) -> None:
        self.revision = 0
        self._rules: list[Rule] = [compile_version(v, 0) for v in DEFAULT_VERSIONS]
        self._version_ids = {v.version_id for v in DEFAULT_VERSIONS}
        self._sets: OrderedDict[int, RuleSet] = OrderedDict()

    def add(self, offset: int, version: RuleVersion | None) -> bool:
        """The message at `offset` of the rules topic (None: not a valid version, skipped). Returns whether it
        added a version (a repeated version id is ignored: its first occurrence stands)."""
        if offset + 1 <= self.revision:
            return False
        self.revision = offset + 1
        if version is None or version.version_id in self._version_ids:
            return False
        self._version_ids.add(version.version_id)
        self._rules.append(compile_version(version, self.revision))
        return True

    def at(self, revision: int | None = None) -> RuleSet:
        revision = self.revision if revision is None else revision
        if revision > self.revision:
            raise ValueError(f"rule revision {revision} not read yet (at {self.revision})")
        cached = self._sets.get(revision)
        if cached is None:
            cached = RuleSet(revision, [r for r in self._rules if r.revision <= revision])
            self._sets[revision] = cached
            while len(self._sets) > self.CACHED_SETS:
                self._sets.popitem(last=False)
        else:
            self._sets.move_to_end(revision)
        return cached


def default_rules() -> RuleSet:
    """The RuleSet of revision 0: the three defaults only."""
    return RuleBook().at(0)


def version_fields(version: RuleVersion) -> dict:
    """A version as a plain dict (API responses, PostgreSQL rows)."""
    return msgspec.structs.asdict(version)


def iso_effective(us: int) -> str:
    return iso_utc(us)
