"""Fixtures of the fault battery: which shared services this clone may crash, and a report per scenario."""

from __future__ import annotations

import json

import pytest

from devkit.local_stack import LocalStack
from tests.faults.harness import REPORTS


@pytest.fixture
def own_kafka(stack) -> None:
    """The broker in `.devstack/env` is the one `make up` started here: only then may a test crash it."""
    if not LocalStack().owns(stack)["kafka"]:
        pytest.skip("Kafka is not this clone's devstack broker (external KAFKA_BOOTSTRAP_SERVERS)")


@pytest.fixture
def own_postgres(stack) -> None:
    if not LocalStack().owns(stack)["postgres"]:
        pytest.skip("PostgreSQL is not this clone's devstack cluster (external DATABASE_URL)")


def pytest_sessionfinish(session) -> None:
    """One summary of every scenario report written in this session (test-output/faults/summary.json)."""
    if not REPORTS.is_dir():
        return
    reports = [
        json.loads(p.read_text()) for p in sorted(REPORTS.glob("F*.json")) + sorted(REPORTS.glob("S*.json"))
    ]
    if reports:
        (REPORTS / "summary.json").write_text(json.dumps(reports, indent=2) + "\n")
