"""Alert rules (SPEC §9), admin scope: `GET /rules`, `GET /rules/{rule_id}` (with its versions),
`PUT /rules/{rule_id}` (a new version), `DELETE /rules/{rule_id}` (a version with `enabled: false`).

A version is never changed or removed: each write adds one, which every worker applies within seconds, without a
restart, to readings whose ts_event is at or after its `effective_from` (api/rule_history.py, rule_feed.py). A version
effective in the past applies only to events processed after the workers learned it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from telemetrypulse.access import Scope
from telemetrypulse.api.auth import AdminKey, auth_errors, scope_first_route
from telemetrypulse.api.deps import QueryTime, SensorTypeQuery, StateDep
from telemetrypulse.api.errors import InvalidParameter, NotFound
from telemetrypulse.api.routes.common import BAD_BODY, NOT_FOUND, READ_ERRORS
from telemetrypulse.api.rule_schemas import RuleDetail, RuleIn, RuleList, RuleSummary
from telemetrypulse.models import iso_utc, now_us, to_us
from telemetrypulse.rules import RULE_ID_PATTERN, RuleVersion, problems_of

router = APIRouter(
    prefix="/rules",
    tags=["rules"],
    responses={**READ_ERRORS, **auth_errors(Scope.admin)},
    route_class=scope_first_route(Scope.admin),
)

RuleIdPath = Annotated[
    str,
    Path(
        pattern=RULE_ID_PATTERN,
        description="The rule's id (1-64 chars of [A-Za-z0-9._-])",
        examples=["lab-co2"],
    ),
]
EffectiveQuery = Annotated[
    QueryTime | None,
    Query(description="Event time from which the rule is off (ISO-8601 with offset); default: now"),
]


def _detail(versions: list[dict]) -> RuleDetail:
    latest = versions[-1]
    return RuleDetail.model_validate(latest | {"version_count": len(versions), "versions": versions})


@router.get("", response_model=RuleList, summary="Every rule, as its latest version defines it")
async def list_rules(state: StateDep, _key: AdminKey, sensor_type: SensorTypeQuery = None) -> RuleList:
    by_rule: dict[str, list[dict]] = {}
    for row in await state.rules.versions():
        by_rule.setdefault(row["rule_id"], []).append(row)
    items = [
        RuleSummary.model_validate(versions[-1] | {"version_count": len(versions)})
        for versions in by_rule.values()
        if sensor_type is None or versions[-1]["sensor_type"] == sensor_type.value
    ]
    return RuleList(items=items)


@router.get(
    "/{rule_id}", response_model=RuleDetail, summary="One rule with all its versions", responses=NOT_FOUND
)
async def get_rule(rule_id: RuleIdPath, state: StateDep, _key: AdminKey) -> RuleDetail:
    versions = await state.rules.versions(rule_id)
    if not versions:
        raise NotFound(f"rule {rule_id!r} is unknown")
    return _detail(versions)


@router.put(
    "/{rule_id}",
    response_model=RuleDetail,
    summary="Write a new version of a rule (creates the rule if new)",
    responses={201: {"model": RuleDetail, "description": "Created: the rule's first version"}, **BAD_BODY},
)
async def put_rule(
    rule_id: RuleIdPath, body: RuleIn, response: Response, state: StateDep, key: AdminKey
) -> RuleDetail:
    """200 with the rule and its versions when it adds a version, 201 when the rule is new. Every worker applies
    it within seconds to readings with ts_event at or after `effective_from` (default: now)."""
    effective = body.effective_from
    arrived = now_us()
    version = RuleVersion(
        version_id=str(uuid.uuid4()),
        rule_id=rule_id,
        sensor_type=body.sensor_type.value,
        direction=body.direction,
        open_at=body.open_at,
        resolve_at=body.resolve_at,
        site_id=body.site_id,
        zone_id=body.zone_id,
        device_id=body.device_id,
        for_s=body.for_s,
        severity=body.severity,
        enabled=body.enabled,
        effective_from=iso_utc(arrived if effective is None else to_us(effective)),
        created_at=iso_utc(arrived),
        created_by=key.name,
    )
    problems = problems_of(version)
    if problems:
        raise InvalidParameter(
            "; ".join(f"body.{field}: {message}" for field, message in problems),
            errors=[{"location": f"body.{field}", "message": message} for field, message in problems],
        )
    existed = bool(await state.rules.versions(rule_id))
    await state.rules.write(version)
    if not existed:
        response.status_code = status.HTTP_201_CREATED
    return _detail(await state.rules.versions(rule_id))


@router.delete(
    "/{rule_id}",
    response_model=RuleDetail,
    summary="Turn a rule off: a new version with enabled false",
    responses=NOT_FOUND,
)
async def delete_rule(
    rule_id: RuleIdPath, state: StateDep, key: AdminKey, effective_from: EffectiveQuery = None
) -> RuleDetail:
    """The rule's history is kept: readings before `effective_from` (default: now) are still judged by the
    versions before. An episode it opened resolves by whatever rule applies to the next reading, or at that reading
    when none does."""
    versions = await state.rules.versions(rule_id)
    if not versions:
        raise NotFound(f"rule {rule_id!r} is unknown")
    latest = versions[-1]
    arrived = now_us()
    moment = arrived if effective_from is None else to_us(effective_from)
    version = RuleVersion(
        version_id=str(uuid.uuid4()),
        rule_id=rule_id,
        sensor_type=latest["sensor_type"],
        direction=latest["direction"],
        open_at=latest["open_at"],
        resolve_at=latest["resolve_at"],
        site_id=latest["site_id"],
        zone_id=latest["zone_id"],
        device_id=latest["device_id"],
        for_s=latest["for_s"],
        severity=latest["severity"],
        enabled=False,
        effective_from=iso_utc(moment),
        created_at=iso_utc(arrived),
        created_by=key.name,
    )
    if problems_of(version):  # a stored version is valid, and so is its copy
        raise InvalidParameter(f"rule {rule_id!r} cannot be turned off: {problems_of(version)}")
    await state.rules.write(version)
    return _detail(await state.rules.versions(rule_id))
