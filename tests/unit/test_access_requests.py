"""Access requests and approvals (issue 15): who may approve (never the requester, never the
subject, each approval a different person), the last approval granting in the same
transaction, denials, cancellations, expiry after the TTL, environments that ask for approvals,
and break-glass grants."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from domain.access_request import AccessRequest, Governance
from domain.access_request_expiry import RequestExpiry
from domain.authorization import Authorization
from domain.base import CommandContext, acting_as
from domain.commands import Command, ExpireAccessRequest
from domain.environment import Environment
from domain.errors import Forbidden, NotFound, PreconditionFailed, ValidationFailed
from domain.ml_repo import MlRepo
from domain.service import TenancyService
from tenantry.protocol import CommandReply
from tenantry.server.scheduler import Scheduler
from tests.clock import ControlledClock

from .support import ADMIN, ALICE, BOB, STORES, Tenancy

CAROL = "user:carol@example.com"
DAVE = "user:dave@example.com"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
WORKSPACE = "workspace:prod-eu:fraud"


def _world(clock: ControlledClock | None = None, governance: Governance | None = None) -> Tenancy:
    """Authorization on (ADMIN the tenant admin); `prod` asks for two approvals; fraud-models
    has Bob and Carol as admins; workspace prod-eu:fraud is in prod, prod-eu:lab in dev."""
    svc = TenancyService(
        STORES["popo"],
        authorization=Authorization(admins=frozenset({ADMIN})),
        clock=clock or ControlledClock(START),
        governance=governance,
    )
    assert svc.seed_default_environments()
    t = Tenancy(svc)
    t.run("update_environment", {"name": "prod", "access_approvals": 2})
    t.cluster()
    t.workspace()
    t.workspace(name="lab", environment="dev")
    t.integration()
    t.repo()
    for admin in (BOB, CAROL):
        t.run("grant_repo_access", {"repo": "fraud-models", "subject": admin, "role": "admin"})
    return t


def _request(t: Tenancy, actor: str = ALICE, **fields: object) -> str:
    body = {"repo": "fraud-models", "subject": WORKSPACE, "role": "editor", "reason": "retrain"}
    return t.allow("request_repo_access", {**body, **fields}, actor=actor).fqn


def _grants(t: Tenancy) -> dict[str, str]:
    return {s: g.role for s, g in t.aggregate(MlRepo, "fraud-models").grants.items()}


# --- environments that ask for approvals ----------------------------------------------------


def test_an_environment_asks_for_no_approvals_unless_told() -> None:
    t = _world()

    body = {"repo": "fraud-models", "subject": "workspace:prod-eu:lab", "role": "editor"}
    t.allow("grant_repo_access", body)

    assert _grants(t)["workspace:prod-eu:lab"] == "editor"


@pytest.mark.parametrize(
    ("command", "body"),
    [
        ("grant_repo_access", {"repo": "fraud-models", "subject": WORKSPACE, "role": "editor"}),
        (
            "create_workspace",
            {
                "cluster": "prod-eu",
                "name": "churn",
                "environment": "prod",
                "ml_repo_access": [{"repo": "fraud-models", "role": "editor"}],
            },
        ),
    ],
)
def test_a_direct_editor_grant_to_a_workspace_of_an_approving_environment_is_refused(
    command: str, body: dict[str, object]
) -> None:
    t = _world()

    error = t.refuse(command, body, PreconditionFailed, "precondition_failed")

    assert error.details["flow"] == "request_repo_access"
    assert error.details["approvals"] == 2
    assert "request_repo_access" in str(error)


def test_a_direct_viewer_grant_to_a_workspace_of_an_approving_environment_is_allowed() -> None:
    t = _world()

    t.allow("grant_repo_access", {"repo": "fraud-models", "subject": WORKSPACE, "role": "viewer"})


def test_an_old_environment_event_without_access_approvals_reads_as_zero() -> None:
    t = _world()
    stored = next(e for e in t.events() if e["type"] == "environment.created")
    old = {k: v for k, v in stored.items() if k not in ("position", "type", "access_approvals")}

    for event_class in (Environment.Created, Environment.Recreated, Environment.Updated):
        fields = {k: v for k, v in old.items() if k in event_class.model_fields}
        assert event_class.model_validate(fields).access_approvals == 0
    assert t.aggregate(Environment, "prod").access_approvals == 2


# --- separation of duties -------------------------------------------------------------------


def test_two_approvals_by_two_other_people_grant_in_the_same_transaction() -> None:
    t = _world()
    request = _request(t)

    first = t.allow("approve_access_request", {"request": request}, actor=BOB)
    assert first.events == ["access_request.approved"]
    assert WORKSPACE not in _grants(t)

    second = t.allow("approve_access_request", {"request": request, "comment": "ok"}, actor=CAROL)
    assert second.events == [
        "access_request.approved",
        "workspace.repo_linked",
        "ml_repo.access_granted",
    ]
    grant = t.aggregate(MlRepo, "fraud-models").grants[WORKSPACE]
    assert (grant.role, grant.granted_by) == ("editor", CAROL)
    assert grant.reason == f"access request {request}: retrain"
    assert t.aggregate(AccessRequest, request).status == "approved"


def test_the_requester_may_never_approve_their_own_request_even_as_an_admin() -> None:
    t = _world()
    request = _request(t, actor=BOB)

    error = t.refuse("approve_access_request", {"request": request}, Forbidden, "forbidden", BOB)

    assert "requester" in str(error)


def test_the_requester_may_not_approve_with_authorization_off() -> None:
    svc = TenancyService(STORES["popo"])
    assert svc.seed_default_environments()
    t = Tenancy(svc)
    t.integration()
    t.repo()
    request = _request(t, subject=DAVE, role="viewer")

    t.refuse("approve_access_request", {"request": request}, Forbidden, "forbidden", ALICE)


def test_the_subject_of_the_grant_may_not_approve_it() -> None:
    t = _world()
    request = _request(t, subject=BOB, role="editor")

    error = t.refuse("approve_access_request", {"request": request}, Forbidden, "forbidden", BOB)

    assert "subject" in str(error)


def test_a_member_of_the_team_the_grant_is_for_may_not_approve_it() -> None:
    t = _world()
    t.team("risk", ("bob@example.com",))
    request = _request(t, subject="team:risk", role="viewer")

    t.refuse("approve_access_request", {"request": request}, Forbidden, "forbidden", BOB)
    t.allow("approve_access_request", {"request": request}, actor=CAROL)


def test_two_approvals_come_from_two_different_people() -> None:
    t = _world()
    request = _request(t)
    t.allow("approve_access_request", {"request": request}, actor=BOB)

    error = t.refuse("approve_access_request", {"request": request}, Forbidden, "forbidden", BOB)

    assert "already" in str(error)
    assert WORKSPACE not in _grants(t)


def test_only_repo_admins_and_tenant_admins_approve_or_deny() -> None:
    t = _world()
    request = _request(t)

    for command, body in (
        ("approve_access_request", {"request": request}),
        ("deny_access_request", {"request": request, "reason": "no"}),
    ):
        error = t.refuse(command, body, Forbidden, "forbidden", actor=DAVE)
        assert error.details["repo"] == "fraud-models"
    t.allow("approve_access_request", {"request": request}, actor=ADMIN)


def test_an_unknown_request_is_not_found() -> None:
    t = _world()
    body = {"request": "00000000-0000-0000-0000-000000000000"}

    t.refuse("approve_access_request", body, NotFound, "not_found", actor=BOB)


# --- a request's life -----------------------------------------------------------------------


def test_a_denied_request_grants_nothing_and_takes_no_more_decisions() -> None:
    t = _world()
    request = _request(t)
    t.allow("approve_access_request", {"request": request}, actor=BOB)

    t.allow("deny_access_request", {"request": request, "reason": "not now"}, actor=CAROL)

    assert t.aggregate(AccessRequest, request).status == "denied"
    t.refuse(
        "approve_access_request", {"request": request}, PreconditionFailed, "precondition_failed"
    )
    assert WORKSPACE not in _grants(t)


def test_only_the_requester_cancels() -> None:
    t = _world()
    request = _request(t)

    t.refuse("cancel_access_request", {"request": request}, Forbidden, "forbidden", actor=ADMIN)
    t.allow("cancel_access_request", {"request": request}, actor=ALICE)

    assert t.aggregate(AccessRequest, request).status == "cancelled"
    t.refuse(
        "cancel_access_request",
        {"request": request},
        PreconditionFailed,
        "precondition_failed",
        actor=ALICE,
    )


def test_the_subject_defaults_to_the_requester() -> None:
    t = _world()

    request = _request(t, subject=None, role="viewer")

    assert t.aggregate(AccessRequest, request).subject == ALICE


def test_a_request_needs_one_approval_where_no_policy_asks_for_any() -> None:
    t = _world()
    request = _request(t, subject="workspace:prod-eu:lab")

    assert t.aggregate(AccessRequest, request).approvals_needed == 1
    result = t.allow("approve_access_request", {"request": request}, actor=BOB)

    assert result.events[0] == "access_request.approved"
    assert result.events[-1] == "ml_repo.access_granted"


def test_a_request_for_what_cannot_be_granted_is_refused_when_it_opens() -> None:
    t = _world()
    body = {"repo": "fraud-models", "role": "admin", "reason": "r"}

    t.refuse(
        "request_repo_access",
        {**body, "subject": WORKSPACE},
        PreconditionFailed,
        "precondition_failed",
        actor=ALICE,
    )
    t.refuse(
        "request_repo_access",
        {**body, "subject": "team:nobody"},
        PreconditionFailed,
        "precondition_failed",
        actor=ALICE,
    )
    t.refuse("request_repo_access", {**body, "repo": "no-such"}, NotFound, "not_found", actor=ALICE)


def test_request_ids_are_derived_from_the_command_id() -> None:
    t = _world()
    body = {"repo": "fraud-models", "role": "viewer", "reason": "r"}

    first = t.run("request_repo_access", body, actor=ALICE, command_id="c-1")
    again = t.run("request_repo_access", body, actor=ALICE, command_id="c-1")

    assert again.replayed and again.fqn == first.fqn
    assert t.types().count("access_request.opened") == 1


# --- expiry (TTL) ---------------------------------------------------------------------------


def test_a_pending_request_expires_after_its_ttl_and_takes_no_decision_after() -> None:
    clock = ControlledClock(START)
    t = _world(clock, Governance(request_ttl=timedelta(hours=1)))
    request = _request(t)
    opened = t.aggregate(AccessRequest, request)
    assert opened.expires_at == opened.opened_at + timedelta(hours=1)

    clock.set(opened.expires_at - timedelta(microseconds=2))
    t.allow("approve_access_request", {"request": request}, actor=BOB)
    clock.set(opened.expires_at)
    t.refuse(
        "approve_access_request",
        {"request": request},
        PreconditionFailed,
        "precondition_failed",
        actor=CAROL,
    )
    assert WORKSPACE not in _grants(t)


# --- durations ------------------------------------------------------------------------------


def test_a_production_grant_lasts_at_most_the_production_default() -> None:
    t = _world(governance=Governance(production_max_duration=timedelta(days=30)))

    forever = _request(t)
    longer = _request(t, duration="45d")
    shorter = _request(t, duration="12h")

    assert t.aggregate(AccessRequest, forever).grant_seconds() == 30 * 86400
    assert t.aggregate(AccessRequest, longer).grant_seconds() == 30 * 86400
    assert t.aggregate(AccessRequest, shorter).grant_seconds() == 12 * 3600


def test_a_grant_outside_production_lasts_as_asked() -> None:
    t = _world()

    forever = _request(t, subject="workspace:prod-eu:lab")
    asked = _request(t, subject="workspace:prod-eu:lab", duration="90m")

    assert t.aggregate(AccessRequest, forever).grant_seconds() is None
    assert t.aggregate(AccessRequest, asked).grant_seconds() == 90 * 60


# --- break glass ----------------------------------------------------------------------------


def test_a_tenant_admin_breaks_the_glass_with_its_own_event_then_the_grant() -> None:
    t = _world()
    body = {
        "repo": "fraud-models",
        "subject": WORKSPACE,
        "role": "editor",
        "reason": "incident 42",
        "duration": "2h",
    }

    result = t.allow("break_glass_repo_access", body)

    assert result.events == [
        "ml_repo.break_glass_granted",
        "workspace.repo_linked",
        "ml_repo.access_granted",
    ]
    assert _grants(t)[WORKSPACE] == "editor"
    alert = next(e for e in t.events() if e["type"] == "ml_repo.break_glass_granted")
    assert (alert["subject"], alert["reason"], alert["duration_seconds"]) == (
        WORKSPACE,
        "incident 42",
        7200,
    )


def test_only_a_tenant_admin_breaks_the_glass() -> None:
    t = _world()
    body = {
        "repo": "fraud-models",
        "subject": BOB,
        "role": "editor",
        "reason": "incident",
        "duration": "1h",
    }

    t.refuse("break_glass_repo_access", body, Forbidden, "forbidden", actor=BOB)


@pytest.mark.parametrize(
    "change",
    [
        {"duration": "25h"},
        {"duration": "2d"},
        {"reason": ""},
        {"reason": "   "},
        {"duration": "0h"},
    ],
)
def test_a_break_glass_grant_has_a_reason_and_lasts_at_most_a_day(
    change: dict[str, str],
) -> None:
    from domain.commands import COMMANDS

    body = {
        "repo": "fraud-models",
        "subject": BOB,
        "role": "editor",
        "reason": "incident",
        "duration": "24h",
    }
    COMMANDS["break_glass_repo_access"].model_validate(body)
    with pytest.raises(ValidationError):
        COMMANDS["break_glass_repo_access"].model_validate({**body, **change})


def _scheduler(t: Tenancy, clock: ControlledClock) -> Scheduler:
    async def send(command: Command, context: CommandContext) -> CommandReply:
        return await asyncio.to_thread(t.svc.handle, command, context)

    return Scheduler(t.svc.recorder, send, clock, kinds=[RequestExpiry])


def test_the_scheduler_expires_a_pending_request_once_at_its_deadline() -> None:
    clock = ControlledClock(START)
    t = _world(clock, Governance(request_ttl=timedelta(hours=1)))
    pending = _request(t)
    answered = _request(t, subject="workspace:prod-eu:lab")
    t.allow("approve_access_request", {"request": answered}, actor=BOB)
    deadline = t.aggregate(AccessRequest, pending).expires_at
    scheduler = _scheduler(t, clock)

    clock.set(deadline - timedelta(microseconds=1))
    assert asyncio.run(scheduler.tick()) == []
    clock.set(deadline)
    before = t.position()
    replies = asyncio.run(scheduler.tick())

    assert [r.events for r in replies] == [["access_request.expired"]]
    assert t.types(before) == ["access_request.expired"]
    expired = next(e for e in t.events(before) if e["type"] == "access_request.expired")
    assert expired["actor"] == "service:tenantry"
    assert t.aggregate(AccessRequest, pending).status == "expired"
    assert asyncio.run(scheduler.tick()) == []  # folded: nothing due any more
    restarted = _scheduler(t, clock)  # reads the log from the start: done already
    assert asyncio.run(restarted.tick()) == []


def test_an_expiry_sent_for_a_request_closed_meanwhile_changes_nothing() -> None:
    clock = ControlledClock(START)
    t = _world(clock, Governance(request_ttl=timedelta(hours=1)))
    request = _request(t)
    t.allow("cancel_access_request", {"request": request}, actor=ALICE)
    clock.advance(timedelta(hours=2))
    context = CommandContext("service:tenantry", "due#test", "c")

    reply = t.svc.handle(ExpireAccessRequest(request=request), context)

    assert reply.events == []
    assert t.aggregate(AccessRequest, request).status == "cancelled"


def test_only_tenantry_itself_expires_a_request() -> None:
    t = _world()
    request = _request(t)
    for actor in (ADMIN, "service:storage-provisioner"):
        with pytest.raises(Forbidden):
            t.svc.handle(ExpireAccessRequest(request=request), CommandContext(actor, "x", "c"))


# --- the repo's access policy ------------------------------------------------------------------


def test_a_repo_that_asks_for_approvals_refuses_any_direct_grant() -> None:
    t = _world()
    t.run("set_repo_access_policy", {"repo": "fraud-models", "approvals": 1})
    body = {"repo": "fraud-models", "subject": DAVE, "role": "viewer"}

    error = t.refuse("grant_repo_access", body, PreconditionFailed, "precondition_failed")

    assert error.details["approvals"] == 1
    request = _request(t, subject=DAVE, role="viewer")
    assert t.aggregate(AccessRequest, request).approvals_needed == 1
    t.allow("approve_access_request", {"request": request}, actor=BOB)
    assert _grants(t)[DAVE] == "viewer"


def test_the_higher_of_the_repo_and_the_environment_is_needed() -> None:
    t = _world()
    t.run("set_repo_access_policy", {"repo": "fraud-models", "approvals": 3})

    request = _request(t)

    assert t.aggregate(AccessRequest, request).approvals_needed == 3


def test_the_repo_policy_caps_what_a_request_may_ask_and_what_it_grants() -> None:
    t = _world()
    t.run("set_repo_access_policy", {"repo": "fraud-models", "approvals": 1, "max_duration": "1d"})
    body = {"repo": "fraud-models", "subject": DAVE, "role": "viewer", "reason": "r"}

    t.refuse(
        "request_repo_access",
        {**body, "duration": "2d"},
        ValidationFailed,
        "validation_error",
        actor=ALICE,
    )
    unasked = _request(t, subject=DAVE, role="viewer")
    assert t.aggregate(AccessRequest, unasked).grant_seconds() == 86400
    t.allow("approve_access_request", {"request": unasked}, actor=BOB)
    grant = t.aggregate(MlRepo, "fraud-models").grants[DAVE]
    assert grant.expires_at is not None
    assert grant.expires_at - grant.granted_at <= timedelta(days=1)


def test_the_last_approval_grants_until_the_deadline_asked() -> None:
    clock = ControlledClock(START)
    t = _world(clock)
    request = _request(t, duration="90m")
    t.allow("approve_access_request", {"request": request}, actor=BOB)
    clock.set(START + timedelta(hours=1))

    t.allow("approve_access_request", {"request": request}, actor=CAROL)

    grant = t.aggregate(MlRepo, "fraud-models").grants[WORKSPACE]
    shown = t.aggregate(AccessRequest, request)
    assert grant.expires_at is not None
    assert (
        timedelta(0)
        <= grant.expires_at - (START + timedelta(hours=2, minutes=30))
        < timedelta(milliseconds=1)
    )
    approved = [e for e in t.events() if e["type"] == "access_request.approved"][-1]
    assert approved["granted"] is True
    assert shown.status == "approved"


def test_a_request_is_pending_up_to_its_deadline_and_not_at_it() -> None:
    t = _world(governance=Governance(request_ttl=timedelta(hours=1)))
    request = t.aggregate(AccessRequest, _request(t))
    deadline = request.expires_at

    with pytest.raises(PreconditionFailed):
        request.approve(BOB, None, deadline, False, None)
    assert request.expire(deadline - timedelta(microseconds=1)) is False
    with acting_as(CommandContext("service:tenantry", "due#x", "c")):
        request.approve(BOB, None, deadline - timedelta(microseconds=1), False, None)
        assert request.expire(deadline) is True
    assert request.status == "expired"
