"""Every bad parameter gets its 4xx with a message naming it — never a 500."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

LONG_ID = "d" * 65

BAD_QUERIES = [
    # (path, params, status, words the message must contain)
    ("/trends", {"window": "2h"}, 422, ["query.window", "5m", "1h", "1d"]),
    ("/trends", {"window": "1H"}, 422, ["query.window"]),
    ("/trends", {"format": "xml"}, 422, ["query.format", "csv"]),
    ("/trends", {"format": "csv", "window": "1w"}, 422, ["query.window"]),
    (
        "/trends",
        {"window": "1h", "start": "2020-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"},
        422,
        ["10000"],
    ),
    ("/trends", {"sensor_type": "pressure"}, 422, ["query.sensor_type"]),
    ("/trends", {"start": "yesterday"}, 422, ["query.start", "ISO-8601"]),
    ("/trends", {"start": "2024-05-01T12:00:00"}, 422, ["query.start", "offset"]),
    ("/trends", {"end": "2024-05-01"}, 422, ["query.end", "offset"]),
    ("/trends", {"start": "1969-12-31T23:00:00Z"}, 422, ["query.start", "range"]),
    ("/trends", {"end": "3000-01-02T00:00:00Z"}, 422, ["query.end", "range"]),
    ("/trends", {"start": "0001-01-01T00:00:00+05:00"}, 422, ["query.start"]),
    (
        "/trends",
        {"start": "2024-05-01T13:00:00Z", "end": "2024-05-01T12:00:00Z"},
        422,
        ["query.start", "before"],
    ),
    ("/trends", {"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T12:00:00Z"}, 422, ["before"]),
    ("/trends", {"start": "2020-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}, 422, ["10000 windows"]),
    ("/trends", {"zone_id": "z1"}, 422, ["query.zone_id", "site_id"]),
    ("/trends", {"site_id": "bad site!"}, 422, ["query.site_id"]),
    ("/trends", {"device_id": LONG_ID}, 422, ["query.device_id"]),
    ("/trends", {"device_id": ""}, 422, ["query.device_id"]),
    ("/heatmap", {}, 422, ["query.sensor_type", "required"]),
    ("/heatmap", {"sensor_type": "co2", "metric": "median"}, 422, ["query.metric"]),
    ("/heatmap", {"sensor_type": "co2", "window": "1m"}, 422, ["query.window"]),
    ("/heatmap", {"sensor_type": "co2", "at": "noon"}, 422, ["query.at"]),
    ("/heatmap", {"sensor_type": "co2", "at": "2024-05-01T12:00:00"}, 422, ["query.at", "offset"]),
    ("/heatmap", {"sensor_type": "co2", "at": "9999-12-31T23:59:59Z"}, 422, ["query.at", "range"]),
    ("/heatmap", {"sensor_type": "CO2"}, 422, ["query.sensor_type"]),
    ("/alerts", {"limit": "0"}, 422, ["query.limit"]),
    ("/alerts", {"limit": "1001"}, 422, ["query.limit"]),
    ("/alerts", {"limit": "ten"}, 422, ["query.limit"]),
    ("/alerts", {"status": "closed"}, 422, ["query.status"]),
    ("/alerts", {"cursor": "not-a-cursor"}, 422, ["query.cursor"]),
    ("/alerts", {"cursor": "MTIzNDU"}, 422, ["query.cursor"]),
    ("/alerts", {"cursor": "x" * 201}, 422, ["query.cursor"]),
    ("/alerts", {"since": "2024-13-01T00:00:00Z"}, 422, ["query.since"]),
    ("/alerts", {"site_id": "a/b"}, 422, ["query.site_id"]),
    ("/alerts", {"sensor_type": "noise"}, 422, ["query.sensor_type"]),
    ("/alerts", {"format": "csv", "limit": "0"}, 422, ["query.limit"]),
    ("/alerts", {"format": "csv", "cursor": "nope"}, 422, ["query.cursor"]),
    ("/alerts", {"format": "CSV"}, 422, ["query.format"]),
    ("/heatmap", {"sensor_type": "co2", "window": "1w"}, 422, ["query.window"]),
    ("/devices/site-a.z1.d0/readings", {}, 422, ["query.start", "required"]),
    ("/devices/site-a.z1.d0/readings", {"start": "noon"}, 422, ["query.start"]),
    ("/devices/site-a.z1.d0/readings", {"start": "2024-05-01T12:00:00"}, 422, ["query.start", "offset"]),
    (
        "/devices/site-a.z1.d0/readings",
        {"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T11:00:00Z"},
        422,
        ["query.start", "before"],
    ),
    (
        "/devices/site-a.z1.d0/readings",
        {"start": "2024-05-01T12:00:00Z", "end": "2024-06-02T12:00:00Z"},
        422,
        ["31 days"],
    ),
    ("/devices/site-a.z1.d0/readings", {"start": "2024-05-01T12:00:00Z", "limit": "0"}, 422, ["query.limit"]),
    (
        "/devices/site-a.z1.d0/readings",
        {"start": "2024-05-01T12:00:00Z", "limit": "10001"},
        422,
        ["query.limit"],
    ),
    (
        "/devices/site-a.z1.d0/readings",
        {"start": "2024-05-01T12:00:00Z", "cursor": "???"},
        422,
        ["query.cursor"],
    ),
    (
        "/devices/site-a.z1.d0/readings",
        {"start": "2024-05-01T12:00:00Z", "sensor_type": "noise"},
        422,
        ["query.sensor_type"],
    ),
    (
        "/devices/site-a.z1.d0/readings",
        {"start": "2024-05-01T12:00:00Z", "format": "parquet"},
        422,
        ["query.format"],
    ),
    ("/devices/bad%20id/readings", {"start": "2024-05-01T12:00:00Z"}, 422, ["path.device_id"]),
    ("/devices/never-seen/readings", {"start": "2024-05-01T12:00:00Z"}, 404, ["never-seen"]),
    ("/devices/never-seen/readings", {"start": "2024-05-01T12:00:00Z", "format": "csv"}, 404, ["never-seen"]),
    ("/devices", {"limit": "0"}, 422, ["query.limit"]),
    ("/devices", {"limit": "100000"}, 422, ["query.limit"]),
    ("/devices", {"zone_id": "z 1"}, 422, ["query.zone_id"]),
    ("/devices", {"after": "é"}, 422, ["query.after"]),
    ("/status/live", {"site_id": "x*y"}, 422, ["query.site_id"]),
    (f"/devices/{LONG_ID}", {}, 422, ["path.device_id"]),
    ("/devices/bad%20id", {}, 422, ["path.device_id"]),
    ("/devices/never-seen", {}, 404, ["never-seen"]),
    ("/alerts/stream", {"since_seq": "-1"}, 422, ["query.since_seq"]),
    ("/alerts/stream", {"heartbeat_s": "0"}, 422, ["query.heartbeat_s"]),
    ("/no/such/route", {}, 404, ["Not Found"]),
]


@pytest.mark.parametrize(
    "path,params,status,words", BAD_QUERIES, ids=[f"{p}?{q}" for p, q, _, _ in BAD_QUERIES]
)
async def test_bad_parameter_gets_its_4xx(client, path, params, status, words):
    response = await client.get(path, params=params)

    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "errors"}
    for word in words:
        assert word in body["detail"], body["detail"]


async def test_bad_last_event_id_is_422_before_the_stream_starts(client):
    response = await client.get("/alerts/stream", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422
    assert "last-event-id" in response.json()["detail"]


async def test_wrong_method_is_405(client):
    response = await client.delete("/alerts")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_a_plus_sent_unencoded_still_means_plus(client):
    # `?start=2024-05-01T14:00:00+02:00` typed into a URL arrives with a space instead of `+`.
    response = await client.get("/trends?start=2024-05-01T14:00:00+02:00&window=15m")
    assert response.status_code == 200
    assert response.json()["start"] == "2024-05-01T12:00:00Z"
