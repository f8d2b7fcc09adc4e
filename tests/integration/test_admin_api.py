"""The admin API against a real proxy, file state store and upstreams on loopback."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bluegreen.admin import ROUTES, AdminSettings, Route
from bluegreen.controller.machine import Start, transition
from bluegreen.routing import Colour
from bluegreen.state.model import with_rollout
from tests.integration.admin_fixtures import TOKEN, AdminEnv, running_admin
from tests.integration.proxy_fixtures import blue, eventually, green  # noqa: F401
from tests.integration.upstreams import Upstream

MUTATING = [r for r in ROUTES if r.mutating]


@pytest.fixture
async def env(tmp_path: Path, blue: Upstream, green: Upstream) -> AsyncIterator[AdminEnv]:  # noqa: F811
    async with running_admin(tmp_path / "state.json", blue, green) as admin:
        yield admin


def concrete(path: str) -> str:
    """A route path with its parameters filled in."""
    return path.replace("{name}", "new_checkout")


def valid_body(route: Route) -> dict[str, Any] | None:
    """A body the route accepts."""
    if route.operation_id == "putWeights":
        return {"green": 10}
    if route.operation_id == "putFlag":
        return {"percent": 5}
    return None


async def json_of(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


# --------------------------------------------------------------------------- probes


async def test_healthz_and_readyz_answer_ok(env: AdminEnv, expected_data_plane: str) -> None:
    health = await env.session.get(f"{env.url}/healthz")
    assert health.status == 200
    health_body = await json_of(health)
    assert health_body["status"] == "ok"
    assert health_body["data_plane"] == expected_data_plane
    ready = await env.session.get(f"{env.url}/readyz")
    body = await json_of(ready)
    assert ready.status == 200, body
    assert set(body["checks"]) == {"proxy", "state", "upstreams"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_readyz_is_503_when_no_colour_has_a_reachable_server(
    tmp_path: Path,
    blue: Upstream,  # noqa: F811
    green: Upstream,  # noqa: F811
) -> None:
    async with running_admin(tmp_path / "s.json", blue, green) as env:
        # Probe by hand: a probe racing the upstreams' shutdown leaks their sockets.
        await env.prober.stop()
        await blue.close()
        await green.close()
        for _ in range(env.prober.threshold):
            await env.prober.check_once()
        assert (await env.session.get(f"{env.url}/readyz")).status == 503
        body = await json_of(await env.session.get(f"{env.url}/readyz"))
        assert body["ready"] is False
        assert body["checks"]["upstreams"]["ok"] is False
        assert "down" in body["checks"]["upstreams"]["detail"]


async def test_metrics_expose_proxy_and_control_plane_families(env: AdminEnv) -> None:
    await (await env.put_weights(25)).read()
    await eventually(lambda: env.replica.applied_version >= 2)
    response = await env.session.get(f"{env.url}/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert 'bluegreen_weight_ratio{colour="green"} 0.25' in text
    assert 'bluegreen_weight_ratio{colour="blue"} 0.75' in text
    assert "bluegreen_state_version_applied 2.0" in text
    assert re.search(r'bluegreen_upstream_up\{colour="blue",server="127\.0\.0\.1:\d+"\} 1\.0', text)
    assert "bluegreen_requests_total" in text
    assert "bluegreen_upstream_pool_waits_total" in text


# --------------------------------------------------------------------------- state and weights


async def test_put_weights_changes_state_and_the_proxy_split(env: AdminEnv) -> None:
    response = await env.put_weights(10)
    body = await json_of(response)
    assert response.status == 200, body
    assert body["changed"] is True
    assert body["weights"]["green"] == 10
    assert body["weights"]["blue"] == 90
    assert response.headers["ETag"] == f'"{body["weights"]["version"]}"'
    state = await json_of(await env.session.get(f"{env.url}/api/v1/state"))
    assert state["green_weight_bp"] == 1000
    assert state["history"][-1]["kind"] == "weights_changed"
    # The proxy serves the new split exactly: 10 of 100 unkeyed requests go to green.
    colours = []
    for _ in range(100):
        async with env.session.get(f"{env.proxy_url}/") as answer:
            colours.append(answer.headers["X-Upstream-Colour"])
    assert colours.count("green") == 10


async def test_put_same_weights_again_changes_nothing(env: AdminEnv) -> None:
    first = await json_of(await env.put_weights(33.33))
    second = await json_of(await env.put_weights(33.33))
    assert second["changed"] is False
    assert second["weights"]["version"] == first["weights"]["version"]
    assert second["weights"]["green_bp"] == 3333


async def test_if_match_on_the_current_version_writes(env: AdminEnv) -> None:
    version = env.store.current.version
    response = await env.put_weights(50, headers={"If-Match": f'"{version}"'})
    assert response.status == 200, await response.text()
    assert (await response.json())["weights"]["version"] == version + 1


async def test_if_match_on_an_old_version_is_409_with_the_current_one(env: AdminEnv) -> None:
    old = env.store.current.version
    await (await env.put_weights(20)).read()
    response = await env.put_weights(30, headers={"If-Match": str(old)})
    body = await json_of(response)
    assert response.status == 409
    assert body["expected_version"] == old
    assert body["current_version"] == old + 1
    assert body["field"] == "If-Match"
    assert env.store.current.green_weight_bp == 2000


async def test_wait_answers_200_with_the_replicas_once_all_applied(env: AdminEnv) -> None:
    response = await env.put_weights(40, params={"wait": "5s"})
    body = await json_of(response)
    assert response.status == 200, body
    applied = body["applied"]
    assert applied["all_applied"] is True
    assert applied["behind"] == []
    assert [r["id"] for r in applied["replicas"]] == ["test-replica"]
    assert applied["replicas"][0]["applied_version"] == body["weights"]["version"]


async def test_wait_answers_202_naming_the_replica_behind(env: AdminEnv) -> None:
    # A second replica that heartbeats but never applies anything new.
    from bluegreen.state.model import ReplicaInfo

    await env.store.heartbeat(
        ReplicaInfo(
            id="stuck-replica",
            applied_version=1,
            host="elsewhere",
            pid=1,
            listen="",
            started_at="2024-01-01T00:00:00.000Z",
        )
    )
    response = await env.put_weights(60, params={"wait": "300ms"})
    body = await json_of(response)
    assert response.status == 202, body
    assert body["applied"]["all_applied"] is False
    assert body["applied"]["behind"] == ["stuck-replica"]
    assert body["changed"] is True  # the write itself committed
    assert env.store.current.green_weight_bp == 6000


async def test_replicas_summary_counts_live_replicas(env: AdminEnv) -> None:
    await (await env.put_weights(5, params={"wait": "5s"})).read()
    body = await json_of(await env.session.get(f"{env.url}/api/v1/replicas"))
    assert body["live"] == 1
    assert body["all_applied"] is True
    assert body["summary"] == f"all 1 live replica run version {body['version']}"


async def test_stats_count_requests_per_colour(env: AdminEnv) -> None:
    await (await env.put_weights(50)).read()
    for _ in range(20):
        async with env.session.get(f"{env.proxy_url}/") as answer:
            await answer.read()
    body = await json_of(await env.session.get(f"{env.url}/api/v1/stats", params={"window": "60s"}))
    blue_stats, green_stats = body["colours"]["blue"], body["colours"]["green"]
    assert blue_stats["requests_total"] == green_stats["requests_total"] == 10
    assert blue_stats["error_ratio"] == 0
    assert blue_stats["p50_seconds"] is not None
    assert body["replica"] == "test-replica"


# --------------------------------------------------------------------------- flags


async def test_flag_lifecycle_put_get_list_evaluate_delete(env: AdminEnv) -> None:
    url = f"{env.url}/api/v1/flags/new_checkout"
    created = await env.session.put(
        url,
        json={"percent": 0, "allow": ["alice@example.com"], "description": "new checkout"},
        headers=env.auth(),
    )
    body = await json_of(created)
    assert created.status == 201, body
    assert body["created"] is True
    replaced = await env.session.put(url, json={"percent": 100}, headers=env.auth())
    assert replaced.status == 200
    assert (await replaced.json())["flag"]["allow"] == []  # PUT replaces the whole flag
    got = await json_of(await env.session.get(url))
    assert got["percent"] == 100
    assert got["percent_bp"] == 10000
    listed = await json_of(await env.session.get(f"{env.url}/api/v1/flags"))
    assert [f["name"] for f in listed["flags"]] == ["new_checkout"]
    evaluated = await json_of(
        await env.session.get(f"{env.url}/api/v1/flags/evaluate", params={"key": "bob"})
    )
    assert evaluated["flags"] == ["new_checkout"]
    assert evaluated["header"] == "X-Bluegreen-Flags: new_checkout"
    deleted = await env.session.delete(url, headers=env.auth())
    assert deleted.status == 200
    assert (await deleted.json())["deleted"] == "new_checkout"
    missing = await env.session.get(url)
    assert missing.status == 404
    assert (await missing.json())["field"] == "name"


async def test_evaluate_respects_allow_list_and_colour(env: AdminEnv) -> None:
    await env.session.put(
        f"{env.url}/api/v1/flags/beta",
        json={"percent": 0, "allow": ["alice"], "colour": "green"},
        headers=env.auth(),
    )
    url = f"{env.url}/api/v1/flags/evaluate"
    on = await json_of(await env.session.get(url, params={"key": "alice", "colour": "green"}))
    off_colour = await json_of(
        await env.session.get(url, params={"key": "alice", "colour": "blue"})
    )
    off_key = await json_of(await env.session.get(url, params={"key": "bob", "colour": "green"}))
    assert on["flags"] == ["beta"]
    assert off_colour["flags"] == []
    assert off_key["flags"] == []
    assert off_key["header"] is None


async def test_deleting_a_missing_flag_is_404(env: AdminEnv) -> None:
    response = await env.session.delete(f"{env.url}/api/v1/flags/nope", headers=env.auth())
    assert response.status == 404
    assert (await response.json())["field"] == "name"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_evaluate_is_read_only(env: AdminEnv, method: str) -> None:
    response = await env.session.request(
        method, f"{env.url}/api/v1/flags/evaluate", json={}, headers=env.auth()
    )
    assert response.status == 405
    assert response.headers["Allow"] == "GET"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"green": 101}, "green"),
        ({"green": -1}, "green"),
        ({"green": 10.001}, "green"),
        ({"green": "10"}, "green"),
        ({"green": True}, "green"),
        ({"green": None}, "green"),
        ({"green": 10, "blue": 90}, "blue"),
        ({}, "green"),
        ({"green": 10, "mirror": 200}, "mirror"),
        ({"green": 10, "reason": ""}, "reason"),
        ({"green": 10, "reason": "a\nb"}, "reason"),
        ([10], "body"),
        ("10", "body"),
    ],
    ids=[
        "above-100", "negative", "finer-than-0.01", "string", "boolean", "null", "unknown-field",
        "missing", "mirror-out-of-range", "empty-reason", "control-char", "array", "string-body",
    ],
)  # fmt: skip
async def test_invalid_weights_are_422_naming_the_field(
    env: AdminEnv, body: object, field: str
) -> None:
    before = env.store.current.version
    response = await env.session.put(f"{env.url}/api/v1/weights", json=body, headers=env.auth())
    answer = await json_of(response)
    assert response.status == 422, answer
    assert answer["field"] == field
    assert answer["error"]
    assert env.store.current.version == before


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b"\xff\xfe", b"NaN", b'{"green": Infinity}', b"[" * 50_000 + b"]" * 50_000],
    ids=["truncated", "empty", "not-utf8", "nan", "infinity", "deeply-nested"],
)
async def test_bad_json_is_400(env: AdminEnv, raw: bytes) -> None:
    response = await env.session.put(
        f"{env.url}/api/v1/weights",
        data=raw,
        headers=env.auth(**{"Content-Type": "application/json"}),
    )
    if len(raw) > env.ctx.settings.max_body_bytes:
        assert response.status == 413
    else:
        assert response.status == 400
    assert (await json_of(response))["error"]


async def test_wrong_content_type_is_415(env: AdminEnv) -> None:
    response = await env.session.put(
        f"{env.url}/api/v1/weights", data=b"green=10", headers=env.auth()
    )
    assert response.status == 415
    assert (await response.json())["field"] == "Content-Type"


async def test_body_over_the_limit_is_413(
    tmp_path: Path,
    blue: Upstream,  # noqa: F811
    green: Upstream,  # noqa: F811
) -> None:
    settings = AdminSettings(max_body_bytes=1024)
    async with running_admin(tmp_path / "s.json", blue, green, settings=settings) as env:
        body = {"green": 10, "reason": "x" * 2000}
        response = await env.session.put(f"{env.url}/api/v1/weights", json=body, headers=env.auth())
        assert response.status == 413
        assert "1024" in (await json_of(response))["error"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"wait": "forever"}, "wait"), ({"wait": "301s"}, "wait"), ({"wiat": "5s"}, "wiat")],
    ids=["not-a-duration", "too-long", "unknown-parameter"],
)
async def test_bad_query_parameters_are_422(
    env: AdminEnv, params: dict[str, str], field: str
) -> None:
    response = await env.put_weights(10, params=params)
    assert response.status == 422
    assert (await response.json())["field"] == field


async def test_bad_if_match_is_422(env: AdminEnv) -> None:
    response = await env.put_weights(10, headers={"If-Match": 'W/"3"'})
    assert response.status == 422
    assert (await response.json())["field"] == "If-Match"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"percent": 100.5}, "percent"),
        ({"allow": "alice"}, "allow"),
        ({"allow": ["a", "a"]}, "allow"),
        ({"allow": [str(i) for i in range(1001)]}, "allow"),
        ({"allow": [1]}, "allow[0]"),
        ({"allow": [""]}, "allow[0]"),
        ({"colour": "red"}, "colour"),
        ({"salt": "ü"}, "salt"),
        ({"description": "x" * 1001}, "description"),
        ({"name": "other"}, "name"),
    ],
    ids=[
        "percent", "allow-not-list", "allow-duplicates", "too-many-keys", "allow-not-string",
        "allow-empty-key",
        "colour", "salt-not-ascii", "description-too-long", "name-in-body",
    ],
)  # fmt: skip
async def test_invalid_flags_are_422_naming_the_field(
    env: AdminEnv, body: dict[str, Any], field: str
) -> None:
    response = await env.session.put(f"{env.url}/api/v1/flags/f1", json=body, headers=env.auth())
    answer = await json_of(response)
    assert response.status == 422, answer
    assert answer["field"] == field


async def test_invalid_flag_name_in_the_path_is_422(env: AdminEnv) -> None:
    response = await env.session.get(f"{env.url}/api/v1/flags/-bad")
    assert response.status == 422
    assert (await response.json())["field"] == "name"


async def test_unknown_route_is_404_json(env: AdminEnv) -> None:
    response = await env.session.get(f"{env.url}/api/v2/nothing")
    body = await json_of(response)
    assert response.status == 404
    assert "openapi.json" in body["error"]


async def test_wrong_method_is_405_json_with_allow(env: AdminEnv) -> None:
    response = await env.session.post(f"{env.url}/api/v1/weights", json={"green": 1})
    body = await json_of(response)
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "PUT"}
    assert body["error"]


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("route", MUTATING, ids=[f"{r.method} {r.path}" for r in MUTATING])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
    ids=["missing", "wrong", "other-scheme", "longer", "empty"],
)
async def test_every_mutating_route_refuses_without_the_token(
    env: AdminEnv, route: Route, authorization: str | None
) -> None:
    before = env.store.current.version
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await env.session.request(
        route.method, env.url + concrete(route.path), json=valid_body(route), headers=headers
    )
    body = await json_of(response)
    assert response.status == 401, body
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert env.store.current.version == before


@pytest.mark.parametrize("route", MUTATING, ids=[f"{r.method} {r.path}" for r in MUTATING])
async def test_every_mutating_route_accepts_the_token(env: AdminEnv, route: Route) -> None:
    if route.method == "DELETE":  # something to delete
        await env.session.put(
            env.url + concrete(route.path), json={"percent": 1}, headers=env.auth()
        )
    response = await env.session.request(
        route.method, env.url + concrete(route.path), json=valid_body(route), headers=env.auth()
    )
    assert response.status in (200, 201), await response.text()


def test_the_route_table_marks_every_write_as_mutating() -> None:
    # A new PUT/POST/DELETE/PATCH route must be marked mutating to get auth.
    for route in ROUTES:
        assert route.mutating == (route.method not in ("GET", "HEAD")), route


async def test_without_a_token_loopback_writes_work_but_browsers_are_refused(
    tmp_path: Path,
    blue: Upstream,  # noqa: F811
    green: Upstream,  # noqa: F811
) -> None:
    async with running_admin(tmp_path / "s.json", blue, green, token=None) as env:
        plain = await env.session.put(f"{env.url}/api/v1/weights", json={"green": 1})
        assert plain.status == 200
        browser = await env.session.put(
            f"{env.url}/api/v1/weights",
            json={"green": 2},
            headers={"Origin": "http://evil.example"},
        )
        assert browser.status == 403
        assert "admin.token" in (await browser.json())["error"]
        assert env.store.current.green_weight_bp == 100


async def test_reads_need_no_token(env: AdminEnv) -> None:
    for route in ROUTES:
        if route.mutating or route.operation_id == "events":
            continue
        response = await env.session.get(env.url + concrete(route.path))
        assert response.status in (200, 404), (route, response.status)


# --------------------------------------------------------------------------- events


async def read_event(stream: aiohttp.StreamReader) -> dict[str, Any]:
    """The next event (comments and retry lines skipped)."""
    fields: dict[str, Any] = {}
    while True:
        line = (await stream.readline()).decode().rstrip("\n")
        if line == "":
            if "event" in fields:
                return fields
            continue
        if line.startswith(":") or line.startswith("retry:"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = json.loads(value) if name == "data" else value


async def test_events_stream_a_snapshot_then_each_weight_change(env: AdminEnv) -> None:
    async with env.session.get(f"{env.url}/api/v1/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        snapshot = await asyncio.wait_for(read_event(stream.content), 5)
        assert snapshot["event"] == "snapshot"
        assert snapshot["data"]["version"] == env.store.current.version
        await (await env.put_weights(15)).read()
        event = await asyncio.wait_for(read_event(stream.content), 5)
        assert event["event"] == "weights_changed"
        assert event["id"] == str(env.store.current.version)
        assert event["data"]["changes"]["weights"]["green"] == 15
        assert event["data"]["history"][0]["detail"]["green_weight_bp"] == {"from": 0, "to": 1500}
        await env.session.put(
            f"{env.url}/api/v1/flags/f2", json={"percent": 50}, headers=env.auth()
        )
        flag_event = await asyncio.wait_for(read_event(stream.content), 5)
        assert flag_event["event"] == "flag_set"
        assert flag_event["data"]["changes"]["flags"]["set"]["f2"]["percent"] == 50


async def test_events_replay_missed_versions_after_last_event_id(env: AdminEnv) -> None:
    start = env.store.current.version
    await (await env.put_weights(1)).read()
    await (await env.put_weights(2)).read()
    headers = {"Last-Event-ID": str(start)}
    async with env.session.get(f"{env.url}/api/v1/events", headers=headers) as stream:
        first = await asyncio.wait_for(read_event(stream.content), 5)
        second = await asyncio.wait_for(read_event(stream.content), 5)
    assert [first["id"], second["id"]] == [str(start + 1), str(start + 2)]
    assert first["data"]["replayed"] is True
    assert second["data"]["detail"]["green_weight_bp"] == {"from": 100, "to": 200}


async def test_events_send_keepalive_comments(
    tmp_path: Path,
    blue: Upstream,  # noqa: F811
    green: Upstream,  # noqa: F811
) -> None:
    settings = AdminSettings(event_heartbeat=0.05)
    async with (
        running_admin(tmp_path / "s.json", blue, green, settings=settings) as env,
        env.session.get(f"{env.url}/api/v1/events") as stream,
    ):
        lines = []
        async with asyncio.timeout(5):
            while b": keep-alive\n" not in lines:
                lines.append(await stream.content.readline())
        assert b": keep-alive\n" in lines


async def test_closing_the_admin_server_ends_open_event_streams(env: AdminEnv) -> None:
    async with env.session.get(f"{env.url}/api/v1/events") as stream:
        await asyncio.wait_for(read_event(stream.content), 5)
        async with asyncio.timeout(5):
            await env.server.close()
            assert await stream.content.read() is not None
    assert env.ctx.event_streams == 0


async def test_flag_header_reaches_the_upstream_for_the_right_keys(
    tmp_path: Path,
    blue: Upstream,  # noqa: F811
    green: Upstream,  # noqa: F811
) -> None:
    sections = {"routing": {"sticky": {"header": "X-User"}}}
    async with running_admin(tmp_path / "s.json", blue, green, sections=sections) as env:
        await env.session.put(
            f"{env.url}/api/v1/flags/beta",
            json={"percent": 0, "allow": ["alice"]},
            headers=env.auth(),
        )
        await eventually(
            lambda: "beta" in (env.replica.applied.flags if env.replica.applied else {})
        )
        for user in ("alice", "bob"):
            # Clients cannot grant themselves flags: the proxy drops what they send.
            spoofed = {"X-User": user, "X-Bluegreen-Flags": "admin_mode"}
            async with env.session.get(f"{env.proxy_url}/", headers=spoofed) as answer:
                await answer.read()
        alice, bob = blue.seen[-2], blue.seen[-1]
        assert alice.header("X-User") == "alice"
        assert alice.all("X-Bluegreen-Flags") == ["beta"]
        assert bob.all("X-Bluegreen-Flags") == []


async def test_colour_limited_flag_only_reaches_that_colour(
    tmp_path: Path,
    blue: Upstream,  # noqa: F811
    green: Upstream,  # noqa: F811
) -> None:
    sections = {"routing": {"sticky": {"header": "X-User"}}}
    async with running_admin(tmp_path / "s.json", blue, green, sections=sections) as env:
        await env.session.put(
            f"{env.url}/api/v1/flags/green_only",
            json={"percent": 100, "colour": "green"},
            headers=env.auth(),
        )
        await (await env.put_weights(50, params={"wait": "5s"})).read()
        for i in range(40):
            async with env.session.get(f"{env.proxy_url}/", headers={"X-User": f"u{i}"}) as r:
                await r.read()
        assert blue.seen
        assert green.seen
        assert all(s.header("X-Bluegreen-Flags") is None for s in blue.seen)
        assert all(s.header("X-Bluegreen-Flags") == "green_only" for s in green.seen)
        assert env.replica.applied is not None
        assert env.replica.applied.flags["green_only"].colour is Colour.GREEN


# --------------------------------------------------------------------------- Grafana dashboard

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "bluegreen-dashboard.json"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_takes_its_datasource_from_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"].lower() for p in _panels(dashboard))
    for needed in ("traffic split", "weights", "error rate", "p50 / p99"):
        assert needed in titles


async def test_dashboard_queries_only_metrics_the_admin_api_exposes(env: AdminEnv) -> None:
    text = await (await env.session.get(f"{env.url}/metrics")).text()
    exposed = set(re.findall(r"^# TYPE (\S+) (\S+)", text, flags=re.MULTILINE))
    names = set()
    for name, kind in exposed:
        names.add(name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(name + s for s in suffixes.get(kind, []))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    metric = r"\b((?:bluegreen|migration)_[a-z_]+)(?=[{\[])"  # a name before a selector
    used = {m for e in exprs for m in re.findall(metric, e)}
    assert used
    assert used <= names, used - names


async def _store_active_rollout(env: AdminEnv) -> None:
    """Persist a real rollout record (phase preflight) as the controller would."""
    rollout, _ = transition(None, Start(version="v2", current_green_bp=0), now=1000.0)
    await env.store.update(
        lambda doc: with_rollout(doc, rollout.to_json(), "test", datetime.now(UTC))
    )


async def test_weights_are_refused_while_a_rollout_owns_them(env: AdminEnv) -> None:
    await _store_active_rollout(env)
    before = env.store.current.version
    response = await env.put_weights(50)
    body = await json_of(response)
    assert response.status == 409
    assert body["field"] == "green"
    assert 'rollout phase is "preflight"' in body["error"]
    assert "force" in body["error"]
    assert env.store.current.version == before
    assert env.store.current.green_weight_bp == 0


async def test_force_overrides_an_active_rollout(env: AdminEnv) -> None:
    await _store_active_rollout(env)
    response = await env.session.put(
        f"{env.url}/api/v1/weights", json={"green": 50, "force": True}, headers=env.auth()
    )
    assert response.status == 200, await response.text()
    assert env.store.current.green_weight_bp == 5000


async def test_force_must_be_a_boolean(env: AdminEnv) -> None:
    response = await env.session.put(
        f"{env.url}/api/v1/weights", json={"green": 50, "force": "yes"}, headers=env.auth()
    )
    body = await json_of(response)
    assert response.status == 422
    assert body["field"] == "force"
