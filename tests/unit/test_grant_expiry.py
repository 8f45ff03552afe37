"""Expiring grants and the repo access policy in the domain: deadlines given as `expires_at` or
`duration`, capped by `access_policy.max_duration`, allowing nothing from the deadline on, and
the scheduler's `ml_repo.access_expired`, recorded once."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.persistence import StoredEvent
from pydantic import ValidationError

from domain.authorization import SYSTEM_ACTOR, Authorization
from domain.base import CommandContext
from domain.commands import Command, ExpireRepoAccess, GrantRepoAccess, SetRepoAccessPolicy
from domain.errors import Forbidden, NotFound, ValidationFailed
from domain.grant_expiry import GrantExpiry
from domain.mapper import JsonTranscoder, PydanticMapper
from domain.ml_repo import AccessPolicy, MlRepo
from domain.names import parse_duration
from domain.service import TenancyService
from tenantry.protocol import CommandReply
from tenantry.server.scheduler import Scheduler
from tests.clock import ControlledClock

from .support import ADMIN, ALICE, BOB, STORES, Tenancy

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REPO = "fraud-models"


@pytest.fixture
def clock() -> ControlledClock:
    return ControlledClock(T0)


def _world(clock: ControlledClock, authorization: Authorization | None = None) -> Tenancy:
    t = Tenancy(TenancyService(STORES["sqlite"], authorization=authorization, clock=clock))
    t.integration()
    t.repo(REPO)
    return t


@pytest.fixture
def world(clock: ControlledClock) -> Tenancy:
    return _world(clock)


def _grant(t: Tenancy, subject: str = BOB, role: str = "editor", actor: str = ADMIN, **deadline):
    body = {"repo": REPO, "subject": subject, "role": role, **deadline}
    return t.run("grant_repo_access", body, actor=actor)


def _repo(t: Tenancy) -> MlRepo:
    return t.aggregate(MlRepo, REPO)


def _expire(
    t: Tenancy, subject: str, expires_at: datetime, command_id: str = "due#x"
) -> CommandReply:
    command = ExpireRepoAccess(repo=REPO, subject=subject, expires_at=expires_at)
    return t.svc.handle(command, CommandContext(SYSTEM_ACTOR, command_id, command_id))


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "length"),
    [("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)), ("30d", timedelta(days=30))],
)
def test_a_duration_is_a_count_and_a_unit(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize(
    "text", ["", "0m", "12", "h", "1.5h", "-1d", "12H", "12 h", " 12h", "12h\n", "3651d", "1w"]
)
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# --- deadlines on grants -------------------------------------------------------------------


def test_a_duration_sets_the_deadline_from_the_services_clock(world: Tenancy) -> None:
    reply = _grant(world, duration="12h")

    grant = _repo(world).grants[BOB]
    assert grant.expires_at is not None
    # Counted from the moment the command was decided (a reading or two of the clock before
    # its event's time).
    assert T0 <= grant.expires_at - timedelta(hours=12) <= grant.granted_at
    assert reply.events == ["ml_repo.access_granted"]
    stored = world.events()[-2]
    assert datetime.fromisoformat(stored["expires_at"]) == grant.expires_at


def test_expires_at_is_kept_as_given(world: Tenancy) -> None:
    _grant(world, expires_at="2026-06-02T00:00:00+02:00")

    assert _repo(world).grants[BOB].expires_at == datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


def test_expires_at_and_duration_together_are_refused() -> None:
    body = {"repo": REPO, "subject": BOB, "role": "viewer", "duration": "1h"}
    body["expires_at"] = "2030-01-01T00:00:00Z"
    with pytest.raises(ValidationError, match="not both"):
        GrantRepoAccess.model_validate_json(json.dumps(body))


def test_expires_at_needs_an_offset() -> None:
    with pytest.raises(ValidationError):
        GrantRepoAccess.model_validate_json(
            json.dumps(
                {"repo": REPO, "subject": BOB, "role": "viewer", "expires_at": "2030-01-01T00:00"}
            )
        )


@pytest.mark.parametrize("expires_at", [T0 - timedelta(days=1), T0])
def test_a_deadline_not_in_the_future_is_refused(world: Tenancy, expires_at: datetime) -> None:
    world.refuse(
        "grant_repo_access",
        {"repo": REPO, "subject": BOB, "role": "viewer", "expires_at": expires_at},
        ValidationFailed,
        "validation_error",
    )


def test_from_the_deadline_on_the_grant_allows_nothing(
    world: Tenancy, clock: ControlledClock
) -> None:
    _grant(world, role="admin", duration="1h")
    repo = _repo(world)
    deadline = repo.grants[BOB].expires_at
    assert deadline is not None

    assert repo.is_admin(BOB, deadline - timedelta(microseconds=1))
    assert not repo.is_admin(BOB, deadline)
    assert repo.grant_in_force(BOB, deadline - timedelta(microseconds=1)) is not None
    assert repo.grant_in_force(BOB, deadline) is None


def test_an_expired_admin_grant_no_longer_authorizes(clock: ControlledClock) -> None:
    t = _world(clock, Authorization(admins=frozenset({ADMIN})))
    _grant(t, role="admin", duration="1h")
    _grant(t, subject=ALICE, role="viewer", actor=BOB)  # BOB is an admin of the repo
    deadline = _repo(t).grants[BOB].expires_at
    assert deadline is not None

    clock.set(deadline)
    t.refuse(
        "grant_repo_access",
        {"repo": REPO, "subject": ALICE, "role": "editor"},
        Forbidden,
        "forbidden",
        actor=BOB,
    )


def test_revoking_a_grant_past_its_deadline_finds_nothing(
    world: Tenancy, clock: ControlledClock
) -> None:
    _grant(world, duration="1h")
    clock.set(T0 + timedelta(hours=2))

    world.refuse("revoke_repo_access", {"repo": REPO, "subject": BOB}, NotFound, "not_found")


def test_extending_is_granting_again_with_a_later_deadline(world: Tenancy) -> None:
    _grant(world, duration="1h")
    before = world.position()

    _grant(world, duration="2h")
    assert world.types(before) == ["ml_repo.access_granted"]
    extended = _repo(world).grants[BOB]
    assert extended.expires_at is not None
    assert extended.expires_at - timedelta(hours=2) <= extended.granted_at

    _grant(world)  # no deadline: until revoked
    assert _repo(world).grants[BOB].expires_at is None


def test_the_same_grant_and_deadline_again_changes_nothing(world: Tenancy) -> None:
    deadline = (T0 + timedelta(days=1)).isoformat()
    _grant(world, expires_at=deadline)
    before = world.position()

    reply = _grant(world, expires_at=deadline)

    assert reply.events == []
    assert world.types(before) == []


def test_a_grant_after_an_unrecorded_deadline_records_the_expiry_first(
    world: Tenancy, clock: ControlledClock
) -> None:
    _grant(world, duration="1h")
    clock.set(T0 + timedelta(hours=3))

    reply = _grant(world, role="viewer")

    assert reply.events == ["ml_repo.access_expired", "ml_repo.access_granted"]
    granted = world.events()[-2]
    assert granted["previous_role"] is None


def test_events_stored_before_deadlines_read_as_without_one(world: Tenancy) -> None:
    _grant(world)
    stored = [
        n
        for n in world.svc.recorder.select_notifications(None, 100_000)
        if n.topic.endswith("MlRepo.AccessGranted")
    ][-1]
    state = json.loads(stored.state)
    del state["expires_at"]
    old = StoredEvent(
        stored.originator_id, stored.originator_version, stored.topic, json.dumps(state).encode()
    )

    event = PydanticMapper(JsonTranscoder()).to_domain_event(old)

    assert isinstance(event, MlRepo.AccessGranted)
    assert event.expires_at is None


# --- the access policy ---------------------------------------------------------------------


def test_the_access_policy_is_set_by_event_and_caps_grants(world: Tenancy) -> None:
    assert _repo(world).access_policy == AccessPolicy()
    reply = world.run(
        "set_repo_access_policy", {"repo": REPO, "approvals": 2, "max_duration": "1d"}
    )
    assert reply.events == ["ml_repo.access_policy_set"]
    assert _repo(world).access_policy == AccessPolicy(2, timedelta(days=1))

    for deadline in ({"duration": "25h"}, {}, {"expires_at": (T0 + timedelta(days=2)).isoformat()}):
        error = world.refuse(
            "grant_repo_access",
            {"repo": REPO, "subject": BOB, "role": "viewer", **deadline},
            ValidationFailed,
            "validation_error",
        )
        assert error.details["max_duration"] == "1d"
    assert _grant(world, duration="1d").events == ["ml_repo.access_granted"]


def test_the_same_policy_again_changes_nothing(world: Tenancy) -> None:
    world.run("set_repo_access_policy", {"repo": REPO, "approvals": 1})
    assert world.run("set_repo_access_policy", {"repo": REPO, "approvals": 1}).events == []


@pytest.mark.parametrize(
    "body",
    [{"approvals": 4}, {"approvals": -1}, {"approvals": True}, {"max_duration": "forever"}],
)
def test_a_policy_out_of_bounds_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SetRepoAccessPolicy.model_validate_json(json.dumps({"repo": REPO, **body}))


def test_only_a_repo_or_tenant_admin_sets_the_policy(clock: ControlledClock) -> None:
    t = _world(clock, Authorization(admins=frozenset({ADMIN})))
    _grant(t, subject=ALICE, role="admin")
    t.refuse(
        "set_repo_access_policy", {"repo": REPO, "approvals": 1}, Forbidden, "forbidden", actor=BOB
    )
    assert t.run("set_repo_access_policy", {"repo": REPO, "approvals": 1}, actor=ALICE).events


# --- recording the expiry ------------------------------------------------------------------


def test_the_expiry_is_recorded_once_the_deadline_passed(
    world: Tenancy, clock: ControlledClock
) -> None:
    _grant(world, duration="1h")
    deadline = _repo(world).grants[BOB].expires_at
    assert deadline is not None

    assert _expire(world, BOB, deadline, "due#early").events == []  # not yet
    clock.set(deadline)
    reply = _expire(world, BOB, deadline, "due#1")

    assert reply.events == ["ml_repo.access_expired"]
    expired = world.events()[-2]
    assert expired["actor"] == SYSTEM_ACTOR
    assert expired["previous_role"] == "editor"
    assert BOB not in _repo(world).grants
    assert _expire(world, BOB, deadline, "due#1").replayed
    assert _expire(world, BOB, deadline, "due#2").events == []  # already done


def test_an_expiry_for_a_replaced_grant_changes_nothing(
    world: Tenancy, clock: ControlledClock
) -> None:
    _grant(world, duration="1h")
    first = _repo(world).grants[BOB].expires_at
    assert first is not None
    _grant(world, duration="3h")
    clock.set(T0 + timedelta(hours=2))

    assert _expire(world, BOB, first).events == []
    assert BOB in _repo(world).grants


def test_only_tenantry_itself_records_an_expiry(world: Tenancy, clock: ControlledClock) -> None:
    _grant(world, duration="1h")
    deadline = _repo(world).grants[BOB].expires_at
    assert deadline is not None
    clock.set(deadline)
    command = ExpireRepoAccess(repo=REPO, subject=BOB, expires_at=deadline)
    for actor in (ADMIN, "service:storage-provisioner"):
        with pytest.raises(Forbidden):
            world.svc.handle(command, CommandContext(actor, "c-" + actor, "c"))


# --- the scheduler's due work --------------------------------------------------------------


def _scheduler(t: Tenancy, clock: ControlledClock) -> Scheduler:
    async def send(command: Command, context: CommandContext) -> CommandReply:
        return await asyncio.to_thread(t.svc.handle, command, context)

    return Scheduler(t.svc.recorder, send, clock, kinds=[GrantExpiry])


def test_two_schedulers_record_each_expiry_once(world: Tenancy, clock: ControlledClock) -> None:
    _grant(world, duration="1h")
    _grant(world, subject=ALICE, role="viewer", duration="2h")
    other = _scheduler(world, clock)
    others: list[CommandReply] = []

    async def racing(command: Command, context: CommandContext) -> CommandReply:
        # The other command service finds the same item and gets there first.
        others.extend(await other.tick())
        return await asyncio.to_thread(world.svc.handle, command, context)

    first = Scheduler(world.svc.recorder, racing, clock, kinds=[GrantExpiry])
    assert asyncio.run(first.tick()) == []
    clock.set(T0 + timedelta(hours=1, minutes=1))
    before = world.position()

    replies = asyncio.run(first.tick())

    assert [(r.events, r.replayed) for r in others] == [(["ml_repo.access_expired"], False)]
    assert [r.replayed for r in replies] == [True]
    assert replies[0].command_id == others[0].command_id
    assert world.types(before) == ["ml_repo.access_expired"]
    assert asyncio.run(first.tick()) == []  # folded: nothing due any more
    clock.set(T0 + timedelta(hours=5))
    restarted = _scheduler(world, clock)  # reads the log from the start: BOB's is done
    assert [r.events for r in asyncio.run(restarted.tick())] == [["ml_repo.access_expired"]]
    expired = [e for e in world.events() if e["type"] == "ml_repo.access_expired"]
    assert [e["subject"] for e in expired] == [BOB, ALICE]


def test_an_extension_is_a_new_item(world: Tenancy, clock: ControlledClock) -> None:
    _grant(world, duration="1h")
    scheduler = _scheduler(world, clock)
    asyncio.run(scheduler.tick())
    _grant(world, duration="3h")

    clock.set(T0 + timedelta(hours=2))
    assert asyncio.run(scheduler.tick()) == []
    clock.set(T0 + timedelta(hours=3, seconds=1))
    replies = asyncio.run(scheduler.tick())
    assert [r.events for r in replies] == [["ml_repo.access_expired"]]
