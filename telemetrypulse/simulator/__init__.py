"""Synthetic building telemetry: `telemetrypulse simulate`.

* `generation`: the devices and their readings (`Topology`, `Simulator`, `generate_events`), no Kafka — the benchmark
  and the tests use it as it is; `malformed`: the invalid messages it mixes in on request; `clock`: event time.
* `producing`: the producing edge (`produce`, paced or burst; `RecordBatches`, the per-partition batch appender).
* `command_line`: `telemetrypulse simulate` (`main`).
"""

from telemetrypulse.simulator.clock import format_ts, parse_start
from telemetrypulse.simulator.command_line import main
from telemetrypulse.simulator.generation import (
    DUPLICATE,
    SENSORS,
    VALID,
    Simulator,
    Topology,
    generate_events,
    uuid4_from_bits,
)
from telemetrypulse.simulator.malformed import INVALID_KINDS
from telemetrypulse.simulator.producing import ProduceStats, RecordBatches, produce

__all__ = [
    "DUPLICATE",
    "INVALID_KINDS",
    "SENSORS",
    "VALID",
    "ProduceStats",
    "RecordBatches",
    "Simulator",
    "Topology",
    "format_ts",
    "generate_events",
    "main",
    "parse_start",
    "produce",
    "uuid4_from_bits",
]
