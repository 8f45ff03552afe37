"""Command ids: the same id again answers the first result and writes nothing; versions guard
against lost updates; concurrent writers end with one answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.environment import Environment
from domain.errors import AlreadyExists, Conflict, DomainError, PreconditionFailed
from domain.service import TenancyService
from tenantry.protocol import CommandReply

from .support import ADMIN, Tenancy


def test_the_same_command_id_again_replays_the_first_answer_and_writes_nothing(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    first = t.run("create_environment", {"name": "qa"}, command_id="cmd-1")
    t.run("create_environment", {"name": "uat"})  # the log moves on
    written = t.position()

    again = t.run("create_environment", {"name": "qa"}, command_id="cmd-1")

    assert first.replayed is False
    assert again.replayed is True
    assert (again.command_id, again.fqn, again.aggregate_id, again.version, again.position) == (
        first.command_id,
        first.fqn,
        first.aggregate_id,
        first.version,
        first.position,
    )
    assert again.events == first.events == ["environment.created"]
    assert t.position() == written


def test_a_multi_aggregate_command_replays_with_all_its_events(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    t.cluster("prod-eu", ("prod",))
    t.integration()
    t.repo("fraud-models")
    body = {
        "cluster": "prod-eu",
        "name": "fraud",
        "environment": "prod",
        "ml_repo_access": [{"repo": "fraud-models", "role": "viewer"}],
    }
    first = t.run("create_workspace", body, command_id="ws-1")
    written = t.position()

    again = t.run("create_workspace", body, command_id="ws-1")

    assert again.replayed
    assert (again.position, again.events) == (first.position, first.events)
    assert "ml_repo.access_granted" in again.events
    assert t.position() == written


def test_a_replay_is_answered_even_where_the_command_would_now_be_refused(
    tenancy: Tenancy,
) -> None:
    first = tenancy.run("create_environment", {"name": "qa"}, command_id="cmd-1")
    tenancy.run("delete_environment", {"name": "qa"})
    tenancy.run("create_environment", {"name": "qa"})

    again = tenancy.run("create_environment", {"name": "qa"}, command_id="cmd-1")

    assert (again.replayed, again.version, again.position) == (True, 1, first.position)


def test_an_equivalent_body_is_the_same_command(tenancy: Tenancy) -> None:
    first = tenancy.run("create_environment", {"name": "qa"}, command_id="cmd-1")

    again = tenancy.run(
        "create_environment",
        {"name": "qa", "is_production": False, "optimize_for": "cost"},
        command_id="cmd-1",
    )

    assert again.replayed
    assert again.position == first.position


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("create_environment", {"name": "uat"}),
        ("create_environment", {"name": "qa", "is_production": True}),
        ("create_team", {"name": "qa"}),
    ],
)
def test_the_same_command_id_for_another_command_is_a_conflict(
    tenancy_on_each_store: Tenancy, name: str, body: dict[str, Any]
) -> None:
    t = tenancy_on_each_store
    t.run("create_environment", {"name": "qa"}, command_id="cmd-1")

    error = t.refuse(name, body, Conflict, "conflict", command_id="cmd-1")

    assert error.details == {"command_id": "cmd-1", "first_command": "create_environment"}


def test_a_refused_command_leaves_no_record_so_its_id_can_be_sent_again(
    tenancy: Tenancy,
) -> None:
    body = {"name": "prod-eu", "region": "eu", "provider": "generic", "environments": ["qa"]}
    tenancy.refuse(
        "register_cluster", body, PreconditionFailed, "precondition_failed", command_id="reg-1"
    )
    tenancy.run("create_environment", {"name": "qa"})

    result = tenancy.run("register_cluster", body, command_id="reg-1")

    assert (result.replayed, result.events[0]) == (False, "cluster.registered")


# --- expected_version ---------------------------------------------------------------------


def test_a_matching_expected_version_is_accepted(tenancy_on_each_store: Tenancy) -> None:
    t = tenancy_on_each_store
    t.run("create_environment", {"name": "qa"})

    result = t.run("update_environment", {"name": "qa", "color": "#ffffff", "expected_version": 1})

    assert result.version == 2


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("update_environment", {"name": "dev", "color": "#ffffff"}),
        ("delete_environment", {"name": "dev"}),
        ("add_cluster_environment", {"cluster": "prod-eu", "environment": "staging"}),
        ("set_workspace_environment", {"workspace": "prod-eu:fraud", "environment": "dev"}),
        ("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"}),
        ("grant_repo_access", {"repo": "fraud-models", "subject": "team:risk", "role": "viewer"}),
        ("delete_ml_repo", {"name": "fraud-models"}),
        ("add_team_member", {"team": "risk", "user": "z@example.com"}),
        ("record_namespace_provisioned", {"workspace": "prod-eu:fraud", "namespace": "fraud"}),
        ("record_storage_failed", {"repo": "fraud-models", "location": "s3://b/x/"}),
    ],
)
def test_a_stale_expected_version_is_a_conflict(
    repo_world: Tenancy, name: str, body: dict[str, Any]
) -> None:
    repo_world.team("risk")

    error = repo_world.refuse(name, {**body, "expected_version": 99}, Conflict, "conflict")

    assert error.details["expected_version"] == 99
    assert 1 <= error.details["actual_version"] < 99


def test_a_lost_update_is_caught(tenancy: Tenancy) -> None:
    tenancy.run("create_environment", {"name": "qa"})
    seen = tenancy.aggregate(Environment, "qa").version
    tenancy.run("update_environment", {"name": "qa", "color": "#000000"})

    error = tenancy.refuse(
        "update_environment",
        {"name": "qa", "is_production": True, "expected_version": seen},
        Conflict,
        "conflict",
    )
    assert error.details == {"fqn": "qa", "expected_version": 1, "actual_version": 2}


# --- concurrency --------------------------------------------------------------------------


def _race(
    services: list[TenancyService], send: Callable[[TenancyService], CommandReply]
) -> list[Any]:
    barrier = threading.Barrier(len(services))
    answers: list[Any] = [None] * len(services)

    def go(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = send(services[i])
        except DomainError as error:
            answers[i] = error

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _two_services(tmp_path: Path) -> list[TenancyService]:
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp_path / "events.sqlite"),
        "SQLITE_LOCK_TIMEOUT": "10",
    }
    return [TenancyService(env), TenancyService(env)]


@pytest.mark.parametrize("attempt", range(5))
def test_two_writers_creating_the_same_name_end_with_one_already_exists(
    tmp_path: Path, attempt: int
) -> None:
    services = _two_services(tmp_path)
    command = COMMANDS["create_team"].model_validate({"name": "risk"})

    answers = _race(
        services,
        lambda svc: svc.handle(command, CommandContext(ADMIN, f"id-{id(svc)}", "corr")),
    )

    assert sorted(type(a).__name__ for a in answers) == ["AlreadyExists", "CommandReply"]
    refused = next(a for a in answers if isinstance(a, AlreadyExists))
    assert refused.code == "already_exists"
    teams = services[0].recorder.select_notifications(
        None, 100, topics=["domain.team:Team.Created"]
    )
    assert len(teams) == 1


@pytest.mark.parametrize("attempt", range(5))
def test_the_same_command_id_sent_concurrently_is_applied_once(
    tmp_path: Path, attempt: int
) -> None:
    services = _two_services(tmp_path)
    command = COMMANDS["create_team"].model_validate({"name": "risk"})

    answers = _race(services, lambda svc: svc.handle(command, CommandContext(ADMIN, "same", "c")))

    assert all(isinstance(a, CommandReply) for a in answers), answers
    assert sorted(a.replayed for a in answers) == [False, True]
    assert answers[0].position == answers[1].position
    assert services[0].recorder.max_notification_id() == 2  # team.created, its command record


def test_a_command_id_reused_by_another_actor_is_a_conflict_not_a_replay(tenancy: Tenancy) -> None:
    tenancy.run("create_environment", {"name": "qa"}, command_id="shared-id")
    before = tenancy.position()
    with pytest.raises(Conflict) as refused:
        tenancy.run(
            "create_environment",
            {"name": "qa"},
            command_id="shared-id",
            actor="user:mallory@example.com",
        )
    assert refused.value.code == "conflict"
    assert tenancy.position() == before
