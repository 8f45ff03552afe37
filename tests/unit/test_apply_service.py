"""`TenancyService.apply`: many commands decided in turn in one session (each sees what those
before it did), saved in one transaction or refused whole with the first refusal's code and
index; a dry run decides the same and writes nothing; an apply id replays like a command id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain.apply import ApplyReply
from domain.base import CommandContext
from domain.commands import COMMANDS, Command
from domain.errors import Conflict, DomainError, Forbidden, NotFound, PreconditionFailed
from domain.ml_repo import MlRepo

from .support import ADMIN, ALICE, Tenancy

Body = tuple[str, dict[str, Any]]

# Each step needs the one before it: the environment, then a cluster offering it, then a
# workspace tagged with it, then a repo and a grant to that workspace.
CHAIN: list[Body] = [
    ("create_environment", {"name": "gpu"}),
    ("register_cluster", {"name": "gpu-eu", "region": "eu-west-1", "provider": "generic",
                          "environments": ["gpu"]}),
    ("create_workspace", {"cluster": "gpu-eu", "name": "train", "environment": "gpu"}),
    ("register_storage_integration", {"name": "s3-main", "provider": "s3",
                                      "storage_root": "s3://ml-bucket/repos"}),
    ("create_ml_repo", {"name": "vision-models", "storage_integration": "s3-main"}),
    ("grant_repo_access", {"repo": "vision-models", "subject": "workspace:gpu-eu:train",
                           "role": "editor"}),
]  # fmt: skip


def _commands(bodies: list[Body]) -> list[Command]:
    return [COMMANDS[name].model_validate(body) for name, body in bodies]


def _apply(
    t: Tenancy,
    bodies: list[Body],
    apply_id: str = "apply-1",
    actor: str = ADMIN,
    dry_run: bool = False,
) -> ApplyReply:
    context = CommandContext(actor, apply_id, "corr-1")
    return t.svc.apply(_commands(bodies), context, dry_run=dry_run)


def _refused(t: Tenancy, bodies: list[Body], **options: Any) -> DomainError:
    before = t.events()
    with pytest.raises(DomainError) as info:
        _apply(t, bodies, **options)
    assert t.events() == before, "a refused apply wrote events"
    return info.value


def test_each_command_sees_the_ones_before_it_and_all_are_saved_together(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    before = t.position()
    result = _apply(t, CHAIN)
    assert (result.dry_run, result.replayed) == (False, False)
    assert [r.command for r in result.commands] == [name for name, _ in CHAIN]
    written = t.events(before)
    # One transaction: contiguous positions, the apply's record last, its position the reply's.
    assert [e["position"] for e in written] == list(range(before + 1, before + 1 + len(written)))
    assert written[-1]["type"] == "apply_record.handled"
    assert result.position == written[-1]["position"]
    facts = written[:-1]
    assert [e["type"] for e in facts] == [t for r in result.commands for t in r.events]
    assert {(e["actor"], e["command_id"], e["correlation_id"]) for e in facts} == {
        (ADMIN, "apply-1", "corr-1")
    }
    grant = result.commands[-1]
    assert (grant.fqn, grant.events) == (
        "vision-models",
        ["workspace.repo_linked", "ml_repo.access_granted"],
    )
    repo = t.aggregate(MlRepo, "vision-models")
    assert str(repo.id) == grant.aggregate_id
    assert repo.grants["workspace:gpu-eu:train"].role == "editor"


def test_the_third_command_refused_writes_nothing_and_names_its_index(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    bad = [*CHAIN[:2], ("create_workspace", {**CHAIN[2][1], "environment": "prod"}), *CHAIN[3:]]
    refusal = _refused(t, bad)
    assert isinstance(refusal, PreconditionFailed)
    assert refusal.code == "precondition_failed"
    assert (refusal.details["index"], refusal.details["command"]) == (2, "create_workspace")
    assert "command 2 (create_workspace)" in refusal.message
    assert "gpu" in refusal.message  # the cluster's own environments, as alone
    # Nothing of the first two commands either: the environment was never created.
    with pytest.raises(NotFound):
        t.run("update_environment", {"name": "gpu", "is_production": True})


def test_a_later_command_is_refused_by_what_an_earlier_one_did(tenancy: Tenancy) -> None:
    """The second creation of the same environment meets the first, in the same session."""
    twice = [("create_environment", {"name": "gpu"}), ("create_environment", {"name": "gpu"})]
    refusal = _refused(tenancy, twice)
    assert refusal.code == "already_exists"
    assert refusal.details["index"] == 1


def test_a_dry_run_decides_the_same_and_writes_nothing(tenancy: Tenancy) -> None:
    t = tenancy
    before = t.events()
    dry = _apply(t, CHAIN, dry_run=True)
    assert t.events() == before
    assert (dry.dry_run, dry.position, dry.replayed) == (True, None, False)
    bad = [*CHAIN[:2], ("create_workspace", {**CHAIN[2][1], "environment": "prod"})]
    dry_refusal = _refused(t, bad, dry_run=True)
    real_refusal = _refused(t, bad)
    assert (dry_refusal.code, dry_refusal.details) == (real_refusal.code, real_refusal.details)
    # A dry run leaves its id unused: the real apply under it is not a replay of anything.
    real = _apply(t, CHAIN)
    assert real.replayed is False
    assert [r.events for r in real.commands] == [r.events for r in dry.commands]


def test_the_same_apply_id_replays_the_first_answer_and_writes_nothing(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    first = _apply(t, CHAIN, apply_id="apply-7")
    t.run("create_environment", {"name": "later"})  # the log moves on
    written = t.position()
    again = _apply(t, CHAIN, apply_id="apply-7")
    assert again.replayed is True
    assert (again.position, again.commands) == (first.position, first.commands)
    assert t.position() == written
    # The same id with other commands, or from another actor: a conflict, nothing written.
    other = _refused(t, CHAIN[:1], apply_id="apply-7")
    assert isinstance(other, Conflict)
    stranger = _refused(t, CHAIN, apply_id="apply-7", actor=ALICE)
    assert isinstance(stranger, Conflict)


def test_apply_ids_and_command_ids_are_one_space(tenancy: Tenancy) -> None:
    t = tenancy
    t.run("create_environment", {"name": "qa"}, command_id="shared-id")
    assert isinstance(_refused(t, CHAIN, apply_id="shared-id"), Conflict)
    _apply(t, CHAIN, apply_id="apply-id")
    before = t.position()
    with pytest.raises(Conflict):
        t.run("create_environment", {"name": "uat"}, command_id="apply-id")
    assert t.position() == before


def test_each_command_is_authorized_as_if_sent_alone(secured: Callable[..., Tenancy]) -> None:
    t = secured()
    _apply(t, CHAIN[3:5], apply_id="setup")  # the integration and a repo, by the tenant admin
    # Any user may create a repo (and administers it); a cluster needs a tenant admin.
    mixed = [
        ("create_ml_repo", {"name": "alice-models", "storage_integration": "s3-main"}),
        ("grant_repo_access", {"repo": "alice-models", "subject": "user:bo@example.com",
                               "role": "viewer"}),
        CHAIN[1],
    ]  # fmt: skip
    refusal = _refused(t, mixed, actor=ALICE)
    assert isinstance(refusal, Forbidden)
    assert (refusal.details["index"], refusal.details["command"]) == (2, "register_cluster")
    # Without the cluster, what alice may do she does, in one apply.
    done = _apply(t, mixed[:2], apply_id="alice-1", actor=ALICE)
    assert [r.command for r in done.commands] == ["create_ml_repo", "grant_repo_access"]
    # A worker's actor may send only record_* commands, in an apply as alone.
    worker = _refused(t, CHAIN[:1], apply_id="w-1", actor="service:namespaces")
    assert isinstance(worker, Forbidden)
    assert worker.details["index"] == 0
