"""Every query over a real nats-server, after writes sent as commands on the same bus: answers,
read-your-writes with `min_position`, `timeout`, `not_found` and `validation_error`."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError

from projections.query_params import PARAMS
from projections.store import ViewStore
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import serve_views
from tenantry.server.wakeups import wake_on_save
from tests.integration.conftest import Bus
from tests.integration.views import Views
from tests.integration.world import FRAUD, NAMESPACES, PROD_EU

# --- every query, after writes ------------------------------------------------------------


async def test_directory_queries_see_the_writes_they_wait_for(views: Views) -> None:
    last = await views.build_world()
    answer = await views.query("list_environments", {"min_position": last})
    assert answer["ok"] and answer["position"] >= last
    assert [e["name"] for e in answer["data"]] == ["dev", "prod", "staging"]
    clusters = await views.data("list_clusters", environment="prod")
    assert clusters == [PROD_EU]
    fraud = await views.data("get_workspace", fqn="prod-eu:fraud")
    assert fraud == FRAUD
    assert await views.data("list_workspaces", production=True) == [fraud]
    assert [w["fqn"] for w in await views.data("list_workspaces")] == [
        "dev-us:sandbox",
        "prod-eu:fraud",
    ]
    assert [w["fqn"] for w in await views.data("list_workspaces", production=False)] == [
        "dev-us:sandbox"
    ]
    repo = await views.data("get_ml_repo", name="fraud-models")
    assert repo["location"] == "s3://ml-bucket/repos/fraud-models/"
    assert repo["status"] == "ready"
    assert repo["grants"] == await views.data("repo_access", repo="fraud-models")
    assert [r["name"] for r in await views.data("list_ml_repos")] == [
        "churn-models",
        "fraud-models",
    ]


async def test_status_follows_what_the_provisioner_records(views: Views) -> None:
    await views.send(
        "register_cluster",
        {"name": "prod-eu", "region": "eu-west-1", "provider": "aws-eks", "environments": ["prod"]},
    )
    created = await views.send(
        "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
    )
    workspace = await views.query(
        "get_workspace", {"fqn": "prod-eu:fraud", "min_position": created}
    )
    assert workspace["data"]["status"] == "pending"
    recorded = await views.send(
        "record_namespace_provisioned",
        {"workspace": "prod-eu:fraud", "namespace": "fraud"},
        actor=NAMESPACES,
    )
    workspace = await views.query(
        "get_workspace", {"fqn": "prod-eu:fraud", "min_position": recorded}
    )
    assert workspace["data"]["status"] == "ready"
    assert workspace["position"] >= recorded


async def test_effective_access_through_teams_workspaces_and_applications(views: Views) -> None:
    last = await views.build_world()
    answer = await views.query(
        "subject_access", {"subject": "user:cy@example.com", "min_position": last}
    )
    assert answer["data"] == [{"repo": "fraud-models", "role": "editor", "via": "team:risk"}]
    assert await views.data("subject_access", subject="app:prod-eu:fraud:scorer") == [
        {"repo": "fraud-models", "role": "editor", "via": "workspace:prod-eu:fraud"}
    ]
    assert await views.data(
        "check_access", subject="app:prod-eu:fraud:scorer", repo="fraud-models", action="write"
    ) == {"allowed": True, "role": "editor", "via": "workspace:prod-eu:fraud"}
    assert await views.data(
        "check_access", subject="workspace:dev-us:sandbox", repo="churn-models", action="write"
    ) == {"allowed": False, "role": "viewer", "via": "direct"}
    assert [
        r["name"] for r in await views.data("list_ml_repos", subject="workspace:dev-us:sandbox")
    ] == ["churn-models"]
    # Out of the team, cy holds nothing; the application goes, its access with it.
    await views.send("remove_team_member", {"team": "risk", "user": "cy@example.com"})
    removed = await views.send(
        "remove_application", {"workspace": "prod-eu:fraud", "name": "scorer"}
    )
    answer = await views.query(
        "check_access",
        {
            "subject": "user:cy@example.com",
            "repo": "fraud-models",
            "action": "read",
            "min_position": removed,
        },
    )
    assert answer["data"] == {"allowed": False, "role": None, "via": None}
    assert await views.data("subject_access", subject="app:prod-eu:fraud:scorer") == []


async def test_environment_tags_follow_a_retag(views: Views) -> None:
    last = await views.build_world()
    tags = await views.query("environment_tags", {"min_position": last})
    by_name = {t["environment"]: t for t in tags["data"]}
    assert by_name["prod"] == {
        "environment": "prod",
        "is_production": True,
        "optimize_for": "availability",
        "clusters": ["prod-eu"],
        "workspaces": ["prod-eu:fraud"],
        "applications": ["prod-eu:fraud:scorer"],
    }
    assert by_name["dev"]["clusters"] == ["dev-us", "prod-eu"]
    assert by_name["dev"]["workspaces"] == ["dev-us:sandbox"]
    retagged = await views.send(
        "set_workspace_environment", {"workspace": "prod-eu:fraud", "environment": "dev"}
    )
    answer = await views.query("environment_tags", {"environment": "dev", "min_position": retagged})
    assert answer["data"] == [
        {
            "environment": "dev",
            "is_production": False,
            "optimize_for": "cost",
            "clusters": ["dev-us", "prod-eu"],
            "workspaces": ["dev-us:sandbox", "prod-eu:fraud"],
            "applications": ["prod-eu:fraud:scorer"],
        }
    ]
    prod = await views.data("environment_tags", environment="prod")
    assert (prod[0]["workspaces"], prod[0]["applications"]) == ([], [])
    fraud = await views.data("get_workspace", fqn="prod-eu:fraud")
    assert (fraud["environment"], fraud["is_production"]) == ("dev", False)
    assert await views.data("list_workspaces", production=True) == []


async def test_audit_log_filters_and_pages(views: Views) -> None:
    last = await views.build_world()
    everything = await views.query("audit_log", {"limit": 1000, "min_position": last})
    events = everything["data"]["events"]
    assert everything["data"]["next"] is None
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(events))
    # Paging: `next` is the `after` of the next page; the pages add up to everything.
    pages, after = [], None
    while True:
        page = await views.data("audit_log", limit=5, after=after)
        pages += page["events"]
        if page["next"] is None:
            break
        assert len(page["events"]) == 5
        after = page["next"]
    assert pages == events
    by_actor = await views.data("audit_log", actor="service:namespaces")
    assert [e["type"] for e in by_actor["events"]] == ["workspace.namespace_provisioned"]
    by_type = await views.data("audit_log", type="ml_repo.access_granted", limit=2)
    assert len(by_type["events"]) == 2 and by_type["next"] == by_type["events"][1]["position"]
    by_fqn = await views.data("audit_log", fqn="churn-models")
    assert {e["type"] for e in by_fqn["events"]} == {"ml_repo.created", "ml_repo.access_granted"}
    cut = events[len(events) // 2]["occurred_at"]
    since = await views.data("audit_log", since=cut, limit=1000)
    until = await views.data("audit_log", until=cut, limit=1000)
    assert sorted(e["position"] for e in since["events"] + until["events"]) == [
        e["position"] for e in events
    ]
    moment = datetime.fromisoformat(cut)
    assert all(datetime.fromisoformat(e["occurred_at"]) >= moment for e in since["events"])
    assert all(datetime.fromisoformat(e["occurred_at"]) < moment for e in until["events"])


# --- errors -------------------------------------------------------------------------------


async def test_unknown_names_are_not_found(views: Views) -> None:
    for name, params in [
        ("get_workspace", {"fqn": "prod-eu:nope"}),
        ("get_ml_repo", {"name": "no-such-repo"}),
        ("repo_access", {"repo": "no-such-repo"}),
        ("check_access", {"subject": "team:risk", "repo": "no-such-repo", "action": "read"}),
    ]:
        reply = await views.raw(name, params)
        answer = json.loads(reply.data)
        assert answer["error"]["code"] == "not_found", (name, answer)
        assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "404"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("no_such_query", b"{}"),
        ("list_environments", b"{"),
        ("list_environments", b"[1, 2]"),
        ("list_environments", b'"text"'),
        ("list_environments", b"\xff\xfe"),
        ("list_environments", b'{"surprise": 1}'),
        ("list_environments", b'{"min_position": -1}'),
        ("list_environments", b'{"min_position": "12"}'),
        ("list_environments", b'{"min_position": 1, "min_position_timeout": 31}'),
        ("list_workspaces", b'{"production": "yes"}'),
        ("get_workspace", b"{}"),
        ("get_workspace", b'{"fqn": "no-colon"}'),
        ("get_ml_repo", b'{"name": 42}'),
        ("subject_access", b'{"subject": "robot:x"}'),
        ("subject_access", b'{"subject": "app:prod-eu:fraud"}'),
        ("check_access", b'{"subject": "team:risk", "repo": "fraud-models", "action": "delete"}'),
        ("audit_log", b'{"limit": 1001}'),
        ("audit_log", b'{"limit": 0}'),
        ("audit_log", b'{"since": "yesterday"}'),
        ("audit_log", b'{"since": "2026-01-01T00:00:00"}'),
        ("audit_log", b'{"type": "DROP TABLE"}'),
        ("list_environments", b'{"x": "' + b"a" * (64 * 1024) + b'"}'),
    ],
)
async def test_bad_input_is_a_validation_error(views: Views, name: str, body: bytes) -> None:
    reply = await views.raw(name, body)
    answer = json.loads(reply.data)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "validation_error"
    assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "400"
    assert len(reply.data) < 8000  # the input is never echoed back
    # ...and the endpoint carries on answering.
    assert (await views.query("list_environments"))["ok"]


# --- read-your-writes ----------------------------------------------------------------------


async def test_min_position_waits_for_the_runner_to_apply_it(views: Views) -> None:
    await views.pause()
    position = await views.send("create_team", {"name": "risk", "members": ["bo@example.com"]})
    before = await views.query("audit_log", {"type": "team.created"})
    assert before["position"] < position and before["data"]["events"] == []
    # Asked before the views have it: the answer waits until they do, then includes it.
    waiting = asyncio.create_task(
        views.query("list_environments", {"min_position": position, "min_position_timeout": 10})
    )
    done, _ = await asyncio.wait({waiting}, timeout=0.2)
    assert not done, "answered before the views had the position"
    views.resume()
    answer = await waiting
    assert answer["ok"] and answer["position"] >= position
    tracked = await views.query("audit_log", {"type": "team.created", "min_position": position})
    assert [e["fqn"] for e in tracked["data"]["events"]] == ["risk"]


async def test_min_position_times_out_naming_the_position_reached(views: Views) -> None:
    reached = await views.send("create_environment", {"name": "qa"})
    await views.query("list_environments", {"min_position": reached})
    await views.pause()
    wanted = await views.send("create_environment", {"name": "uat"})
    reply = await views.raw(
        "list_environments", {"min_position": wanted, "min_position_timeout": 0.2}
    )
    answer = json.loads(reply.data)
    assert answer["error"]["code"] == "timeout"
    assert answer["error"]["details"]["position"] == reached
    assert answer["error"]["details"]["min_position"] == wanted
    assert str(reached) in answer["error"]["message"]
    assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "504"


async def test_serve_views_answers_until_stopped_then_drains(
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> None:
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'served' / 'views.sqlite'}")
    stop, wakeup = asyncio.Event(), asyncio.Event()
    bus.service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
    nc: Client = await nats.connect(nats_server.url)
    serving = asyncio.create_task(serve_views(bus.service.recorder, store, nc, stop, wakeup))
    answer = await bus.command("create_environment", {"name": "qa"})
    reply = await _until_answered(bus.nc, {"min_position": answer["position"]})
    assert "qa" in [e["name"] for e in reply["data"]]
    assert reply["position"] >= answer["position"]
    stop.set()
    await asyncio.wait_for(serving, 10)
    with pytest.raises(NoRespondersError):
        await bus.nc.request("tenantry.query.list_environments", b"{}", timeout=2)
    await nc.drain()
    store.close()


async def _until_answered(nc: Client, body: dict[str, Any]) -> dict[str, Any]:
    """The first answer once the endpoint has subscribed (serve_views starts in the background)."""
    for _ in range(200):
        try:
            reply = await nc.request(
                "tenantry.query.list_environments", json.dumps(body).encode(), timeout=10
            )
        except NoRespondersError:
            await asyncio.sleep(0.01)
            continue
        answer: dict[str, Any] = json.loads(reply.data)
        return answer
    raise AssertionError("serve_views never answered")


# --- one result model per query, shared with the client -----------------------------------

_SAMPLES: dict[str, dict[str, Any]] = {
    "get_workspace": {"fqn": "prod-eu:fraud"},
    "get_ml_repo": {"name": "fraud-models"},
    "repo_access": {"repo": "fraud-models"},
    "subject_access": {"subject": "user:bo@example.com"},
    "check_access": {"subject": "user:bo@example.com", "repo": "fraud-models", "action": "read"},
    "access_report": {"as_of": "2999-01-01T00:00:00Z"},
    "access_changes": {"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"},
    "get_team": {"name": "risk"},
    "get_storage_integration": {"name": "s3-main"},
}

# Views the world leaves empty, and what fills them first (issue 15: access reviews).
_REVIEW = (
    "open_access_review",
    {"name": "q4", "scope": {"all": True}, "due": "2999-01-01T00:00:00Z"},
)
_FIRST: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "list_access_reviews": [_REVIEW],
    "get_access_review": [_REVIEW],
    "list_access_review_items": [_REVIEW],
}
_SAMPLES["get_access_review"] = {"name": "q4"}


def _keys(value: Any) -> Any:
    """The shape of an answer: its keys, all the way down (values left out)."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return None


@pytest.mark.parametrize("name", sorted(PARAMS))
async def test_every_answer_is_exactly_its_querys_result_model(views: Views, name: str) -> None:
    """What the server sends is what the one result model declares (no field the client
    would drop, none it would wait for in vain): the model both sides read."""
    last = await views.build_world()
    for command, body in _FIRST.get(name, []):
        last = await views.send(command, body)
    sample = _SAMPLES.get(name, {})
    if name == "get_access_request":  # its id is the one its opening answered: listed here
        listed = await views.data("list_access_requests", min_position=last)
        sample = {"request": listed[0]["request"]}
    data = await views.data(name, min_position=last, **sample)
    assert data, f"{name} answered nothing to compare"
    read = PARAMS[name].result.validate_python(data)
    assert _keys(PARAMS[name].result.dump_python(read, mode="json")) == _keys(data), name
