"""Who may send what: TENANTRY_ADMINS on or off, repo admins, and workers' service actors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.authorization import Authorization
from domain.commands import COMMANDS, SYSTEM_COMMANDS
from domain.errors import Forbidden
from domain.handlers import handled
from domain.ml_repo import MlRepo
from domain.policies import AnyUser, RepoAdmin, System, Worker

from .bodies import RECORD_COMMANDS, USER_COMMANDS, VALID_BODIES, build_world
from .support import ADMIN, ALICE, BOB, Tenancy

WORKER = "service:storage-provisioner"
Secured = Callable[..., Tenancy]

# Commands on one ML repo: its admins may send them too. Creating a repo is open to any user.
REPO_ADMIN_COMMANDS = [
    "delete_ml_repo",
    "grant_repo_access",
    "revoke_repo_access",
    "set_repo_access_policy",
    "update_ml_repo",
]
# Commands any user may send (who may then do what: the command decides).
ANY_USER_COMMANDS = ["cancel_access_request", "create_ml_repo", "request_repo_access"]
# Commands on an access request: the admins of its repo may send them too.
REQUEST_APPROVER_COMMANDS = ["approve_access_request", "deny_access_request"]
# Decided by the item's reviewers (tests/unit/test_access_reviews.py).
REVIEWER_COMMANDS = ["decide_access_review_item"]
# Commands only a tenant admin may send when authorization is on.
TENANT_ADMIN_COMMANDS = sorted(
    set(USER_COMMANDS)
    - set(REPO_ADMIN_COMMANDS)
    - set(ANY_USER_COMMANDS)
    - set(REQUEST_APPROVER_COMMANDS)
    - set(REVIEWER_COMMANDS)
)


# --- the policy itself --------------------------------------------------------------------


def test_unset_admins_means_authorization_is_off_and_everyone_is_a_tenant_admin() -> None:
    off = Authorization()

    assert not off.enabled
    assert off.is_tenant_admin(BOB)


def test_set_admins_means_only_they_are_tenant_admins() -> None:
    on = Authorization(admins=frozenset({ADMIN}))

    assert on.enabled
    assert on.is_tenant_admin(ADMIN)
    assert not on.is_tenant_admin(BOB)


def test_every_command_declares_a_policy_whose_fields_it_has() -> None:
    for name, model in COMMANDS.items():
        policy = model.policy
        if isinstance(policy, RepoAdmin):
            assert model.model_fields[policy.repo_field].annotation is str, name
        if isinstance(policy, AnyUser) and policy.admin_when is not None:
            assert model.model_fields[policy.admin_when].annotation is bool, name
        # Workers' commands and only they are record_* (what a service actor may send).
        assert isinstance(policy, Worker) == name.startswith("record_"), name
        assert (name in REPO_ADMIN_COMMANDS) == isinstance(policy, RepoAdmin), name
    # Tenantry's own commands are not on the bus, and only they are System's.
    assert all(isinstance(m.policy, System) for m in SYSTEM_COMMANDS.values())
    assert not any(isinstance(m.policy, System) for m in COMMANDS.values())
    assert set(COMMANDS.values()) | set(SYSTEM_COMMANDS.values()) == handled()


# --- authorization off --------------------------------------------------------------------


def test_with_authorization_off_any_user_may_do_anything(tenancy: Tenancy) -> None:
    tenancy.cluster("prod-eu", ("prod",))
    tenancy.integration()
    tenancy.repo("fraud-models", actor=ALICE)

    tenancy.allow("register_cluster", VALID_BODIES["register_cluster"] | {"name": "c-2"}, actor=BOB)
    tenancy.allow("grant_repo_access", VALID_BODIES["grant_repo_access"], actor=BOB)
    tenancy.allow("delete_ml_repo", {"name": "fraud-models"}, actor=BOB)
    tenancy.allow("record_storage_deleted", VALID_BODIES["record_storage_deleted"], actor=BOB)


@pytest.mark.parametrize("name", USER_COMMANDS)
def test_a_service_actor_may_not_send_user_commands_even_with_authorization_off(
    tenancy: Tenancy, name: str
) -> None:
    build_world(tenancy)

    error = tenancy.refuse(name, VALID_BODIES[name], Forbidden, "forbidden", actor=WORKER)
    assert error.details == {"actor": WORKER, "command": name}


@pytest.mark.parametrize("name", USER_COMMANDS)
def test_a_service_actor_may_not_send_user_commands_with_authorization_on(
    secured: Secured, name: str
) -> None:
    t = build_world(secured())

    t.refuse(name, VALID_BODIES[name], Forbidden, "forbidden", actor=WORKER)


@pytest.mark.parametrize("authorization", [None, frozenset({ADMIN})])
def test_a_service_actor_may_send_record_commands(
    secured: Secured, tenancy: Tenancy, authorization: frozenset[str] | None
) -> None:
    t = build_world(tenancy if authorization is None else secured(authorization))
    report = {"workspace": "prod-eu:fraud", "namespace": "fraud"}

    result = t.run("record_namespace_provisioned", report, actor="service:namespaces")

    assert result.events == ["workspace.namespace_provisioned"]


# --- authorization on ---------------------------------------------------------------------


@pytest.mark.parametrize("name", USER_COMMANDS)
def test_a_tenant_admin_may_send_every_user_command(secured: Secured, name: str) -> None:
    t = build_world(secured(frozenset({ADMIN, "user:root@example.com"})))

    t.allow(name, VALID_BODIES[name], actor="user:root@example.com")


@pytest.mark.parametrize("name", TENANT_ADMIN_COMMANDS)
def test_anyone_else_is_forbidden_the_tenant_commands(secured: Secured, name: str) -> None:
    t = build_world(secured())

    error = t.refuse(name, VALID_BODIES[name], Forbidden, "forbidden", actor=BOB)
    assert error.details == {"actor": BOB, "command": name}


@pytest.mark.parametrize("name", RECORD_COMMANDS)
def test_a_user_who_is_not_a_tenant_admin_may_not_send_record_commands(
    secured: Secured, name: str
) -> None:
    t = build_world(secured())

    t.refuse(name, VALID_BODIES[name], Forbidden, "forbidden", actor=BOB)


def test_a_tenant_admin_may_send_record_commands(secured: Secured) -> None:
    t = build_world(secured())

    t.allow("record_namespace_failed", VALID_BODIES["record_namespace_failed"], actor=ADMIN)


def test_a_repo_admin_may_grant_and_revoke_on_their_repo(secured: Secured) -> None:
    t = build_world(secured())
    t.run("grant_repo_access", {"repo": "fraud-models", "subject": ALICE, "role": "admin"})

    t.allow("grant_repo_access", {"repo": "fraud-models", "subject": BOB, "role": "editor"}, ALICE)
    t.allow("revoke_repo_access", {"repo": "fraud-models", "subject": BOB}, actor=ALICE)

    assert BOB not in t.aggregate(MlRepo, "fraud-models").grants


@pytest.mark.parametrize("name", REPO_ADMIN_COMMANDS)
def test_a_repo_admin_may_send_the_commands_on_their_repo(secured: Secured, name: str) -> None:
    t = build_world(secured())
    t.run("grant_repo_access", {"repo": "fraud-models", "subject": ALICE, "role": "admin"})

    t.allow(name, VALID_BODIES[name], actor=ALICE)


@pytest.mark.parametrize("name", REPO_ADMIN_COMMANDS)
def test_a_user_who_is_no_admin_of_the_repo_is_forbidden_its_commands(
    secured: Secured, name: str
) -> None:
    t = build_world(secured())  # BOB holds viewer on fraud-models

    error = t.refuse(name, VALID_BODIES[name], Forbidden, "forbidden", actor=BOB)
    assert error.details == {"actor": BOB, "command": name, "repo": "fraud-models"}


def test_a_repo_admin_may_not_grant_or_revoke_on_another_repo(secured: Secured) -> None:
    t = build_world(secured())
    t.repo("churn-models")
    t.run("grant_repo_access", {"repo": "churn-models", "subject": ALICE, "role": "admin"})

    grant = {"repo": "fraud-models", "subject": BOB, "role": "editor"}
    error = t.refuse("grant_repo_access", grant, Forbidden, "forbidden", actor=ALICE)
    assert error.details == {"actor": ALICE, "command": "grant_repo_access", "repo": "fraud-models"}
    revoke = {"repo": "fraud-models", "subject": BOB}
    t.refuse("revoke_repo_access", revoke, Forbidden, "forbidden", actor=ALICE)


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_a_repo_viewer_or_editor_may_not_manage_its_grants(secured: Secured, role: str) -> None:
    t = build_world(secured())
    t.run("grant_repo_access", {"repo": "fraud-models", "subject": ALICE, "role": role})

    grant = {"repo": "fraud-models", "subject": BOB, "role": "viewer"}
    t.refuse("grant_repo_access", grant, Forbidden, "forbidden", actor=ALICE)
    revoke = {"repo": "fraud-models", "subject": ALICE}
    t.refuse("revoke_repo_access", revoke, Forbidden, "forbidden", actor=ALICE)


def test_a_member_of_a_team_holding_admin_is_a_repo_admin(secured: Secured) -> None:
    t = build_world(secured())  # BOB is in team risk
    t.run("grant_repo_access", {"repo": "fraud-models", "subject": "team:risk", "role": "admin"})

    t.allow("grant_repo_access", {"repo": "fraud-models", "subject": ALICE, "role": "viewer"}, BOB)

    assert t.aggregate(MlRepo, "fraud-models").grants[ALICE].granted_by == BOB
    t.run("remove_team_member", {"team": "risk", "user": "bob@example.com"})
    t.refuse(
        "revoke_repo_access",
        {"repo": "fraud-models", "subject": ALICE},
        Forbidden,
        "forbidden",
        actor=BOB,
    )


def test_a_member_of_a_team_holding_editor_is_no_repo_admin(secured: Secured) -> None:
    t = build_world(secured())
    t.run("grant_repo_access", {"repo": "fraud-models", "subject": "team:risk", "role": "editor"})

    t.refuse(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": ALICE, "role": "viewer"},
        Forbidden,
        "forbidden",
        actor=BOB,
    )


def test_any_user_may_create_a_repo_and_becomes_its_admin(secured: Secured) -> None:
    t = build_world(secured())

    t.repo("alices-models", actor=ALICE)

    grants = t.aggregate(MlRepo, "alices-models").grants
    assert {s: g.role for s, g in grants.items()} == {ALICE: "admin"}
    t.allow("grant_repo_access", {"repo": "alices-models", "subject": BOB, "role": "viewer"}, ALICE)


def test_a_refusal_is_forbidden_and_changes_nothing_even_in_a_multi_aggregate_command(
    secured: Secured,
) -> None:
    t = build_world(secured())

    t.refuse(
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "churn",
            "environment": "dev",
            "ml_repo_access": [{"repo": "fraud-models", "role": "viewer"}],
        },
        Forbidden,
        "forbidden",
        actor=BOB,
    )
