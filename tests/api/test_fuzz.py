"""Property-based fuzzing from `/openapi.json` (schemathesis) against a real uvicorn on known data:
valid and invalid inputs alike get no 5xx, only documented status codes and content types, and every
response body matches its documented schema.

`GET /alerts/stream` is left out: it is endless by design (tests/api/test_stream.py covers it).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from telemetrypulse.api.main import create_app
from tests import support
from tests.api.conftest import live_api, live_api_env

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 60


@pytest.fixture(scope="module")
async def fuzz_server(stack, api_dsn, dataset):
    env = live_api_env(stack, api_dsn)
    await support.create_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [env["TOPIC_EVENTS"]], 1)
    try:
        with live_api(env, "fuzz") as api:
            yield api
    finally:
        await support.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [env["TOPIC_EVENTS"]])


def load_schema():
    # Eager loading: schemathesis' lazy `from_fixture` loader uses a pytest internal (`_nodeid`) that
    # pytest 9 removed. The document is the app's own; test_served_document_is_the_one_fuzzed checks that
    # the running server's /openapi.json is exactly this.
    loaded = schemathesis.openapi.from_dict(create_app().openapi())
    loaded.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=EXAMPLES_PER_OPERATION,
        deterministic=True,
    )
    return loaded.exclude(path="/alerts/stream")


schema = load_schema()


def test_served_document_is_the_one_fuzzed(fuzz_server):
    assert httpx.get(f"{fuzz_server.base_url}/openapi.json").json() == create_app().openapi()


@schema.parametrize()
def test_no_5xx_and_every_response_matches_its_schema(case, fuzz_server):
    case.call_and_validate(base_url=fuzz_server.base_url, checks=CHECKS, timeout=30)
