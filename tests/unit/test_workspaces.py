"""Workspaces: one of their cluster's environments, repo access on create, status, deletion."""

from __future__ import annotations

import pytest

from domain.application import Application
from domain.cluster import Cluster
from domain.errors import AlreadyExists, NotFound, PreconditionFailed
from domain.ml_repo import MlRepo
from domain.names import identity
from domain.workspace import Workspace

from .support import Tenancy


@pytest.fixture
def cluster(tenancy: Tenancy) -> Tenancy:
    tenancy.cluster("prod-eu", ("dev", "prod"))
    return tenancy


def test_create_names_it_cluster_colon_name_with_its_own_subject(cluster: Tenancy) -> None:
    result = cluster.run(
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "labels": {"team": "risk"},
            "annotations": {"example.com/owner": "ana@example.com"},
        },
    )

    assert result.fqn == "prod-eu:fraud"
    assert result.aggregate_id == str(identity("workspace", "prod-eu:fraud"))
    assert result.events == ["workspace.created", "cluster.workspace_attached"]
    workspace = cluster.aggregate(Workspace, "prod-eu", "fraud")
    assert workspace.subject == "workspace:prod-eu:fraud"
    assert (workspace.environment, workspace.labels, workspace.annotations, workspace.status) == (
        "prod",
        {"team": "risk"},
        {"example.com/owner": "ana@example.com"},
        "pending",
    )


def test_the_cluster_must_exist(tenancy: Tenancy) -> None:
    error = tenancy.refuse(
        "create_workspace",
        {"cluster": "nowhere", "name": "fraud", "environment": "dev"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details == {"cluster": "nowhere"}


def test_names_are_unique_per_cluster(cluster: Tenancy) -> None:
    cluster.cluster("prod-us", ("prod",))
    cluster.workspace("prod-eu", "fraud", "prod")

    cluster.workspace("prod-us", "fraud", "prod")  # the same name on another cluster
    cluster.refuse(
        "create_workspace",
        {"cluster": "prod-eu", "name": "fraud", "environment": "dev"},
        AlreadyExists,
        "already_exists",
    )


def test_its_environment_must_be_one_of_its_clusters_naming_them(cluster: Tenancy) -> None:
    error = cluster.refuse(
        "create_workspace",
        {"cluster": "prod-eu", "name": "fraud", "environment": "staging"},
        PreconditionFailed,
        "precondition_failed",
    )

    assert error.details["environments"] == ["dev", "prod"]
    assert "['dev', 'prod']" in error.message


def test_it_can_be_retagged_with_another_environment_of_its_cluster(cluster: Tenancy) -> None:
    cluster.workspace("prod-eu", "fraud", "prod")

    result = cluster.run(
        "set_workspace_environment", {"workspace": "prod-eu:fraud", "environment": "dev"}
    )

    assert result.events == ["cluster.workspace_attached", "workspace.environment_set"]
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").environment == "dev"
    assert cluster.aggregate(Cluster, "prod-eu").workspaces == {"fraud": "dev"}


def test_retagging_checks_the_clusters_environments_at_that_moment(cluster: Tenancy) -> None:
    cluster.workspace("prod-eu", "fraud", "prod")
    body = {"workspace": "prod-eu:fraud", "environment": "staging"}

    error = cluster.refuse(
        "set_workspace_environment", body, PreconditionFailed, "precondition_failed"
    )
    assert error.details["environments"] == ["dev", "prod"]

    cluster.run("add_cluster_environment", {"cluster": "prod-eu", "environment": "staging"})
    cluster.run("set_workspace_environment", body)
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").environment == "staging"


def test_labels_and_annotations_can_be_updated(cluster: Tenancy) -> None:
    cluster.workspace("prod-eu", "fraud", "prod", labels={"a": "1"}, annotations={"n": "x"})

    cluster.run("update_workspace", {"workspace": "prod-eu:fraud", "labels": {"b": "2"}})

    workspace = cluster.aggregate(Workspace, "prod-eu", "fraud")
    assert (workspace.labels, workspace.annotations) == ({"b": "2"}, {"n": "x"})


def test_an_unknown_workspace_is_not_found(cluster: Tenancy) -> None:
    cluster.refuse(
        "set_workspace_environment",
        {"workspace": "prod-eu:nope", "environment": "dev"},
        NotFound,
        "not_found",
    )
    cluster.refuse("delete_workspace", {"workspace": "prod-eu:nope"}, NotFound, "not_found")


def test_repo_access_given_on_create_is_granted_in_the_same_transaction(
    cluster: Tenancy,
) -> None:
    cluster.integration()
    cluster.repo("fraud-models")
    cluster.repo("shared-features")
    before = cluster.position()

    result = cluster.run(
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "ml_repo_access": [
                {"repo": "fraud-models", "role": "editor"},
                {"repo": "shared-features", "role": "viewer"},
            ],
        },
    )

    assert result.events.count("ml_repo.access_granted") == 2
    assert result.position == cluster.position()
    grants = [e for e in cluster.events(before) if e["type"] == "ml_repo.access_granted"]
    assert [(g["subject"], g["role"]) for g in grants] == [
        ("workspace:prod-eu:fraud", "editor"),
        ("workspace:prod-eu:fraud", "viewer"),
    ]
    assert {e["command_id"] for e in cluster.events(before)} == {result.command_id}
    assert cluster.aggregate(MlRepo, "fraud-models").grants["workspace:prod-eu:fraud"].role == (
        "editor"
    )


def test_a_workspace_whose_repo_access_cannot_be_granted_is_not_created(cluster: Tenancy) -> None:
    cluster.integration()
    cluster.repo("fraud-models")
    body = {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}

    cluster.refuse(
        "create_workspace",
        {**body, "ml_repo_access": [{"repo": "missing", "role": "viewer"}]},
        PreconditionFailed,
        "precondition_failed",
    )
    cluster.refuse(
        "create_workspace",
        {**body, "ml_repo_access": [{"repo": "fraud-models", "role": "admin"}]},
        PreconditionFailed,
        "precondition_failed",
    )
    cluster.refuse(
        "set_workspace_environment",
        {"workspace": "prod-eu:fraud", "environment": "dev"},
        NotFound,
        "not_found",
    )


def test_status_follows_the_namespace_provisioner(cluster: Tenancy) -> None:
    fqn = cluster.workspace("prod-eu", "fraud", "prod")
    report = {"workspace": fqn, "namespace": "fraud"}

    cluster.run("record_namespace_failed", {**report, "detail": "quota exceeded"})
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").status == "failed"
    cluster.run("record_namespace_provisioned", report)
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").status == "ready"
    cluster.run("delete_workspace", {"workspace": fqn})
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").status == "deleting"
    cluster.run("record_namespace_deleted", report)
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").status == "deleted"


def test_a_namespace_is_recorded_deleted_only_after_deletion_was_asked(cluster: Tenancy) -> None:
    fqn = cluster.workspace("prod-eu", "fraud", "prod")

    error = cluster.refuse(
        "record_namespace_deleted",
        {"workspace": fqn, "namespace": "fraud"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details["status"] == "pending"


def test_a_deleting_workspace_is_not_provisioned_again(cluster: Tenancy) -> None:
    fqn = cluster.workspace("prod-eu", "fraud", "prod")
    cluster.run("delete_workspace", {"workspace": fqn})

    for name in ("record_namespace_provisioned", "record_namespace_failed"):
        cluster.refuse(
            name,
            {"workspace": fqn, "namespace": "fraud"},
            PreconditionFailed,
            "precondition_failed",
        )


def test_reports_about_an_unknown_workspace_are_not_found(cluster: Tenancy) -> None:
    cluster.refuse(
        "record_namespace_provisioned",
        {"workspace": "prod-eu:ghost", "namespace": "ghost"},
        NotFound,
        "not_found",
    )


def test_deleting_a_workspace_with_applications_needs_force(cluster: Tenancy) -> None:
    fqn = cluster.workspace("prod-eu", "fraud", "prod")
    cluster.run("register_application", {"workspace": fqn, "name": "scorer"})

    error = cluster.refuse(
        "delete_workspace", {"workspace": fqn}, PreconditionFailed, "precondition_failed"
    )
    assert error.details["applications"] == ["scorer"]


def test_a_forced_deletion_removes_its_applications(cluster: Tenancy) -> None:
    fqn = cluster.workspace("prod-eu", "fraud", "prod")
    cluster.run("register_application", {"workspace": fqn, "name": "scorer"})
    cluster.run("register_application", {"workspace": fqn, "name": "trainer"})

    result = cluster.run("delete_workspace", {"workspace": fqn, "force": True})

    assert result.events.count("application.removed") == 2
    assert not cluster.aggregate(Application, fqn, "scorer").live
    assert not cluster.aggregate(Application, fqn, "trainer").live
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").applications == set()


def test_deleting_ends_its_repo_grants_and_asks_for_the_namespace_removal(
    cluster: Tenancy,
) -> None:
    cluster.integration()
    cluster.repo("fraud-models")
    cluster.repo("shared-features")
    fqn = cluster.workspace(
        "prod-eu", "fraud", "prod", ml_repo_access=[{"repo": "fraud-models", "role": "editor"}]
    )
    cluster.run(
        "grant_repo_access",
        {"repo": "shared-features", "subject": f"workspace:{fqn}", "role": "viewer"},
    )
    before = cluster.position()

    cluster.run("delete_workspace", {"workspace": fqn})

    events = cluster.events(before)
    ended = [e for e in events if e["type"] == "ml_repo.access_revoked"]
    assert sorted((e["subject"], e["previous_role"]) for e in ended) == [
        ("workspace:prod-eu:fraud", "editor"),
        ("workspace:prod-eu:fraud", "viewer"),
    ]
    assert {e["reason"] for e in ended} == {"workspace prod-eu:fraud deleted"}
    asked = [e for e in events if e["type"] == "workspace.deletion_requested"]
    assert [e["force"] for e in asked] == [False]
    for repo in ("fraud-models", "shared-features"):
        assert "workspace:prod-eu:fraud" not in cluster.aggregate(MlRepo, repo).grants
    assert cluster.aggregate(Workspace, "prod-eu", "fraud").repos == set()
    assert cluster.aggregate(Cluster, "prod-eu").workspaces == {}


def test_a_deleted_workspace_is_gone_and_may_be_created_again_keeping_its_history(
    cluster: Tenancy,
) -> None:
    fqn = cluster.workspace("prod-eu", "fraud", "prod", labels={"gen": "one"})
    cluster.run("delete_workspace", {"workspace": fqn})
    cluster.run("record_namespace_deleted", {"workspace": fqn, "namespace": "fraud"})
    cluster.refuse("update_workspace", {"workspace": fqn, "labels": {}}, NotFound, "not_found")
    cluster.refuse(
        "register_application", {"workspace": fqn, "name": "scorer"}, NotFound, "not_found"
    )

    result = cluster.run(
        "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "dev"}
    )

    assert result.events == ["workspace.recreated", "cluster.workspace_attached"]
    workspace = cluster.aggregate(Workspace, "prod-eu", "fraud")
    assert (workspace.status, workspace.environment, workspace.labels) == ("pending", "dev", {})
    history = [e["type"] for e in cluster.events() if e["originator_id"] == workspace.id]
    assert history == [
        "workspace.created",
        "workspace.deletion_requested",
        "workspace.namespace_deleted",
        "workspace.recreated",
    ]


def test_a_workspace_is_not_created_again_while_its_namespace_is_still_being_removed(
    cluster: Tenancy,
) -> None:
    """Else the namespace worker's report of the old namespace's removal would be refused (the
    workspace is pending again) and the new workspace would be provisioned over a namespace
    still being deleted."""
    fqn = cluster.workspace("prod-eu", "fraud", "prod")
    cluster.run("delete_workspace", {"workspace": fqn})
    before = cluster.position()

    error = cluster.refuse(
        "create_workspace",
        {"cluster": "prod-eu", "name": "fraud", "environment": "dev"},
        PreconditionFailed,
        "precondition_failed",
    )

    assert "still being deleted" in error.message
    assert (error.details["workspace"], error.details["status"]) == (fqn, "deleting")
    assert cluster.position() == before
    cluster.run("record_namespace_deleted", {"workspace": fqn, "namespace": "fraud"})
    result = cluster.run(
        "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "dev"}
    )
    assert result.events == ["workspace.recreated", "cluster.workspace_attached"]
