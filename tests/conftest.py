"""Shared fixtures. Unit tests need none of them; integration fixtures use the stack from `make up`."""

from __future__ import annotations

import pytest

from devkit.databases import create_database, drop_database
from devkit.deployment import Deployment
from devkit.local_stack import stack_env
from devkit.paths import TEST_OUTPUT


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    return stack_env()


@pytest.fixture
async def database(stack):
    """A fresh, empty database of its own (the stack's user may create databases); dropped after."""
    name, dsn = await create_database(stack["DATABASE_URL"])
    try:
        yield dsn
    finally:
        await drop_database(stack["DATABASE_URL"], name)


@pytest.fixture
async def migrated_database(database):
    from telemetrypulse import db

    await db.migrate(database)
    return database


@pytest.fixture
async def pipeline(stack, database, tmp_path):
    """An isolated deployment (own APP_ID, topics, database); every process it started is stopped after."""
    pipe = await Deployment(stack, logs=TEST_OUTPUT / "logs", dsn=database, tmp=tmp_path).setup()
    try:
        yield pipe
    finally:
        await pipe.close()
