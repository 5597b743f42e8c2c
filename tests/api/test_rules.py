"""`/rules` (SPEC §9) on a real database and Kafka: admin scope only, every invalid rule a 422 naming the field,
404 for unknown rules, versions written to the rules topic (what the workers follow) and kept in PostgreSQL's history
in the same order, and versions the history lacks copied from the topic."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from devkit import kafka_io
from devkit.waiting import wait_for
from telemetrypulse.rules import RuleVersion, decode_version, encode_version
from tests.api.conftest import api_settings, app_client

pytestmark = pytest.mark.integration

ADMIN = "ad-7c1e0f3a-secret"
READER = "rd-2b9d8e4c-secret"
OPERATOR = "op-5a6f1d2e-secret"
KEYS = f"root:{ADMIN}:admin,wall:{READER}:read,ops:{OPERATOR}:operate"
AS_ADMIN = {"X-API-Key": ADMIN}
LOW_CO2 = {"sensor_type": "co2", "direction": "below", "open_at": 300, "resolve_at": 350}


@pytest.fixture(scope="module")
async def rules_api(stack, api_dsn):
    settings = api_settings(stack, api_dsn, api_keys=KEYS)
    try:
        async with app_client(settings) as client:
            client.settings = settings
            yield client
    finally:
        await kafka_io.delete_topics(stack["KAFKA_BOOTSTRAP_SERVERS"], [settings.topic_rules])


async def test_rules_need_the_admin_scope(rules_api):
    for method, path, kwargs in [
        ("GET", "/rules", {}),
        ("GET", "/rules/default-co2-high", {}),
        ("PUT", "/rules/x", {"json": LOW_CO2}),
        ("DELETE", "/rules/x", {}),
    ]:
        assert (await rules_api.request(method, path, **kwargs)).status_code == 401
        assert (
            await rules_api.request(method, path, headers={"X-API-Key": "nope-nope-nope"}, **kwargs)
        ).status_code == 401
        for key in (READER, OPERATOR):
            refused = await rules_api.request(method, path, headers={"X-API-Key": key}, **kwargs)
            assert refused.status_code == 403 and "admin" in refused.json()["detail"]


async def test_the_defaults_are_there_from_the_migration(rules_api):
    response = await rules_api.get("/rules", headers=AS_ADMIN)
    assert response.status_code == 200
    defaults = {r["rule_id"]: r for r in response.json()["items"] if r["rule_id"].startswith("default-")}
    assert {
        k: (v["sensor_type"], v["direction"], v["open_at"], v["resolve_at"]) for k, v in defaults.items()
    } == {
        "default-co2-high": ("co2", "above", 1000, 950),
        "default-temperature-high": ("temperature", "above", 30, 29),
        "default-humidity-high": ("humidity", "above", 80, 77),
    }
    for rule in defaults.values():
        assert (rule["revision"], rule["version"], rule["version_count"], rule["severity"], rule["enabled"]) == (
            0, 1, 1, "warning", True,
        )  # fmt: skip
        assert rule["effective_from"] == "1970-01-01T00:00:00Z" and rule["for_s"] == 0
    only_co2 = await rules_api.get("/rules", params={"sensor_type": "co2"}, headers=AS_ADMIN)
    assert {r["sensor_type"] for r in only_co2.json()["items"]} == {"co2"}


async def test_put_put_delete_make_three_versions_in_topic_order(rules_api, stack):
    rule_id = f"cold-{uuid.uuid4().hex[:6]}"
    body = {"sensor_type": "temperature", "direction": "below", "open_at": 2, "resolve_at": 3,
            "site_id": "lab", "zone_id": "cold", "for_s": 120, "severity": "critical",
            "effective_from": "2024-06-01T00:00:00+02:00"}  # fmt: skip
    created = await rules_api.put(f"/rules/{rule_id}", json=body, headers=AS_ADMIN)
    assert created.status_code == 201, created.text
    first = created.json()
    assert (first["version"], first["version_count"], first["created_by"]) == (1, 1, "root")
    assert first["effective_from"] == "2024-05-31T22:00:00Z" and first["revision"] >= 1

    changed = await rules_api.put(
        f"/rules/{rule_id}", json=body | {"open_at": 1, "resolve_at": 2}, headers=AS_ADMIN
    )
    assert changed.status_code == 200
    assert (changed.json()["version"], changed.json()["open_at"]) == (2, 1)

    deleted = await rules_api.delete(
        f"/rules/{rule_id}", params={"effective_from": "2024-07-01T00:00:00Z"}, headers=AS_ADMIN
    )
    assert deleted.status_code == 200
    detail = deleted.json()
    assert (detail["enabled"], detail["version"], detail["open_at"], detail["effective_from"]) == (
        False, 3, 1, "2024-07-01T00:00:00Z",
    )  # fmt: skip
    versions = detail["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    revisions = [v["revision"] for v in versions]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3

    # The workers' source: the same versions, in the same order, at offset = revision - 1.
    records = await kafka_io.read_topic(stack["KAFKA_BOOTSTRAP_SERVERS"], rules_api.settings.topic_rules)
    on_topic = {r.offset + 1: decode_version(r.value) for r in records}
    for v in versions:
        version = on_topic[v["revision"]]
        assert (version.version_id, version.rule_id, version.enabled, version.open_at) == (
            v["version_id"], rule_id, v["enabled"], v["open_at"],
        )  # fmt: skip
    assert {r.key for r in records if r.key.startswith(rule_id.encode())} == {
        f"{rule_id}/{v['version_id']}".encode() for v in versions
    }

    got = await rules_api.get(f"/rules/{rule_id}", headers=AS_ADMIN)
    assert got.json() == detail
    listed = [
        r
        for r in (await rules_api.get("/rules", headers=AS_ADMIN)).json()["items"]
        if r["rule_id"] == rule_id
    ]
    assert listed == [{k: v for k, v in detail.items() if k != "versions"}]


async def test_effective_from_defaults_to_now(rules_api):
    response = await rules_api.put(f"/rules/now-{uuid.uuid4().hex[:6]}", json=LOW_CO2, headers=AS_ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert body["effective_from"] == body["created_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (LOW_CO2 | {"resolve_at": 250}, "resolve_at"),  # below: resolve_at must be ≥ open_at
        (LOW_CO2 | {"direction": "above"}, "resolve_at"),  # above: resolve_at must be ≤ open_at
        (LOW_CO2 | {"direction": "sideways"}, "direction"),
        (LOW_CO2 | {"sensor_type": "pressure"}, "sensor_type"),
        (LOW_CO2 | {"zone_id": "z1"}, "zone_id"),  # a zone without its site
        (LOW_CO2 | {"device_id": "d1", "site_id": "s1"}, "device_id"),  # a device scope with a site
        (LOW_CO2 | {"site_id": "a b"}, "site_id"),
        (LOW_CO2 | {"for_s": -1}, "for_s"),
        (LOW_CO2 | {"severity": "fatal"}, "severity"),
        (LOW_CO2 | {"effective_from": "2024-06-01T00:00:00"}, "effective_from"),  # no offset
        (LOW_CO2 | {"effective_from": "last tuesday"}, "effective_from"),
        (LOW_CO2 | {"open_at": "high"}, "open_at"),
        ({k: v for k, v in LOW_CO2.items() if k != "resolve_at"}, "resolve_at"),
        (LOW_CO2 | {"rule_id": "other"}, "rule_id"),  # the id is the path's
        (LOW_CO2 | {"enabled": "maybe"}, "enabled"),
    ],
)
async def test_every_invalid_rule_is_a_422_naming_the_field(rules_api, body, field):
    response = await rules_api.put("/rules/invalid-one", json=body, headers=AS_ADMIN)
    assert response.status_code == 422, response.text
    assert any(field in e["location"] for e in response.json()["errors"]), response.json()
    assert (await rules_api.get("/rules/invalid-one", headers=AS_ADMIN)).status_code == 404


async def test_non_finite_thresholds_and_bad_ids_are_refused(rules_api):
    raw = b'{"sensor_type": "co2", "direction": "above", "open_at": Infinity, "resolve_at": 1}'
    response = await rules_api.put(
        "/rules/x", content=raw, headers=AS_ADMIN | {"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert (await rules_api.put("/rules/no%20spaces", json=LOW_CO2, headers=AS_ADMIN)).status_code == 422
    assert (await rules_api.put("/rules/" + "x" * 65, json=LOW_CO2, headers=AS_ADMIN)).status_code == 422
    bad_time = await rules_api.delete(
        "/rules/default-co2-high", params={"effective_from": "soon"}, headers=AS_ADMIN
    )
    assert bad_time.status_code == 422


async def test_unknown_rules_are_404(rules_api):
    assert (await rules_api.get("/rules/never-made", headers=AS_ADMIN)).status_code == 404
    assert (await rules_api.delete("/rules/never-made", headers=AS_ADMIN)).status_code == 404


async def test_a_version_on_the_topic_missing_from_the_history_is_copied_into_it(rules_api, stack):
    """A version whose insert failed after Kafka had it (or written by another process) reaches GET /rules."""
    rule_id = f"elsewhere-{uuid.uuid4().hex[:6]}"
    await rules_api.put(f"/rules/{rule_id}", json=LOW_CO2, headers=AS_ADMIN)  # the topic exists from here on
    version = RuleVersion(
        version_id=str(uuid.uuid4()), rule_id=rule_id, effective_from="2024-01-01T00:00:00Z",
        created_at="2024-01-01T00:00:00Z", **(LOW_CO2 | {"open_at": 100, "resolve_at": 120}),
    )  # fmt: skip
    await kafka_io.produce(
        stack["KAFKA_BOOTSTRAP_SERVERS"],
        rules_api.settings.topic_rules,
        [(version.key(), encode_version(version))],
    )
    # Not a rule version: skipped by the copy (and by the workers), never an error.
    await kafka_io.produce(
        stack["KAFKA_BOOTSTRAP_SERVERS"], rules_api.settings.topic_rules, [(b"junk", orjson.dumps({"x": 1}))]
    )

    async def copied():
        detail = (await rules_api.get(f"/rules/{rule_id}", headers=AS_ADMIN)).json()
        return detail if detail["version_count"] == 2 else None

    detail = await wait_for(copied, 30, interval_s=0.5, what="the version copied from the topic")
    assert detail["versions"][1]["version_id"] == version.version_id
    assert detail["versions"][1]["open_at"] == 100
    await asyncio.sleep(0)
