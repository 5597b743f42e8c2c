"""Shared fixtures. Unit tests need none of them; integration fixtures use the stack from `make up`."""

from __future__ import annotations

import pytest

from tests import support


@pytest.fixture(scope="session")
def stack() -> dict[str, str]:
    return support.stack_env()


@pytest.fixture
async def database(stack):
    """A fresh, empty database of its own (the stack's user may create databases); dropped after."""
    name, dsn = await support.create_database(stack["DATABASE_URL"])
    try:
        yield dsn
    finally:
        await support.drop_database(stack["DATABASE_URL"], name)


@pytest.fixture
async def migrated_database(database):
    from telemetrypulse import db

    await db.migrate(database)
    return database


@pytest.fixture
async def pipeline(stack, database, tmp_path):
    """An isolated deployment (own APP_ID, topics, database); every worker it started is stopped after."""
    pipe = support.Pipeline(stack, database, tmp_path)
    await support.create_topics(
        pipe.bootstrap, [pipe.topic_events, pipe.topic_alerts, pipe.topic_dlq], pipe.partitions
    )
    try:
        yield pipe
    finally:
        pipe.stop_all()
        await support.delete_topics(pipe.bootstrap, pipe.topics)
