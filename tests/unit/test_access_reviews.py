"""Access reviews: the snapshot, who may decide which item, revokes applied at once, closing (by
a person, or at due as the system), and a closed review that never changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.access_review import AccessReview
from domain.access_review_due import AccessReviewsDue
from domain.authorization import Authorization
from domain.base import CommandContext
from domain.commands import COMMANDS, CloseDueAccessReview, Command
from domain.errors import AlreadyExists, Forbidden, NotFound, PreconditionFailed, ValidationFailed
from domain.ml_repo import MlRepo
from domain.service import TenancyService
from domain.team import Team
from tenantry.protocol import CommandReply
from tenantry.server.scheduler import Scheduler
from tests.clock import ControlledClock

from .support import ADMIN, ALICE, BOB, STORES, Tenancy

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DUE = START + timedelta(days=14)
CAROL = "user:carol@example.com"
DAVE = "user:dave@example.com"


@pytest.fixture
def clock() -> ControlledClock:
    return ControlledClock(START)


def _tenancy(clock: ControlledClock, admins: frozenset[str] | None) -> Tenancy:
    svc = TenancyService(STORES["popo"], authorization=Authorization(admins=admins), clock=clock)
    assert svc.seed_default_environments()
    return Tenancy(svc)


@pytest.fixture
def world(clock: ControlledClock) -> Tenancy:
    """Authorization on, ADMIN the tenant admin. `fraud-models`: ADMIN and ALICE admins, BOB
    editor, team risk (CAROL, DAVE) viewer, workspace prod-eu:fraud (prod) editor.
    `churn-models`: ADMIN admin, CAROL viewer (used by a dev workspace)."""
    t = _tenancy(clock, frozenset({ADMIN}))
    t.cluster()
    t.integration()
    t.repo()
    t.repo("churn-models")
    t.team("risk", ("carol@example.com", "dave@example.com"))
    t.workspace(ml_repo_access=[{"repo": "fraud-models", "role": "editor"}])
    t.workspace(
        name="churn", environment="dev", ml_repo_access=[{"repo": "churn-models", "role": "viewer"}]
    )
    for repo, subject, role in (
        ("fraud-models", ALICE, "admin"),
        ("fraud-models", BOB, "editor"),
        ("fraud-models", "team:risk", "viewer"),
        ("churn-models", CAROL, "viewer"),
    ):
        t.run("grant_repo_access", {"repo": repo, "subject": subject, "role": role})
    return t


def _open(t: Tenancy, name: str = "q4", **fields: Any) -> Any:
    body = {
        "name": name,
        "scope": {"repos": ["fraud-models"]},
        "due": DUE,
        **fields,
    }
    return t.allow("open_access_review", body)


def _items(t: Tenancy, name: str = "q4") -> dict[tuple[str, str], str]:
    """(repo or team:<name>, subject) -> item id."""
    review = t.aggregate(AccessReview, name)
    return {
        (item.repo or f"team:{item.team}", item.subject): item.id for item in review.items.values()
    }


def _decide(t: Tenancy, item: str, decision: str, actor: str = ADMIN, name: str = "q4") -> Any:
    body = {"review": name, "item": item, "decision": decision, "reason": "quarterly"}
    return t.run("decide_access_review_item", body, actor=actor)


# --- the snapshot -------------------------------------------------------------------------


def test_the_snapshot_holds_every_grant_in_scope_and_the_members_of_teams_holding_one(
    world: Tenancy,
) -> None:
    reply = _open(world)

    review = world.aggregate(AccessReview, "q4")
    assert reply.events == ["access_review.opened", "access_review.items_snapshotted"]
    assert [(i.id, i.kind, i.repo or i.team, i.subject, i.role) for i in review.items.values()] == [
        ("i1", "grant", "fraud-models", "team:risk", "viewer"),
        ("i2", "grant", "fraud-models", ALICE, "admin"),
        ("i3", "grant", "fraud-models", ADMIN, "admin"),
        ("i4", "grant", "fraud-models", BOB, "editor"),
        ("i5", "grant", "fraud-models", "workspace:prod-eu:fraud", "editor"),
        ("i6", "membership", "risk", CAROL, None),
        ("i7", "membership", "risk", DAVE, None),
    ]
    assert review.items["i6"].repos == ("fraud-models",)
    repo = world.aggregate(MlRepo, "fraud-models")
    team = world.aggregate(Team, "risk")
    opened = next(e for e in world.events() if e["type"] == "access_review.opened")
    assert opened["read_versions"] == {
        "ml_repo:fraud-models": repo.version,
        "team:risk": team.version,
    }


def test_an_environment_scope_covers_the_repos_its_workspaces_use(world: Tenancy) -> None:
    _open(world, "dev-q4", scope={"environment": "dev"})

    review = world.aggregate(AccessReview, "dev-q4")
    assert review.repos == ("churn-models",)
    assert sorted(i.subject for i in review.items.values()) == [
        ADMIN,
        CAROL,
        "workspace:prod-eu:churn",
    ]


def test_the_all_scope_covers_every_live_repo(world: Tenancy) -> None:
    world.repo("gone-models")
    world.run("delete_ml_repo", {"name": "gone-models"})

    _open(world, "everything", scope={"all": True})

    assert world.aggregate(AccessReview, "everything").repos == ("churn-models", "fraud-models")


def test_grants_past_their_deadline_are_not_in_the_snapshot(
    world: Tenancy, clock: ControlledClock
) -> None:
    world.run(
        "grant_repo_access",
        {"repo": "churn-models", "subject": DAVE, "role": "viewer", "duration": "1h"},
    )
    world.run(
        "grant_repo_access",
        {"repo": "churn-models", "subject": BOB, "role": "viewer", "duration": "30d"},
    )
    clock.advance(timedelta(hours=2))

    _open(world, scope={"repos": ["churn-models"]})

    items = world.aggregate(AccessReview, "q4").items.values()
    assert DAVE not in {i.subject for i in items}
    bob = next(i for i in items if i.subject == BOB)
    assert bob.expires_at is not None and bob.expires_at > clock.time


def test_a_scope_naming_a_repo_that_does_not_exist_is_refused(world: Tenancy) -> None:
    world.refuse(
        "open_access_review",
        {"name": "q4", "scope": {"repos": ["ghost-models"]}, "due": DUE},
        PreconditionFailed,
        "precondition_failed",
    )


def test_a_due_time_in_the_past_is_a_validation_error(world: Tenancy) -> None:
    world.refuse(
        "open_access_review",
        {"name": "q4", "scope": {"all": True}, "due": START - timedelta(days=1)},
        ValidationFailed,
        "validation_error",
    )


def test_a_review_name_is_used_once(world: Tenancy) -> None:
    _open(world)
    world.refuse(
        "open_access_review",
        {"name": "q4", "scope": {"all": True}, "due": DUE},
        AlreadyExists,
        "already_exists",
    )


def test_only_a_tenant_admin_opens_a_review(world: Tenancy) -> None:
    world.refuse(
        "open_access_review",
        {"name": "q4", "scope": {"repos": ["fraud-models"]}, "due": DUE},
        Forbidden,
        "forbidden",
        actor=ALICE,
    )


# --- who decides --------------------------------------------------------------------------


def test_nobody_decides_an_item_about_their_own_access(world: Tenancy) -> None:
    _open(world)
    items = _items(world)
    body = {"review": "q4", "decision": "keep", "reason": "mine"}

    for actor, item in (
        (ADMIN, items[("fraud-models", ADMIN)]),  # not even a tenant admin
        (ALICE, items[("fraud-models", ALICE)]),
        (CAROL, items[("team:risk", CAROL)]),  # their membership
    ):
        world.refuse(
            "decide_access_review_item",
            {**body, "item": item},
            Forbidden,
            "forbidden",
            actor=actor,
        )


def test_a_member_does_not_decide_their_teams_grant(world: Tenancy) -> None:
    world.run("grant_repo_access", {"repo": "fraud-models", "subject": CAROL, "role": "admin"})
    _open(world)
    team_grant = _items(world)[("fraud-models", "team:risk")]

    world.refuse(
        "decide_access_review_item",
        {"review": "q4", "item": team_grant, "decision": "keep", "reason": "ours"},
        Forbidden,
        "forbidden",
        actor=CAROL,
    )
    # Nor after leaving the team: they were a member when the review opened.
    world.run("remove_team_member", {"team": "risk", "user": "carol@example.com"})
    world.refuse(
        "decide_access_review_item",
        {"review": "q4", "item": team_grant, "decision": "keep", "reason": "ours"},
        Forbidden,
        "forbidden",
        actor=CAROL,
    )


def test_a_repo_admin_decides_items_of_their_repo_only(world: Tenancy) -> None:
    _open(world, "both", scope={"repos": ["fraud-models", "churn-models"]})
    items = _items(world, "both")

    assert _decide(world, items[("fraud-models", BOB)], "keep", ALICE, "both").events == [
        "access_review.item_decided"
    ]
    world.refuse(
        "decide_access_review_item",
        {
            "review": "both",
            "item": items[("churn-models", CAROL)],
            "decision": "keep",
            "reason": "x",
        },
        Forbidden,
        "forbidden",
        actor=ALICE,
    )
    world.refuse(
        "decide_access_review_item",
        {
            "review": "both",
            "item": items[("fraud-models", ALICE)],
            "decision": "keep",
            "reason": "x",
        },
        Forbidden,
        "forbidden",
        actor=BOB,  # an editor
    )


# --- decisions ----------------------------------------------------------------------------


def test_a_revoke_is_applied_at_once_with_the_reviews_reason(world: Tenancy) -> None:
    _open(world)
    before = world.position()

    reply = _decide(world, _items(world)[("fraud-models", BOB)], "revoke", ALICE)

    assert reply.events == ["ml_repo.access_revoked", "access_review.item_decided"]
    revoked = [e for e in world.events(before) if e["type"] == "ml_repo.access_revoked"]
    assert revoked[0]["reason"] == "review q4: quarterly"
    assert revoked[0]["actor"] == ALICE
    assert BOB not in world.aggregate(MlRepo, "fraud-models").grants
    decision = world.aggregate(AccessReview, "q4").decisions[_items(world)[("fraud-models", BOB)]]
    assert (decision.decision, decision.decided_by, decision.outcome) == (
        "revoke",
        ALICE,
        "revoked",
    )


def test_revoking_a_membership_removes_the_member_from_the_team(world: Tenancy) -> None:
    _open(world)

    reply = _decide(world, _items(world)[("team:risk", CAROL)], "revoke", ALICE)

    assert reply.events == ["team.member_removed", "access_review.item_decided"]
    assert world.aggregate(Team, "risk").members == ["dave@example.com"]


def test_revoking_a_workspace_grant_unlinks_the_workspace(world: Tenancy) -> None:
    _open(world)

    reply = _decide(world, _items(world)[("fraud-models", "workspace:prod-eu:fraud")], "revoke")

    assert reply.events == [
        "ml_repo.access_revoked",
        "workspace.repo_unlinked",
        "access_review.item_decided",
    ]


def test_a_revoke_of_access_already_gone_records_the_decision_only(world: Tenancy) -> None:
    _open(world)
    world.run("revoke_repo_access", {"repo": "fraud-models", "subject": BOB})

    reply = _decide(world, _items(world)[("fraud-models", BOB)], "revoke", ALICE)

    assert reply.events == ["access_review.item_decided"]
    item = _items(world)[("fraud-models", BOB)]
    assert world.aggregate(AccessReview, "q4").decisions[item].outcome == "already gone"


def test_a_person_revoking_the_last_admin_is_refused(world: Tenancy) -> None:
    _open(world, scope={"repos": ["churn-models"]})
    # ADMIN may not decide their own item; another tenant admin may, and the repo refuses.
    world.svc.authorization = Authorization(admins=frozenset({ADMIN, "user:root@example.com"}))

    world.refuse(
        "decide_access_review_item",
        {
            "review": "q4",
            "item": _items(world)[("churn-models", ADMIN)],
            "decision": "revoke",
            "reason": "x",
        },
        PreconditionFailed,
        "precondition_failed",
        actor="user:root@example.com",
    )


def test_deciding_twice_is_refused(world: Tenancy) -> None:
    _open(world)
    item = _items(world)[("fraud-models", BOB)]
    _decide(world, item, "keep", ALICE)

    world.refuse(
        "decide_access_review_item",
        {"review": "q4", "item": item, "decision": "revoke", "reason": "changed my mind"},
        PreconditionFailed,
        "precondition_failed",
        actor=ALICE,
    )


def test_an_unknown_review_or_item_is_not_found(world: Tenancy) -> None:
    _open(world)
    for review, item in (("nope", "i1"), ("q4", "i99")):
        world.refuse(
            "decide_access_review_item",
            {"review": review, "item": item, "decision": "keep", "reason": "x"},
            NotFound,
            "not_found",
        )


# --- closing ------------------------------------------------------------------------------


def test_closing_gives_undecided_items_on_undecided_as_the_systems_decision(
    world: Tenancy,
) -> None:
    _open(world, on_undecided="revoke")
    items = _items(world)
    _decide(world, items[("fraud-models", BOB)], "keep", ALICE)

    reply = world.run("close_access_review", {"review": "q4"})

    review = world.aggregate(AccessReview, "q4")
    assert review.closed
    automatic = {i: d for i, d in review.decisions.items() if d.automatic}
    assert set(automatic) == set(items.values()) - {items[("fraud-models", BOB)]}
    assert {d.decision for d in automatic.values()} == {"revoke"}
    grants = world.aggregate(MlRepo, "fraud-models").grants
    # Everyone's access ended but BOB's (kept) and one admin's: the last admin stays, and the
    # system's decision says why.
    assert BOB in grants
    admins = [s for s, g in grants.items() if g.role == "admin"]
    assert len(admins) == 1
    assert automatic[items[("fraud-models", admins[0])]].outcome.startswith("not revoked:")
    assert world.aggregate(Team, "risk").members == []
    assert reply.events[-1] == "access_review.closed"


def test_a_closed_review_never_changes(world: Tenancy) -> None:
    _open(world)
    world.run("close_access_review", {"review": "q4"})

    world.refuse(
        "decide_access_review_item",
        {"review": "q4", "item": "i4", "decision": "revoke", "reason": "late"},
        PreconditionFailed,
        "precondition_failed",
        actor=ALICE,
    )
    world.refuse("close_access_review", {"review": "q4"}, PreconditionFailed, "precondition_failed")


def test_past_due_a_person_can_no_longer_decide(world: Tenancy, clock: ControlledClock) -> None:
    _open(world)
    clock.set(DUE)

    world.refuse(
        "decide_access_review_item",
        {
            "review": "q4",
            "item": _items(world)[("fraud-models", BOB)],
            "decision": "keep",
            "reason": "x",
        },
        PreconditionFailed,
        "precondition_failed",
        actor=ALICE,
    )


# --- at due: the scheduler ----------------------------------------------------------------


def _scheduler(t: Tenancy, clock: ControlledClock) -> Scheduler:
    async def send(command: Command, context: CommandContext) -> CommandReply:
        return await asyncio.to_thread(t.svc.handle, command, context)

    return Scheduler(t.svc.recorder, send, clock, kinds=[AccessReviewsDue])


def test_the_scheduler_closes_a_review_at_due_once(world: Tenancy, clock: ControlledClock) -> None:
    _open(world, on_undecided="revoke")
    _decide(world, _items(world)[("fraud-models", BOB)], "keep", ALICE)
    scheduler = _scheduler(world, clock)
    assert asyncio.run(scheduler.tick()) == []  # not due yet
    clock.set(DUE)

    replies = asyncio.run(scheduler.tick())

    assert [r.events[-1] for r in replies] == ["access_review.closed"]
    closed = [e for e in world.events() if e["type"] == "access_review.closed"]
    assert [(e["actor"], e["at_due"]) for e in closed] == [("service:tenantry", True)]
    automatic = [e for e in world.events() if e["type"] == "access_review.item_decided"][1:]
    assert {(e["actor"], e["automatic"], e["decision"]) for e in automatic} == {
        ("service:tenantry", True, "revoke")
    }
    assert BOB in world.aggregate(MlRepo, "fraud-models").grants  # kept by ALICE
    # Again, or by a restarted scheduler (from the log's start): nothing more is written.
    before = world.position()
    assert asyncio.run(scheduler.tick()) == []
    assert asyncio.run(_scheduler(world, clock).tick()) == []  # its log holds the close
    assert world.types(before) == []


def test_a_review_closed_by_hand_is_not_closed_again_at_due(
    world: Tenancy, clock: ControlledClock
) -> None:
    _open(world)
    world.run("close_access_review", {"review": "q4"})
    clock.set(DUE)
    before = world.position()

    replies = asyncio.run(_scheduler(world, clock).tick())

    assert replies == [] and world.types(before) == []


def test_only_tenantry_itself_closes_at_due(world: Tenancy, clock: ControlledClock) -> None:
    _open(world)
    clock.set(DUE)
    command = CloseDueAccessReview(review="q4")
    before = world.position()
    for actor in (ADMIN, ALICE):
        with pytest.raises(Forbidden):
            world.svc.handle(command, CommandContext(actor, f"c-{actor}", "c"))
    assert world.position() == before
    assert "close_due_access_review" not in COMMANDS  # not on the bus
