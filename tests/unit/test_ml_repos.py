"""ML repos: an immutable storage integration, grants (one role per subject), deletion."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import StoredEvent
from pydantic import ValidationError

from domain.commands import GrantRepoAccess
from domain.errors import AlreadyExists, Forbidden, NotFound, PreconditionFailed
from domain.mapper import JsonTranscoder, PydanticMapper
from domain.ml_repo import MlRepo

from .support import ADMIN, ALICE, BOB, Tenancy

WORKSPACE = "workspace:prod-eu:fraud"


def _grant(t: Tenancy, subject: str, role: str, reason: str | None = None, actor: str = ADMIN):
    body = {"repo": "fraud-models", "subject": subject, "role": role}
    if reason is not None:
        body["reason"] = reason
    return t.run("grant_repo_access", body, actor=actor)


def _grants(t: Tenancy) -> dict[str, str]:
    return {s: g.role for s, g in t.aggregate(MlRepo, "fraud-models").grants.items()}


# --- creation -----------------------------------------------------------------------------


def test_create_needs_an_existing_storage_integration(tenancy: Tenancy) -> None:
    error = tenancy.refuse(
        "create_ml_repo",
        {"name": "fraud-models", "storage_integration": "nowhere"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details == {"storage_integration": "nowhere"}


def test_create_places_it_under_the_root_and_makes_its_creator_admin(tenancy: Tenancy) -> None:
    tenancy.integration("s3-main", root="s3://ml-bucket/repos")

    result = tenancy.run(
        "create_ml_repo",
        {"name": "Fraud-Models", "storage_integration": "s3-main", "description": "scoring"},
        actor=ALICE,
    )

    assert (result.fqn, result.version) == ("Fraud-Models", 2)
    assert result.events == [
        "ml_repo.created",
        "storage_integration.repo_attached",
        "ml_repo.access_granted",
    ]
    repo = tenancy.aggregate(MlRepo, "Fraud-Models")
    assert (repo.storage_integration, repo.description, repo.location, repo.status) == (
        "s3-main",
        "scoring",
        "s3://ml-bucket/repos/Fraud-Models/",
        "pending",
    )
    assert {s: g.role for s, g in repo.grants.items()} == {ALICE: "admin"}
    assert repo.grants[ALICE].granted_by == ALICE


def test_a_repo_name_that_exists_is_already_exists(repo_world: Tenancy) -> None:
    repo_world.refuse(
        "create_ml_repo",
        {"name": "fraud-models", "storage_integration": "s3-main"},
        AlreadyExists,
        "already_exists",
    )


# --- the storage integration is immutable -------------------------------------------------


def test_changing_the_storage_integration_is_refused(repo_world: Tenancy) -> None:
    repo_world.integration("gcs-eu", root="s3://other-bucket")

    error = repo_world.refuse(
        "update_ml_repo",
        {"name": "fraud-models", "description": "moved", "storage_integration": "gcs-eu"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details == {"repo": "fraud-models", "storage_integration": "s3-main"}
    assert repo_world.aggregate(MlRepo, "fraud-models").storage_integration == "s3-main"


def test_the_description_can_be_changed_naming_the_same_integration(repo_world: Tenancy) -> None:
    result = repo_world.run(
        "update_ml_repo",
        {"name": "fraud-models", "description": "v2", "storage_integration": "s3-main"},
    )

    assert result.events == ["ml_repo.updated"]
    assert repo_world.aggregate(MlRepo, "fraud-models").description == "v2"


def test_changing_an_unknown_repo_is_not_found(repo_world: Tenancy) -> None:
    body = {"repo": "ghost-models", "subject": BOB}
    repo_world.refuse("grant_repo_access", {**body, "role": "viewer"}, NotFound, "not_found")
    repo_world.refuse("revoke_repo_access", body, NotFound, "not_found")
    repo_world.refuse(
        "update_ml_repo", {"name": "ghost-models", "description": ""}, NotFound, "not_found"
    )
    repo_world.refuse("delete_ml_repo", {"name": "ghost-models"}, NotFound, "not_found")


# --- grants -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_a_user_or_team_may_hold_any_role(repo_world: Tenancy, role: str) -> None:
    repo_world.team("risk")

    _grant(repo_world, BOB, role)
    _grant(repo_world, "team:risk", role)

    assert _grants(repo_world) == {ADMIN: "admin", BOB: role, "team:risk": role}


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_a_workspace_may_hold_viewer_or_editor(repo_world: Tenancy, role: str) -> None:
    result = _grant(repo_world, WORKSPACE, role)

    assert result.events == ["workspace.repo_linked", "ml_repo.access_granted"]
    assert _grants(repo_world)[WORKSPACE] == role


def test_a_workspace_may_not_hold_admin(repo_world: Tenancy) -> None:
    repo_world.refuse(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": WORKSPACE, "role": "admin"},
        PreconditionFailed,
        "precondition_failed",
    )


@pytest.mark.parametrize("subject", ["team:ghosts", "workspace:prod-eu:ghost"])
def test_a_team_or_workspace_subject_must_exist(repo_world: Tenancy, subject: str) -> None:
    repo_world.refuse(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": subject, "role": "viewer"},
        PreconditionFailed,
        "precondition_failed",
    )


def test_a_new_role_replaces_the_old_one_and_the_event_records_both(repo_world: Tenancy) -> None:
    _grant(repo_world, BOB, "viewer")
    before = repo_world.position()

    result = _grant(repo_world, BOB, "editor", reason="promoted")

    assert result.events == ["ml_repo.access_granted"]
    [granted] = [e for e in repo_world.events(before) if e["type"] == "ml_repo.access_granted"]
    assert (granted["subject"], granted["role"], granted["previous_role"]) == (
        BOB,
        "editor",
        "viewer",
    )
    assert _grants(repo_world) == {ADMIN: "admin", BOB: "editor"}


def test_a_first_grant_records_no_previous_role(repo_world: Tenancy) -> None:
    before = repo_world.position()

    _grant(repo_world, BOB, "viewer")

    [granted] = [e for e in repo_world.events(before) if e["type"] == "ml_repo.access_granted"]
    assert granted["previous_role"] is None


def test_granting_the_role_a_subject_holds_records_nothing(repo_world: Tenancy) -> None:
    _grant(repo_world, BOB, "viewer")

    assert _grant(repo_world, BOB, "viewer").events == []


def _managed(t: Tenancy) -> dict[str, str | None]:
    return {s: g.managed_by for s, g in t.aggregate(MlRepo, "fraud-models").grants.items()}


def test_a_grant_records_who_manages_it_and_the_last_grant_owns_it(repo_world: Tenancy) -> None:
    body = {"repo": "fraud-models", "subject": BOB, "role": "viewer"}
    before = repo_world.position()

    repo_world.run("grant_repo_access", {**body, "managed_by": "apply"})
    [granted] = [e for e in repo_world.events(before) if e["type"] == "ml_repo.access_granted"]
    assert granted["managed_by"] == "apply"
    assert _managed(repo_world)[BOB] == "apply"
    # The same role by the same manager changes nothing.
    assert repo_world.run("grant_repo_access", {**body, "managed_by": "apply"}).events == []

    # The same role without a manager: the grant is nobody's now (recorded, same role).
    after = repo_world.position()
    assert repo_world.run("grant_repo_access", body).events == ["ml_repo.access_granted"]
    [regranted] = [e for e in repo_world.events(after) if e["type"] == "ml_repo.access_granted"]
    assert (regranted["role"], regranted["previous_role"], regranted["managed_by"]) == (
        "viewer",
        "viewer",
        None,
    )
    assert _managed(repo_world) == {ADMIN: None, BOB: None}


def test_the_last_admin_can_be_taken_over_by_a_manager(repo_world: Tenancy) -> None:
    body = {"repo": "fraud-models", "subject": ADMIN, "role": "admin", "managed_by": "apply"}
    assert repo_world.run("grant_repo_access", body).events == ["ml_repo.access_granted"]
    assert _grants(repo_world) == {ADMIN: "admin"}
    assert _managed(repo_world) == {ADMIN: "apply"}


@pytest.mark.parametrize("managed_by", ["", "Apply", "apply\n", "a" * 64, "ap ply"])
def test_managed_by_is_a_short_token(managed_by: str) -> None:
    body = {"repo": "fraud-models", "subject": BOB, "role": "viewer", "managed_by": managed_by}
    with pytest.raises(ValidationError, match="managed_by"):
        GrantRepoAccess.model_validate(body)


def test_a_workspace_creation_grant_records_its_manager(repo_world: Tenancy) -> None:
    before = repo_world.position()
    repo_world.run(
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "scoring",
            "environment": "prod",
            "ml_repo_access": [{"repo": "fraud-models", "role": "viewer", "managed_by": "apply"}],
        },
    )
    [granted] = [e for e in repo_world.events(before) if e["type"] == "ml_repo.access_granted"]
    assert (granted["subject"], granted["managed_by"]) == ("workspace:prod-eu:scoring", "apply")


def test_a_grant_stored_before_managed_by_existed_reads_as_unmanaged(repo_world: Tenancy) -> None:
    _grant(repo_world, BOB, "viewer")
    [stored] = [
        n
        for n in repo_world.svc.recorder.select_notifications(None, 100_000)
        if n.topic.endswith("MlRepo.AccessGranted")
    ][-1:]
    state = json.loads(stored.state)
    del state["managed_by"]
    old = StoredEvent(
        stored.originator_id, stored.originator_version, stored.topic, json.dumps(state).encode()
    )

    event = PydanticMapper(JsonTranscoder()).to_domain_event(old)

    assert isinstance(event, MlRepo.AccessGranted)
    assert (event.subject, event.managed_by) == (BOB, None)


def test_grants_and_revokes_record_actor_time_and_reason(repo_world: Tenancy) -> None:
    _grant(repo_world, ALICE, "admin")
    before = repo_world.position()
    started = datetime.now(UTC)

    granted = _grant(repo_world, BOB, "editor", reason="on-call", actor=ALICE)
    revoked = repo_world.run(
        "revoke_repo_access",
        {"repo": "fraud-models", "subject": BOB, "reason": "rotation ended"},
        actor=ADMIN,
    )

    events = [e for e in repo_world.events(before) if e["type"].startswith("ml_repo.access_")]
    assert [
        (e["type"], e["actor"], e["command_id"], e["reason"], e["previous_role"]) for e in events
    ] == [
        ("ml_repo.access_granted", ALICE, granted.command_id, "on-call", None),
        ("ml_repo.access_revoked", ADMIN, revoked.command_id, "rotation ended", "editor"),
    ]
    times = [datetime.fromisoformat(e["timestamp"]) for e in events]
    assert started <= times[0] <= times[1] <= datetime.now(UTC)
    assert BOB not in _grants(repo_world)


def test_the_reason_is_optional(repo_world: Tenancy) -> None:
    before = repo_world.position()

    _grant(repo_world, BOB, "viewer")

    [granted] = [e for e in repo_world.events(before) if e["type"] == "ml_repo.access_granted"]
    assert granted["reason"] is None
    assert repo_world.aggregate(MlRepo, "fraud-models").grants[BOB].reason is None


def test_revoking_a_subject_without_a_grant_is_not_found(repo_world: Tenancy) -> None:
    repo_world.refuse(
        "revoke_repo_access", {"repo": "fraud-models", "subject": BOB}, NotFound, "not_found"
    )


def test_revoking_a_workspaces_grant_unlinks_it(repo_world: Tenancy) -> None:
    _grant(repo_world, WORKSPACE, "editor")

    result = repo_world.run("revoke_repo_access", {"repo": "fraud-models", "subject": WORKSPACE})

    assert result.events == ["ml_repo.access_revoked", "workspace.repo_unlinked"]


# --- the last admin -----------------------------------------------------------------------


def test_the_last_admin_cannot_be_revoked(repo_world: Tenancy) -> None:
    error = repo_world.refuse(
        "revoke_repo_access",
        {"repo": "fraud-models", "subject": ADMIN},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details == {"repo": "fraud-models", "subject": ADMIN}


def test_the_last_admin_cannot_be_demoted(repo_world: Tenancy) -> None:
    repo_world.refuse(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": ADMIN, "role": "editor"},
        PreconditionFailed,
        "precondition_failed",
    )


def test_an_admin_can_leave_once_there_is_another(repo_world: Tenancy) -> None:
    _grant(repo_world, ALICE, "admin")

    repo_world.run(
        "grant_repo_access", {"repo": "fraud-models", "subject": ADMIN, "role": "viewer"}
    )
    repo_world.refuse(
        "revoke_repo_access",
        {"repo": "fraud-models", "subject": ALICE},
        PreconditionFailed,
        "precondition_failed",
    )
    assert _grants(repo_world) == {ADMIN: "viewer", ALICE: "admin"}


# --- status and deletion ------------------------------------------------------------------


def test_status_follows_the_storage_provisioner(repo_world: Tenancy) -> None:
    report = {"repo": "fraud-models", "location": "s3://ml-bucket/repos/fraud-models/"}

    repo_world.run("record_storage_failed", {**report, "detail": "access denied"})
    assert repo_world.aggregate(MlRepo, "fraud-models").status == "failed"
    repo_world.run("record_storage_provisioned", report)
    assert repo_world.aggregate(MlRepo, "fraud-models").status == "ready"
    repo_world.run("delete_ml_repo", {"name": "fraud-models"})
    assert repo_world.aggregate(MlRepo, "fraud-models").status == "deleting"
    repo_world.refuse(
        "record_storage_provisioned", report, PreconditionFailed, "precondition_failed"
    )
    repo_world.run("record_storage_deleted", report)
    assert repo_world.aggregate(MlRepo, "fraud-models").status == "deleted"


def test_storage_is_recorded_deleted_only_after_deletion_was_asked(repo_world: Tenancy) -> None:
    repo_world.refuse(
        "record_storage_deleted",
        {"repo": "fraud-models", "location": "s3://ml-bucket/repos/fraud-models/"},
        PreconditionFailed,
        "precondition_failed",
    )


def test_reports_about_an_unknown_repo_are_not_found(repo_world: Tenancy) -> None:
    repo_world.refuse(
        "record_storage_provisioned",
        {"repo": "ghost-models", "location": "s3://ml-bucket/repos/ghost-models/"},
        NotFound,
        "not_found",
    )


def test_deleting_ends_every_grant_as_events(repo_world: Tenancy) -> None:
    repo_world.team("risk")
    _grant(repo_world, BOB, "editor")
    _grant(repo_world, "team:risk", "viewer")
    _grant(repo_world, WORKSPACE, "viewer")
    before = repo_world.position()

    result = repo_world.run("delete_ml_repo", {"name": "fraud-models"})

    ended = [e for e in repo_world.events(before) if e["type"] == "ml_repo.access_revoked"]
    assert sorted((e["subject"], e["previous_role"]) for e in ended) == sorted(
        [(ADMIN, "admin"), (BOB, "editor"), ("team:risk", "viewer"), (WORKSPACE, "viewer")]
    )
    assert "ml_repo.deletion_requested" in result.events
    assert "workspace.repo_unlinked" in result.events
    assert "storage_integration.repo_detached" in result.events
    assert repo_world.aggregate(MlRepo, "fraud-models").grants == {}


@pytest.mark.parametrize(
    ("body", "delete_storage"), [({}, False), ({"delete_storage": True}, True)]
)
def test_deletion_records_whether_the_storage_is_removed(
    repo_world: Tenancy, body: dict[str, bool], delete_storage: bool
) -> None:
    before = repo_world.position()

    repo_world.run("delete_ml_repo", {"name": "fraud-models", **body})

    [asked] = [e for e in repo_world.events(before) if e["type"] == "ml_repo.deletion_requested"]
    assert asked["delete_storage"] is delete_storage


def test_a_deleted_repo_is_gone_and_may_be_created_again_keeping_its_history(
    repo_world: Tenancy,
) -> None:
    _grant(repo_world, BOB, "editor")
    repo_world.run("delete_ml_repo", {"name": "fraud-models", "delete_storage": True})
    repo_world.refuse(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": BOB, "role": "viewer"},
        NotFound,
        "not_found",
    )
    repo_world.run("record_storage_deleted", {"repo": "fraud-models", "location": LOCATION})

    result = repo_world.repo("fraud-models", actor=ALICE)

    assert result == "fraud-models"
    repo = repo_world.aggregate(MlRepo, "fraud-models")
    assert (repo.status, _grants(repo_world)) == ("pending", {ALICE: "admin"})
    history = [e["type"] for e in repo_world.events() if e["originator_id"] == repo.id]
    assert history[0] == "ml_repo.created"
    assert "ml_repo.deletion_requested" in history
    assert history[-2:] == ["ml_repo.recreated", "ml_repo.access_granted"]


# --- re-creating a name whose storage may still hold data -----------------------------------

LOCATION = "s3://ml-bucket/repos/fraud-models/"


def _deleted_by_bob(secured: Callable[..., Tenancy], **deletion: bool) -> Tenancy:
    """Authorization on (ADMIN the tenant admin); BOB's repo, with data, deleted by BOB."""
    t = secured()
    t.integration()
    t.repo(actor=BOB)
    t.run("record_storage_provisioned", {"repo": "fraud-models", "location": LOCATION})
    t.run("delete_ml_repo", {"name": "fraud-models", **deletion}, actor=BOB)
    return t


def _create(t: Tenancy, actor: str, **fields: bool) -> None:
    body = {"name": "fraud-models", "storage_integration": "s3-main", **fields}
    t.run("create_ml_repo", body, actor=actor)


@pytest.mark.parametrize("recorded", [False, True])
def test_a_repo_whose_storage_was_retained_is_not_handed_to_whoever_recreates_it(
    secured: Callable[..., Tenancy], recorded: bool
) -> None:
    """Its data is still at the location the new repo would get: neither another user, nor
    its former admin, nor a tenant admin by accident, may re-create the name."""
    t = _deleted_by_bob(secured)
    if recorded:
        t.run("record_storage_deleted", {"repo": "fraud-models", "location": LOCATION})
    body = {"name": "fraud-models", "storage_integration": "s3-main"}

    for actor in (ALICE, BOB, ADMIN):
        error = t.refuse("create_ml_repo", body, PreconditionFailed, "precondition_failed", actor)
        assert "was retained" in error.message and "adopt_storage" in error.message
        assert error.details == {
            "repo": "fraud-models",
            "location": LOCATION,
            "status": "deleted" if recorded else "deleting",
            "delete_storage": False,
        }
    # Only a tenant admin may take the data over, and must say so.
    t.refuse("create_ml_repo", {**body, "adopt_storage": True}, Forbidden, "forbidden", ALICE)
    t.refuse("create_ml_repo", {**body, "adopt_storage": True}, Forbidden, "forbidden", BOB)
    before = t.position()
    _create(t, ADMIN, adopt_storage=True)

    [recreated] = [e for e in t.events(before) if e["type"] == "ml_repo.recreated"]
    assert (recreated["adopt_storage"], recreated["actor"]) == (True, ADMIN)
    assert _grants(t) == {ADMIN: "admin"}


def test_a_repo_whose_storage_is_still_being_removed_cannot_be_recreated(
    secured: Callable[..., Tenancy],
) -> None:
    t = _deleted_by_bob(secured, delete_storage=True)
    body = {"name": "fraud-models", "storage_integration": "s3-main"}

    error = t.refuse("create_ml_repo", body, PreconditionFailed, "precondition_failed", ALICE)
    assert "is still being removed" in error.message

    t.run("record_storage_deleted", {"repo": "fraud-models", "location": LOCATION})
    _create(t, ALICE)  # removed: nothing left to hand over, anyone may
    assert _grants(t) == {ALICE: "admin"}
    assert t.aggregate(MlRepo, "fraud-models").adopt_storage is False


def test_a_failed_removal_is_recorded_and_the_repo_stays_deleted(
    secured: Callable[..., Tenancy],
) -> None:
    t = _deleted_by_bob(secured, delete_storage=True)
    detail = f"{LOCATION}: not created by Tenantry (no marker); not removed"

    report = {"repo": "fraud-models", "location": LOCATION, "detail": detail}
    # A late report about provisioning is not taken for the removal's.
    t.refuse("record_storage_failed", report, PreconditionFailed, "precondition_failed")
    t.run("record_storage_failed", {**report, "removal": True})

    repo = t.aggregate(MlRepo, "fraud-models")
    assert (repo.status, repo.live) == ("deletion_failed", False)
    [failed] = [e for e in t.events() if e["type"] == "ml_repo.storage_failed"]
    assert (failed["detail"], failed["removal"]) == (detail, True)
    t.refuse(
        "record_storage_failed",
        {**report, "removal": True},
        PreconditionFailed,
        "precondition_failed",
    )
    grant = {"repo": "fraud-models", "subject": ALICE, "role": "viewer"}
    t.refuse("grant_repo_access", grant, NotFound, "not_found")
    body = {"name": "fraud-models", "storage_integration": "s3-main"}
    error = t.refuse("create_ml_repo", body, PreconditionFailed, "precondition_failed", ALICE)
    assert "could not be removed" in error.message


def test_adopting_what_a_location_holds_needs_a_tenant_admin(
    secured: Callable[..., Tenancy],
) -> None:
    t = secured()
    t.integration()
    body = {"name": "fraud-models", "storage_integration": "s3-main", "adopt_storage": True}

    t.refuse("create_ml_repo", body, Forbidden, "forbidden", ALICE)
    t.run("create_ml_repo", body, actor=ADMIN)

    assert t.aggregate(MlRepo, "fraud-models").adopt_storage is True
    [created] = [e for e in t.events() if e["type"] == "ml_repo.created"]
    assert created["adopt_storage"] is True
