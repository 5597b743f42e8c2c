"""Where the repository is: the kit lives at its top, beside the runtime package it serves."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the tests leave for a reader: logs of every process they started, figures, screenshots.
TEST_OUTPUT = ROOT / "test-output"
