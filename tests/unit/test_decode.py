"""`decode_batch` gives exactly what the reference gives (one `validate_event` per input), on every input.

For each position of a batch: either the same valid event (event id bytes, device/site/zone, sensor, value as the
same float bit for bit, ts_us, unit_given) or the same `Invalid` (error and detail text). Property tests feed it
simulator streams, structured mutations of valid events written token by token (so they can hold NaN tokens,
duplicate keys, escapes, odd timestamps), random JSON, random bytes and mixtures of all of these.
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetrypulse import decode, decode_fields
from telemetrypulse.changes import SENSOR_CODES
from telemetrypulse.decode import DecodedBatch, decode_batch, decode_batch_fast, decode_batch_reference
from telemetrypulse.models import SENSOR_RANGES, SENSOR_UNITS, to_us
from telemetrypulse.simulator import Topology, generate_events

NOW = to_us(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
FIVE_MINUTES_US = 300 * 1_000_000
SENSORS = tuple(SENSOR_UNITS)

# DECODE_PROPERTY_EXAMPLES=5000 for a longer search than the default run's.
PROPERTY = settings(
    max_examples=int(os.environ.get("DECODE_PROPERTY_EXAMPLES", "150")),
    deadline=None,  # the machine is shared; time is measured by bench/decode_alone.py, not here
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------------------------
# Comparing a batch with the reference.


def outcomes(batch: DecodedBatch) -> dict[int, tuple]:
    """Position -> what the batch says of it, in terms independent of the order of devices and dims."""
    result: dict[int, tuple] = {}
    for row, position in enumerate(batch.valid.tolist()):
        result[position] = (
            "valid",
            batch.event_id[row].tobytes(),
            batch.dims[batch.dim[row]],
            batch.devices[batch.device[row]],
            int(batch.sensor[row]),
            struct.pack("<d", batch.value[row]),  # the same float bit for bit (-0.0 is not 0.0)
            int(batch.ts_us[row]),
            bool(batch.unit_given[row]),
        )
    for position, invalid in batch.invalid:
        assert position not in result
        result[position] = ("invalid", invalid.error, invalid.detail)
    return result


def check_shape(batch: DecodedBatch, n: int) -> None:
    """What the worker relies on: dtypes, one row per valid event, ascending positions, each input exactly once,
    each device and dim once, and only those of valid events."""
    rows = len(batch.valid)
    for name, dtype in (
        ("valid", np.int64),
        ("device", np.uint32),
        ("dim", np.uint32),
        ("sensor", np.uint8),
        ("value", np.float64),
        ("ts_us", np.int64),
        ("unit_given", np.bool_),
    ):
        column = getattr(batch, name)
        assert column.dtype == dtype, name
        assert column.shape == (rows,), name
    assert batch.event_id.dtype == np.dtype("V16")
    assert batch.event_id.shape == (rows,)
    valid = batch.valid.tolist()
    invalid = [position for position, _ in batch.invalid]
    assert valid == sorted(set(valid))
    assert invalid == sorted(set(invalid))
    assert sorted(valid + invalid) == list(range(n))
    assert len(set(batch.devices)) == len(batch.devices)
    assert len(set(batch.dims)) == len(batch.dims)
    assert set(batch.dim.tolist()) == set(range(len(batch.dims)))
    assert set(batch.device.tolist()) == set(range(len(batch.devices)))
    for row in range(rows):
        assert batch.dims[batch.dim[row]][0] == batch.devices[batch.device[row]]


def assert_same(values: list[bytes | None], now: int = NOW) -> DecodedBatch:
    fast = decode_batch_fast(values, now)  # without the safety net, which would hide a fault
    reference = decode_batch_reference(values, now)
    check_shape(fast, len(values))
    fast_outcomes, reference_outcomes = outcomes(fast), outcomes(reference)
    for position in range(len(values)):
        assert fast_outcomes[position] == reference_outcomes[position], (position, values[position])
    return fast


# ---------------------------------------------------------------------------------------------------------------
# Messages written token by token.


def message(*pairs: tuple[str, str], space: str = "") -> bytes:
    """A JSON object from (key, raw JSON token) pairs, in this order; a key may repeat."""
    items = [f"{json.dumps(key)}{space}:{space}{token}" for key, token in pairs]
    return ("{" + space + f",{space}".join(items) + space + "}").encode("utf-8", "surrogatepass")


def base_pairs(**tokens: str) -> list[tuple[str, str]]:
    pairs = {
        "event_id": '"5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b"',
        "device_id": '"site-01.zone-01.dev-01"',
        "site_id": '"site-01"',
        "zone_id": '"zone-01"',
        "sensor_type": '"co2"',
        "value": "612.5",
        "ts_event": '"2026-11-26T11:59:00.123Z"',
        "unit": '"ppm"',
    }
    pairs.update(tokens)
    return [(key, token) for key, token in pairs.items() if token is not None]


def event(**tokens: str) -> bytes:
    return message(*base_pairs(**tokens))


def q(text: str) -> str:
    """`text` as a JSON string token."""
    return json.dumps(text)


identifiers = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1, max_size=64
)


@st.composite
def event_ids(draw) -> str:
    text = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    case = draw(st.sampled_from(["lower", "upper", "mixed"]))
    if case == "upper":
        text = text.upper()
    elif case == "mixed":
        text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    return q(text)


@st.composite
def timestamps(draw, near_us: int = NOW) -> str:
    """A timestamp token in one of the forms the fast path takes, any offset, anywhere from days before `near_us`
    to past the future limit."""
    us = near_us + draw(
        st.one_of(
            st.integers(-10 * 86_400_000_000, FIVE_MINUTES_US + 10_000_000),
            st.sampled_from([FIVE_MINUTES_US, FIVE_MINUTES_US + 1, FIVE_MINUTES_US - 1, 0]),
        )
    )
    offset_min = draw(st.one_of(st.just(0), st.integers(-(24 * 60 - 1), 24 * 60 - 1)))
    local = datetime(1970, 1, 1) + timedelta(microseconds=us) + timedelta(minutes=offset_min)
    text = local.strftime("%Y-%m-%d") + draw(st.sampled_from("Tt")) + local.strftime("%H:%M:%S")
    digits = draw(st.integers(0, 12))
    if digits:
        fraction = f"{local.microsecond:06d}" + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=6, max_size=6))
        )
        text += "." + fraction[:digits]
    if offset_min == 0 and draw(st.booleans()):
        text += draw(st.sampled_from("Zz"))
    else:
        sign = "-" if offset_min < 0 or (offset_min == 0 and draw(st.booleans())) else "+"
        text += f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return q(text)


@st.composite
def values_for(draw, sensor: str) -> str:
    if sensor == "occupancy":
        number = draw(st.one_of(st.integers(0, 10_000), st.integers(0, 10_000).map(float)))
    else:
        low, high = SENSOR_RANGES[sensor]
        number = draw(st.one_of(st.floats(low, high), st.integers(math.ceil(low), math.floor(high))))
    return json.dumps(number)


@st.composite
def valid_pairs(draw) -> list[tuple[str, str]]:
    sensor = draw(st.sampled_from(SENSORS))
    pairs = [
        ("event_id", draw(event_ids())),
        ("device_id", q(draw(identifiers))),
        ("site_id", q(draw(identifiers))),
        ("zone_id", q(draw(identifiers))),
        ("sensor_type", q(sensor)),
        ("value", draw(values_for(sensor))),
        ("ts_event", draw(timestamps())),
    ]
    unit = draw(st.sampled_from(["given", "absent", "null"]))
    if unit == "given":
        pairs.append(("unit", q(SENSOR_UNITS[sensor])))
    elif unit == "null":
        pairs.append(("unit", "null"))
    return pairs


ODD_TOKENS = [
    "null", "true", "false", "0", "-0", "-0.0", "1", "-1", "1.5", "1E2", "1e-7", '""', '"x"', "[]", "{}", "[1]",
    '{"a":1}', "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "18446744073709551616",
    "9007199254740993", "123456789012345678901234567890", "0.1000000000000000055511151231257827021181583404541015625",
    "40000.000000000000000000001", "-50.0000000000000000001",
]  # fmt: skip
ODD_IDENTIFIERS = [
    "", "x" * 64, "x" * 65, "dev 01", "dev/01", "dév-01", "dev-01\n", "a\nb", "\ud800", "\udc00x", "dev\u0000",
    "DEV.01_a-b", "🙂", "ﬁ",
]  # fmt: skip
ODD_EVENT_IDS = [
    "5B8F2A8E-3C6D-4F5E-9A7B-1C2D3E4F5A6B", "5b8f2a8e3c6d4f5e9a7b1c2d3e4f5a6b", "{5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b}",
    "urn:uuid:5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b", "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b\n",
    " 5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b", "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6", "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6bb",
    "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6g", "5b8f2a8e-3c6d-4f5e-9a7b1c2d3e4f5a6b-", "5b8f2a8e 3c6d-4f5e-9a7b-1c2d3e4f5a6b",
    "5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6\u0663", "",
]  # fmt: skip
ODD_TIMESTAMPS = [
    "2026-11-26T11:59:00", "2026-11-26 11:59:00Z", "2026-11-26T11:59:00+0530", "2026-11-26T11:59:00+05",
    "2026-11-26T11:59:00+05:30:15", "2026-11-26T11:59:00,123Z", "2026-11-26T11:59:00.Z", "2026-11-26T24:00:00Z",
    "2026-11-26T23:59:60Z", "2023-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
    "2026-11-00T00:00:00Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59",
    "2026-11-26T11:59:00+24:00", "2026-11-26T11:59:00+23:60", "2026-11-26T11:59:00-23:59", "2026-11-26T11:59",
    "2026-11-26T11Z", "2026-11-26", "20261126T115900Z", "2026-W48-4T11:59:00Z", "2026-330T11:59:00Z",
    "2026-11-26T11:59:00.1234567890123456789Z", "2026-11-26T11:59:00.000000999Z", " 2026-11-26T11:59:00Z",
    "2026-11-26T11:59:00Z ", "2026-11-26T11:59:00ZZ", "2026-11-26t11:59:00z", "2026-11-26T11:59:00.5+05:30",
    "２０２６-11-26T11:59:00Z", "2026-11-26T11:59:0\u0660Z", "2026-11-26T11:59:00\nZ", "2026-11-26T11:59:00Z\n",
    "+2026-11-26T11:59:00Z", "2026-11-26T11:59:00+05:30z", "2026-11-26T11:59:00-00:00", "2026-11-26T11:59:00.123456+00:00",
    "2026-11-26T12:05:00Z", "2026-11-26T12:05:00.000001Z", "2026-11-26T17:05:00+05:00", "2026-11-26T17:05:00.000001+05:00",
    "yesterday", "",
]  # fmt: skip
ODD_UNITS = ["ppm", "celsius", "percent", "count", "PPM", "", "fahrenheit", "ppm "]


def odd_token_for(name: str) -> st.SearchStrategy[str]:
    generic = st.sampled_from(ODD_TOKENS)
    specific = {
        "event_id": st.sampled_from(ODD_EVENT_IDS).map(q),
        "device_id": st.sampled_from(ODD_IDENTIFIERS).map(q),
        "site_id": st.sampled_from(ODD_IDENTIFIERS).map(q),
        "zone_id": st.sampled_from(ODD_IDENTIFIERS).map(q),
        "sensor_type": st.sampled_from([*SENSORS, "CO2", "pressure", "", "co2 "]).map(q),
        "value": st.sampled_from(ODD_TOKENS),
        "ts_event": st.sampled_from(ODD_TIMESTAMPS).map(q),
        "unit": st.sampled_from(ODD_UNITS).map(q),
    }.get(name)
    return generic if specific is None else st.one_of(generic, specific)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def escaped(text: str) -> str:
    """A JSON string token for `text` with every UTF-16 code unit escaped as \\uXXXX."""
    units = text.encode("utf-16-be", "surrogatepass")
    return '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'


@st.composite
def mutated_events(draw) -> bytes:
    """A valid event, then a few mutations: a field removed, null, of another type, at or past a boundary, in an
    odd form; fields added (also nested, deep, non-ASCII, NaN, huge numbers); a key repeated with another value;
    escaped keys or values; another field order; whitespace."""
    pairs = draw(valid_pairs())
    sensor = json.loads(dict(pairs)["sensor_type"])
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "remove",
                    "replace",
                    "boundary",
                    "extra",
                    "duplicate",
                    "escape_key",
                    "escape_value",
                    "future",
                ]
            )
        )
        names = [name for name, _ in pairs] or ["value"]
        name = draw(st.sampled_from(names))
        if kind == "remove":
            pairs = [p for p in pairs if p[0] != name]
        elif kind == "replace":
            pairs = [(k, draw(odd_token_for(k)) if k == name else v) for k, v in pairs]
        elif kind == "boundary":
            if sensor in SENSOR_RANGES:
                low, high = SENSOR_RANGES[sensor]
                candidates = [low, high, math.nextafter(low, -math.inf), math.nextafter(high, math.inf), -0.0]
            else:
                candidates = [0, -0.0, 3.0, 2.5, 2.0**53, 2.0**53 + 2, 1e300, -1, math.nextafter(0, 1)]
            pairs = [
                (k, json.dumps(draw(st.sampled_from(candidates))) if k == "value" else v) for k, v in pairs
            ]
        elif kind == "extra":
            extra = draw(
                st.one_of(
                    json_values.map(json.dumps),
                    st.sampled_from(ODD_TOKENS),
                    st.integers(1, 1100).map(lambda depth: "[" * depth + "]" * depth),
                    st.integers(1, 1100).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
                    st.sampled_from(
                        ['"\\ud800"', '"\\udc00"', '"\\ud83d\\ude00"', '"é"', '"\\u0000"', '"\\/"']
                    ),
                )
            )
            key = draw(st.one_of(st.text(max_size=10), st.sampled_from(["firmware", "Value", "unit ", "é"])))
            pairs.insert(draw(st.integers(0, len(pairs))), (key, extra))
        elif kind == "duplicate":
            token = draw(st.one_of(odd_token_for(name), st.just(dict(pairs).get(name, "1"))))
            pairs.insert(draw(st.integers(0, len(pairs))), (name, token))
        elif kind == "escape_key":
            pairs = [("\x00ESC" + k if k == name else k, v) for k, v in pairs]
        elif kind == "escape_value":
            pairs = [(k, escaped(json.loads(v)) if k == name and v.startswith('"') else v) for k, v in pairs]
        elif kind == "future":
            pairs = [
                (k, draw(timestamps(near_us=NOW + FIVE_MINUTES_US)) if k == "ts_event" else v)
                for k, v in pairs
            ]
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    space = draw(st.sampled_from(["", " ", "\n", "\t", " \r\n "]))
    items = []
    for key, token in pairs:
        key_token = escaped(key[4:]) if key.startswith("\x00ESC") else json.dumps(key)
        items.append(f"{key_token}{space}:{space}{token}")
    return ("{" + space + f",{space}".join(items) + space + "}").encode("utf-8", "surrogatepass")


@st.composite
def byte_mutations(draw) -> bytes:
    """A valid event with a few bytes flipped, inserted or removed."""
    raw = bytearray(message(*draw(valid_pairs())))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.one_of(st.integers(0, 255), st.sampled_from(b'{}[]",:\\ 0aZ-\xff\xc3\xed')))
        if op == "flip":
            raw[at] = byte
        elif op == "insert":
            raw.insert(at, byte)
        else:
            del raw[at]
    return bytes(raw)


random_json = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from([*dict(base_pairs()), "x"]), json_values).map(
        lambda d: json.dumps(d).encode()
    ),
)
any_value = st.one_of(
    st.builds(lambda pairs: message(*pairs), valid_pairs()),
    mutated_events(),
    byte_mutations(),
    random_json,
    st.binary(max_size=300),
    st.none(),
)


# ---------------------------------------------------------------------------------------------------------------
# Properties.


@PROPERTY
@given(
    count=st.integers(1, 400),
    seed=st.integers(0, 2**32),
    topology=st.sampled_from([Topology(), Topology(1, 1, 1), Topology(5, 50, 50)]),
    invalid=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
    duplicates=st.sampled_from([0.0, 0.1]),
    start_s=st.integers(-30 * 86_400, 600),
)
def test_simulator_streams(count, seed, topology, invalid, duplicates, start_s):
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=NOW, seconds=start_s)
    values = [
        value
        for _, value in generate_events(
            count,
            seed=seed,
            start=start,
            topology=topology,
            invalid_fraction=invalid,
            duplicate_fraction=min(duplicates, 1.0 - invalid),
        )
    ]
    assert_same(values)


@PROPERTY
@given(st.lists(st.builds(lambda pairs: message(*pairs), valid_pairs()), max_size=30))
def test_valid_events_in_every_form(values):
    assert_same(values)


@PROPERTY
@given(st.lists(mutated_events(), min_size=1, max_size=20))
def test_mutated_events(values):
    assert_same(values)


@PROPERTY
@given(st.lists(st.one_of(byte_mutations(), st.binary(max_size=300)), min_size=1, max_size=20))
def test_random_bytes(values):
    assert_same(values)


@PROPERTY
@given(st.lists(random_json, min_size=1, max_size=20))
def test_random_json(values):
    assert_same(values)


@PROPERTY
@given(st.lists(any_value, max_size=60))
def test_mixed_batches(values):
    assert_same(values)


@PROPERTY
@given(
    base=st.lists(st.builds(lambda pairs: message(*pairs), valid_pairs()), min_size=1, max_size=10),
    now_shift_us=st.integers(-FIVE_MINUTES_US - 2, FIVE_MINUTES_US + 2),
)
def test_the_clock_decides_the_future_limit(base, now_shift_us):
    assert_same(base, NOW + now_shift_us)


@st.composite
def timestamp_texts(draw) -> str:
    """Timestamps around the fast path's forms, every field at and past its bounds."""
    text = (
        f"{draw(st.integers(0, 9999)):04d}-{draw(st.integers(0, 13)):02d}-{draw(st.integers(0, 32)):02d}"
        f"{draw(st.sampled_from('Tt Tx'))}"
        f"{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 61)):02d}:{draw(st.integers(0, 61)):02d}"
    )
    digits = draw(st.integers(-1, 12))
    if digits >= 0:
        text += "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits)))
    zone = draw(st.sampled_from(["Z", "z", "offset", "offset", "compact", "none"]))
    hours, minutes = draw(st.integers(0, 25)), draw(st.integers(0, 61))
    sign = draw(st.sampled_from("+-"))
    if zone in "Zz":
        text += zone
    elif zone == "offset":
        text += f"{sign}{hours:02d}:{minutes:02d}"
    elif zone == "compact":
        text += f"{sign}{hours:02d}{minutes:02d}"
    return text


@PROPERTY
@given(st.lists(st.one_of(timestamp_texts(), timestamps().map(json.loads)), min_size=1, max_size=50))
def test_timestamps_at_the_bounds_of_every_field(texts):
    assert_same([event(ts_event=q(text)) for text in texts], now=to_us(datetime(9999, 12, 31, tzinfo=UTC)))


number_texts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(
        st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 25), st.sampled_from("efg")
    ).map(lambda f: f"{f[0]:.{f[1]}{f[2]}}"),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,3})?\Z"),
    st.integers(-(2**70), 2**70).map(str),
).filter(lambda text: "inf" not in text and "nan" not in text)


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(SENSORS), number_texts), min_size=1, max_size=50))
def test_numbers_in_every_notation(readings):
    assert_same(
        [event(sensor_type=q(sensor), value=text, unit=q(SENSOR_UNITS[sensor])) for sensor, text in readings]
    )


# ---------------------------------------------------------------------------------------------------------------
# The subtle rules, one by one.


def single(raw: bytes | None, now: int = NOW) -> tuple:
    return outcomes(assert_same([raw], now))[0]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400])
def test_non_finite_and_overflowing_values_are_invalid_fields(token):
    assert single(event(value=token))[:2] == ("invalid", "invalid_field")


def test_true_is_not_a_number():
    assert single(event(value="true"))[:2] == ("invalid", "invalid_field")
    assert single(event(value="false"))[:2] == ("invalid", "invalid_field")


@pytest.mark.parametrize(
    "name", ["event_id", "device_id", "site_id", "zone_id", "sensor_type", "value", "ts_event"]
)
def test_a_null_field_is_present_but_wrong(name):
    assert single(event(**{name: "null"}))[:2] == ("invalid", "invalid_field")


def test_a_null_or_absent_unit_is_no_unit():
    assert single(event(unit="null"))[0] == "valid"
    assert single(event(unit="null"))[-1] is False
    assert single(event(unit=None))[-1] is False
    assert single(event())[-1] is True


def test_occupancy_three_point_zero_is_the_integer_three():
    outcome = single(event(sensor_type='"occupancy"', value="3.0", unit='"count"'))
    assert outcome[0] == "valid"
    assert struct.unpack("<d", outcome[5]) == (3.0,)
    assert single(event(sensor_type='"occupancy"', value="3.5", unit='"count"'))[1] == "invalid_field"


def test_minus_zero_keeps_its_sign_as_the_reference_reads_it():
    assert single(event(value="-0.0"))[5] == struct.pack("<d", -0.0)
    assert single(event(value="-0"))[5] == struct.pack("<d", 0.0)  # an integer: there is no -0


def test_event_id_either_case_gives_the_same_bytes():
    lower = single(event(event_id='"5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b"'))
    upper = single(event(event_id='"5B8F2A8E-3C6D-4F5E-9A7B-1C2D3E4F5A6B"'))
    assert lower[1] == upper[1] == uuid.UUID("5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b").bytes


@pytest.mark.parametrize("text", ODD_EVENT_IDS[1:])
def test_event_ids_in_other_forms_are_invalid(text):
    assert single(event(event_id=q(text)))[:2] == ("invalid", "invalid_field")


def test_an_id_with_a_trailing_newline_is_invalid():
    assert single(event(device_id=q("dev-01\n")))[:2] == ("invalid", "invalid_field")
    assert single(event(event_id=q("5b8f2a8e-3c6d-4f5e-9a7b-1c2d3e4f5a6b\n")))[:2] == (
        "invalid",
        "invalid_field",
    )


def test_exactly_five_minutes_ahead_is_accepted_one_microsecond_more_is_future():
    assert single(event(ts_event='"2026-11-26T12:05:00Z"'))[0] == "valid"
    assert single(event(ts_event='"2026-11-26T12:05:00.000001Z"'))[:2] == ("invalid", "future_timestamp")
    assert single(event(ts_event='"2026-11-26T17:05:00+05:00"'))[0] == "valid"
    assert single(event(ts_event='"2026-11-26T17:05:00.000001+05:00"'))[:2] == ("invalid", "future_timestamp")


@pytest.mark.parametrize("text", ODD_TIMESTAMPS)
def test_odd_timestamp_forms(text):
    single(event(ts_event=q(text)))


def test_sub_microsecond_digits_are_cut_not_rounded():
    outcome = single(event(ts_event='"2026-11-26T11:59:00.1234569999Z"'))
    assert outcome[6] % 1_000_000 == 123456


def test_duplicate_keys_the_last_one_counts():
    pairs = base_pairs()
    assert single(message(*pairs, ("value", '"x"')))[:2] == ("invalid", "invalid_field")
    assert single(message(("value", '"x"'), *pairs))[0] == "valid"
    assert single(message(*pairs, ("unit", "null")))[-1] is False
    assert single(message(*pairs, ("unit", '"celsius"')))[:2] == ("invalid", "invalid_field")


def test_invalid_utf8_anywhere_is_invalid_json():
    for raw in (
        event(device_id='"dev-X"').replace(b"dev-X", b"dev-\xff"),
        message(*base_pairs(), ("firmware", '"X"')).replace(b'"X"', b'"\xff"'),
        message(*base_pairs(), ("firmware", '"X"')).replace(b'"X"', b'"\xc3"'),
        message(*base_pairs(), ("X", "1")).replace(b'"X"', b'"\xff"'),
    ):
        assert single(raw)[:2] == ("invalid", "invalid_json")
    # SPEC §3: UTF-8; a byte-order mark or UTF-16 is not that.
    assert single(b"\xef\xbb\xbf" + event())[:2] == ("invalid", "invalid_json")
    assert single(event().decode().encode("utf-16"))[:2] == ("invalid", "invalid_json")


def test_json_other_than_an_object_is_not_an_object():
    for raw in (b"[1, 2]", b'"text"', b"42", b"null", b"true", b"[" + event() + b"]"):
        assert single(raw)[:2] == ("invalid", "not_an_object")


def test_lone_surrogates():
    # The reference reads them with Python's json (orjson refuses them): ignored in an extra field,
    # invalid in an id.
    assert single(message(*base_pairs(), ("firmware", '"\\ud800"')))[0] == "valid"
    assert single(event(device_id='"dev\\udc00"'))[:2] == ("invalid", "invalid_field")
    # Surrogate bytes are not UTF-8 (SPEC §3: values are UTF-8).
    assert single(message(*base_pairs(), ("firmware", '"\ud800"')))[:2] == ("invalid", "invalid_json")


@pytest.mark.parametrize("depth", [1, 10, 63, 64, 65, 100, 500, 1000, 1023, 1024, 1025, 3000])
def test_deep_nesting(depth):
    single(message(*base_pairs(), ("extra", "[" * depth + "]" * depth)))
    single(message(*base_pairs(), ("extra", '{"a":' * depth + "1" + "}" * depth)))
    single(b"[" * depth + b"]" * depth)


def test_huge_messages():
    single(message(*base_pairs(), ("blob", q("x" * 2_000_000))))
    single(message(*base_pairs(), ("list", json.dumps(list(range(200_000))))))
    single(event(device_id=q("d" * 1_000_000)))


def test_a_tombstone_is_invalid_json():
    assert single(None) == ("invalid", "invalid_json", "empty message value (tombstone)")


def test_escaped_keys_and_values_are_read_as_the_reference_reads_them():
    raw = (
        b"{"
        + b",".join(
            (escaped(key) + ":" + (escaped(json.loads(token)) if token.startswith('"') else token)).encode()
            for key, token in base_pairs()
        )
        + b"}"
    )
    assert single(raw)[0] == "valid"


def test_values_beyond_the_integer_range_of_a_float():
    for token in ("9007199254740993", "18446744073709551617", "123456789012345678901234567890123"):
        single(event(sensor_type='"occupancy"', value=token, unit='"count"'))
    for token in ("0.1000000000000000055511151231257827021181583404541015625", "612.49999999999999999999999"):
        single(event(value=token))


# ---------------------------------------------------------------------------------------------------------------
# The shape of a batch.


def test_positions_devices_and_dims_of_a_mixed_batch():
    values = [
        event(device_id='"d1"'),
        None,
        event(device_id='"d2"', value='"bad"'),  # invalid: its device must not appear
        event(device_id='"d1"', sensor_type='"temperature"', value="21.5", unit='"celsius"'),
        b"{",
        event(device_id='"d3"', zone_id='"zone-09"'),
        event(device_id='"d1"', ts_event='"2026-11-26 11:59:00Z"'),  # valid, by the reference path
        event(device_id='"d3"', zone_id='"zone-10"'),  # the same device in another zone: another dim
    ]
    batch = assert_same(values)
    assert batch.valid.tolist() == [0, 3, 5, 6, 7]
    assert [position for position, _ in batch.invalid] == [1, 2, 4]
    assert sorted(batch.devices) == ["d1", "d3"]
    assert sorted(batch.dims) == [
        ("d1", "site-01", "zone-01"),
        ("d3", "site-01", "zone-09"),
        ("d3", "site-01", "zone-10"),
    ]
    assert [batch.devices[i] for i in batch.device] == ["d1", "d1", "d3", "d1", "d3"]
    assert batch.sensor.tolist() == [SENSOR_CODES["co2"], SENSOR_CODES["temperature"], 0, 0, 0]


@pytest.mark.parametrize("count", [1, 15, 16, 40])
def test_two_timestamp_lengths_half_and_half(count, monkeypatch):
    values = [event(ts_event=q("2026-11-26T11:59:00Z"), event_id=q(str(uuid.uuid4()))) for _ in range(count)]
    values += [
        event(ts_event=q("2026-11-26T11:59:00.25Z"), event_id=q(str(uuid.uuid4()))) for _ in range(count)
    ]
    assert len(assert_same(values)) == 2 * count
    reference = decode.validate_one
    calls = []
    monkeypatch.setattr(
        decode, "validate_one", lambda value, now: calls.append(value) or reference(value, now)
    )
    decode_batch(values, NOW)
    assert len(calls) == (0 if count >= 16 else 2 * count)  # groups under 16 strings go to the reference


def test_list_extend_keeps_what_it_appended_before_an_exception():
    """What decode_fields.decode_typed relies on to find the value that failed (CPython's list.extend)."""

    def decode_or_raise(x):
        if x < 0:
            raise ValueError(x)
        return x

    decoded = []
    with pytest.raises(ValueError):
        decoded.extend(map(decode_or_raise, iter([1, 2, -3, 4])))
    assert decoded == [1, 2]


def test_a_device_whose_first_event_is_elsewhere():
    """Dims are per device while a device keeps its site and zone; an event elsewhere gets its own dim, also when
    it comes first and is invalid (then only the others' dim remains)."""
    values = [
        event(device_id='"d9"', site_id='"bad site"'),  # invalid, first of d9
        event(device_id='"d9"', event_id=q(str(uuid.uuid4()))),
        event(device_id='"d8"'),
        event(device_id='"d9"', event_id=q(str(uuid.uuid4()))),
        event(device_id='"d9"', zone_id='"zone-02"', event_id=q(str(uuid.uuid4()))),
    ]
    batch = assert_same(values)
    assert batch.valid.tolist() == [1, 2, 3, 4]
    assert sorted(batch.dims) == [
        ("d8", "site-01", "zone-01"),
        ("d9", "site-01", "zone-01"),
        ("d9", "site-01", "zone-02"),
    ]
    assert [batch.dims[i] for i in batch.dim] == [
        ("d9", "site-01", "zone-01"),
        ("d8", "site-01", "zone-01"),
        ("d9", "site-01", "zone-01"),
        ("d9", "site-01", "zone-02"),
    ]


def test_invalid_inputs_at_the_edges_and_in_runs():
    good = event()
    for values in (
        [None, good, good],
        [good, good, b"x"],
        [b"x", b"y", good, b"z", b"w", good, None],
        [None] * 5,
        [],
    ):
        assert_same(values)


def test_a_whole_batch_of_simulator_data_at_scale():
    for topology in (Topology(), Topology(5, 50, 50)):
        values = [
            value
            for _, value in generate_events(
                4000, seed=11, start="2026-11-26T10:00:00Z", topology=topology, invalid_fraction=0.01
            )
        ]
        batch = assert_same(values)
        assert len(batch) > 3900


def test_a_fault_of_the_fast_path_falls_back_to_the_reference(monkeypatch, caplog):
    def broken(ids):
        raise IndexError("a bug")

    monkeypatch.setattr(decode_fields, "event_id_bytes", broken)
    values = [event(), b"{", None]
    assert outcomes(decode_batch(values, NOW)) == outcomes(decode_batch_reference(values, NOW))
    assert "the fast path failed on 3 values" in caplog.text


def test_the_reference_is_models_validate_event():
    raw = orjson.dumps({"event_id": str(uuid.uuid4()), "device_id": "d", "site_id": "s", "zone_id": "z"})
    assert decode.validate_one(raw, NOW) == decode.validate_event(raw, NOW)


def test_the_common_forms_never_reach_the_reference(monkeypatch):
    """Speed, not correctness: what devices commonly send is decoded without the per-event reference."""
    calls = []
    monkeypatch.setattr(decode, "validate_one", lambda value, now: calls.append(value))
    values = [value for _, value in generate_events(200, seed=3, start="2026-11-26T10:00:00Z")]
    values += [  # a form of another length is decoded apart when 16 events have it (else by the reference)
        event(ts_event=q(text), event_id=q(str(uuid.uuid4())))
        for _ in range(16)
        for text in (
            "2026-11-26t11:59:00z",
            "2026-11-26T11:59:00Z",
            "2026-11-26T11:59:00.5Z",
            "2026-11-26T11:59:00.123456789+05:30",
            "2026-11-26T06:29:00-05:30",
            "2026-11-26T11:59:00-00:00",
        )
    ]
    values += [
        event(unit=None),
        event(unit="null"),
        event(event_id=q("5B8F2A8E-3C6D-4F5E-9A7B-1C2D3E4F5A6B")),
        message(*base_pairs(), ("firmware", '"1.2.3"'), ("location", '{"floor": 3, "tags": ["a", "é"]}')),
        message(*reversed(base_pairs()), space=" "),
        event(sensor_type='"occupancy"', value="3", unit='"count"'),
    ]
    batch = decode_batch(values, NOW)
    assert calls == []
    assert len(batch) == len(values)
