"""Access requests over a real bus (nats-server, SQLite store, the views fed by the runner):
request → approvals → grant, the queries that list and show them ("I can approve" included),
the refusals (forbidden, precondition_failed) that write nothing, and the events on the stream
a chat bot would subscribe to."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Bus
from tests.integration.views import Views

ADMIN = "user:root@example.com"  # the admin `views.send` acts as
ALICE = "user:alice@example.com"
BOB = "user:bob@example.com"
CAROL = "user:carol@example.com"
WORKSPACE = "workspace:prod-eu:fraud"


DANA = "user:dana@example.com"  # a tenant admin too, admin of no repo
ERIN = "user:erin@example.com"


@pytest.fixture
def admins() -> frozenset[str] | None:
    return frozenset({ADMIN, DANA})


async def _world(views: Views) -> None:
    """prod asks for two approvals; fraud-models has Bob and Carol as admins."""
    for name, body in (
        ("update_environment", {"name": "prod", "access_approvals": 2}),
        (
            "register_cluster",
            {
                "name": "prod-eu",
                "region": "eu-west-1",
                "provider": "generic",
                "environments": ["dev", "prod"],
            },
        ),
        ("create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}),
        (
            "register_storage_integration",
            {"name": "local", "provider": "local", "storage_root": "file:///srv/ml"},
        ),
        ("create_ml_repo", {"name": "fraud-models", "storage_integration": "local"}),
        ("grant_repo_access", {"repo": "fraud-models", "subject": BOB, "role": "admin"}),
        ("grant_repo_access", {"repo": "fraud-models", "subject": CAROL, "role": "admin"}),
    ):
        await views.send(name, body)


async def _refused(bus: Bus, name: str, body: dict[str, Any], actor: str, code: str) -> None:
    before = bus.stored_positions()
    answer = await bus.command(name, body, actor=actor)
    assert not answer["ok"]
    assert answer["error"]["code"] == code, answer
    assert bus.stored_positions() == before


async def test_a_production_grant_needs_two_approvals_by_two_other_people(
    bus: Bus, views: Views
) -> None:
    await _world(views)
    direct = {"repo": "fraud-models", "subject": WORKSPACE, "role": "editor"}
    before = bus.stored_positions()
    refused = await bus.command("grant_repo_access", direct, actor=ADMIN)
    assert refused["error"]["code"] == "precondition_failed"
    assert refused["error"]["details"]["flow"] == "request_repo_access"
    assert bus.stored_positions() == before

    opened = await bus.command(
        "request_repo_access", {**direct, "reason": "retrain", "duration": "8h"}, actor=ALICE
    )
    assert opened["ok"], opened
    assert opened["events"] == ["access_request.opened"]
    request = opened["fqn"]

    shown = await views.data("get_access_request", request=request, min_position=opened["position"])
    assert (shown["status"], shown["requester"], shown["approvals_needed"]) == (
        "pending",
        ALICE,
        2,
    )
    assert shown["duration_seconds"] == 8 * 3600
    mine = await views.data("list_access_requests", approver=BOB)
    assert [r["request"] for r in mine] == [request]
    assert await views.data("list_access_requests", approver=ALICE) == []

    await _refused(bus, "approve_access_request", {"request": request}, ALICE, "forbidden")
    first = await bus.command("approve_access_request", {"request": request}, actor=BOB)
    assert first["events"] == ["access_request.approved"]
    await _refused(bus, "approve_access_request", {"request": request}, BOB, "forbidden")
    assert (
        await views.data("list_access_requests", approver=BOB, min_position=first["position"]) == []
    )

    last = await bus.command(
        "approve_access_request", {"request": request, "comment": "ok"}, actor=CAROL
    )
    assert last["ok"], last
    assert "ml_repo.access_granted" in last["events"]
    check = await views.data(
        "check_access",
        subject=WORKSPACE,
        repo="fraud-models",
        action="write",
        min_position=last["position"],
    )
    assert check["allowed"] is True
    grants = await views.data("repo_access", repo="fraud-models")
    held = {g["subject"]: g for g in grants}
    assert held[WORKSPACE]["role"] == "editor"
    assert held[WORKSPACE]["granted_by"] == CAROL
    closed = await views.data("get_access_request", request=request)
    assert closed["status"] == "approved"
    assert [a["approver"] for a in closed["approvals"]] == [BOB, CAROL]
    assert closed["decided_by"] == CAROL
    assert closed["grant_expires_at"] is not None
    approved = await views.data("list_access_requests", status="approved", repo="fraud-models")
    assert [r["request"] for r in approved] == [request]


async def test_a_tenant_admin_may_approve_any_request_but_their_own(bus: Bus, views: Views) -> None:
    """ "Requests I can approve" follows `RequestApprover`: a tenant admin of no repo sees the
    pending requests of others, not their own; the command agrees."""
    await _world(views)
    ask = {"repo": "fraud-models", "role": "viewer", "reason": "a look"}
    alices = (await bus.command("request_repo_access", ask, actor=ALICE))["fqn"]
    danas = await bus.command("request_repo_access", ask, actor=DANA)
    assert danas["ok"], danas

    mine = await views.data("list_access_requests", approver=DANA, min_position=danas["position"])
    assert [r["request"] for r in mine] == [alices]
    bobs = await views.data("list_access_requests", approver=BOB)
    assert [r["request"] for r in bobs] == [alices, danas["fqn"]]
    assert await views.data("list_access_requests", approver=ALICE) == []

    await _refused(bus, "approve_access_request", {"request": danas["fqn"]}, DANA, "forbidden")
    approved = await bus.command("approve_access_request", {"request": alices}, actor=DANA)
    assert approved["ok"], approved
    assert (
        await views.data("list_access_requests", approver=DANA, min_position=approved["position"])
        == []
    )


async def test_an_admin_whose_grant_reached_its_deadline_may_approve_nothing(
    bus: Bus, views: Views
) -> None:
    """ "Requests I can approve" asks today's access (its deadlines), as the command does: from
    the deadline of Erin's admin grant on, Erin is no approver, expiry event or not."""
    await _world(views)
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    erin_admin = {"repo": "fraud-models", "subject": ERIN, "role": "admin"}
    granted = await bus.command(
        "grant_repo_access", {**erin_admin, "expires_at": deadline.isoformat()}, actor=ADMIN
    )
    assert granted["ok"], granted
    ask = {"repo": "fraud-models", "role": "viewer", "reason": "a look"}
    opened = await bus.command("request_repo_access", ask, actor=ALICE)
    assert opened["ok"], opened
    mine = await views.data("list_access_requests", approver=ERIN, min_position=opened["position"])
    assert [r["request"] for r in mine] == [opened["fqn"]]

    while datetime.now(UTC) <= deadline:  # noqa: ASYNC110 (the wall clock, not a state)
        await asyncio.sleep(0.05)
    assert await views.data("list_access_requests", approver=ERIN) == []
    await _refused(bus, "approve_access_request", {"request": opened["fqn"]}, ERIN, "forbidden")


async def test_deny_and_cancel_close_a_request(bus: Bus, views: Views) -> None:
    await _world(views)
    ask = {"repo": "fraud-models", "role": "viewer", "reason": "a look"}
    denied = (await bus.command("request_repo_access", ask, actor=ALICE))["fqn"]
    cancelled = (await bus.command("request_repo_access", ask, actor=ALICE))["fqn"]

    await _refused(
        bus, "deny_access_request", {"request": denied, "reason": "no"}, ALICE, "forbidden"
    )
    answer = await bus.command(
        "deny_access_request", {"request": denied, "reason": "no"}, actor=BOB
    )
    assert answer["events"] == ["access_request.denied"]
    await _refused(bus, "cancel_access_request", {"request": cancelled}, BOB, "forbidden")
    answer = await bus.command("cancel_access_request", {"request": cancelled}, actor=ALICE)
    assert answer["events"] == ["access_request.cancelled"]

    rows = await views.data(
        "list_access_requests", requester=ALICE, min_position=answer["position"]
    )
    assert {r["request"]: r["status"] for r in rows} == {
        denied: "denied",
        cancelled: "cancelled",
    }
    assert await views.data("list_access_requests", status="pending") == []
    missing = await views.query(
        "get_access_request", {"request": "00000000-0000-0000-0000-000000000000"}
    )
    assert missing["error"]["code"] == "not_found"


async def test_break_glass_is_a_tenant_admins_and_an_event_of_its_own(
    bus: Bus, views: Views
) -> None:
    await _world(views)
    body = {
        "repo": "fraud-models",
        "subject": WORKSPACE,
        "role": "editor",
        "reason": "incident 42",
        "duration": "1h",
    }
    await _refused(bus, "break_glass_repo_access", body, BOB, "forbidden")

    answer = await bus.command("break_glass_repo_access", body, actor=ADMIN)

    assert answer["ok"], answer
    assert answer["events"][0] == "ml_repo.break_glass_granted"
    assert answer["events"][-1] == "ml_repo.access_granted"
    log = await views.data(
        "audit_log", type="ml_repo.break_glass_granted", min_position=answer["position"]
    )
    [alert] = log["events"]
    assert (alert["actor"], alert["data"]["reason"]) == (ADMIN, "incident 42")
    grants = await views.data("repo_access", repo="fraud-models")
    assert {g["subject"]: g["role"] for g in grants}[WORKSPACE] == "editor"


async def test_an_environment_shows_its_approvals(bus: Bus, views: Views) -> None:
    position = await views.send("create_environment", {"name": "qa", "access_approvals": 1})

    rows = await views.data("list_environments", min_position=position)

    assert {e["name"]: e["access_approvals"] for e in rows} == {
        "dev": 0,
        "staging": 0,
        "prod": 0,
        "qa": 1,
    }
