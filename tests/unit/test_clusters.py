"""Clusters: existing environments only, environments added and removed, deregistration."""

from __future__ import annotations

from domain.cluster import Cluster
from domain.environment import Environment
from domain.errors import AlreadyExists, NotFound, PreconditionFailed

from .support import Tenancy


def _register(tenancy: Tenancy, name: str, environments: list[str], region: str = "eu-west-1"):
    return tenancy.run(
        "register_cluster",
        {
            "name": name,
            "region": region,
            "provider": "gcp-gke-standard",
            "environments": environments,
            "labels": {"tier": "gold"},
        },
    )


def test_register_records_the_cluster_and_its_fqn_is_its_name(tenancy: Tenancy) -> None:
    result = _register(tenancy, "prod-eu", ["dev", "prod", "dev"])

    assert result.fqn == "prod-eu"
    assert result.events[0] == "cluster.registered"
    cluster = tenancy.aggregate(Cluster, "prod-eu")
    assert (cluster.region, cluster.provider, cluster.environments, cluster.labels) == (
        "eu-west-1",
        "gcp-gke-standard",
        ["dev", "prod"],
        {"tier": "gold"},
    )
    assert tenancy.aggregate(Environment, "prod").clusters == {"prod-eu"}


def test_a_cluster_name_that_exists_is_already_exists(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev"])

    tenancy.refuse(
        "register_cluster",
        {"name": "prod-eu", "region": "us-east-1", "provider": "generic", "environments": ["dev"]},
        AlreadyExists,
        "already_exists",
    )


def test_several_clusters_may_share_a_region(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu-1", ["prod"], region="eu-west-1")
    _register(tenancy, "prod-eu-2", ["prod"], region="eu-west-1")

    assert tenancy.aggregate(Cluster, "prod-eu-2").region == "eu-west-1"


def test_every_environment_of_a_cluster_must_exist(tenancy: Tenancy) -> None:
    error = tenancy.refuse(
        "register_cluster",
        {"name": "prod-eu", "region": "eu", "provider": "generic", "environments": ["dev", "qa"]},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details == {"environment": "qa"}


def test_an_environment_can_be_added_if_it_exists(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev"])

    tenancy.refuse(
        "add_cluster_environment",
        {"cluster": "prod-eu", "environment": "qa"},
        PreconditionFailed,
        "precondition_failed",
    )
    result = tenancy.run("add_cluster_environment", {"cluster": "prod-eu", "environment": "prod"})

    assert result.events == ["cluster.environment_added", "environment.cluster_linked"]
    assert tenancy.aggregate(Cluster, "prod-eu").environments == ["dev", "prod"]


def test_changing_an_unknown_cluster_is_not_found(tenancy: Tenancy) -> None:
    body = {"cluster": "nowhere", "environment": "dev"}
    tenancy.refuse("add_cluster_environment", body, NotFound, "not_found")
    tenancy.refuse("remove_cluster_environment", body, NotFound, "not_found")
    tenancy.refuse("deregister_cluster", {"cluster": "nowhere"}, NotFound, "not_found")


def test_an_environment_no_live_workspace_uses_can_be_removed(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev", "prod"])
    tenancy.workspace("prod-eu", "fraud", "prod")

    result = tenancy.run("remove_cluster_environment", {"cluster": "prod-eu", "environment": "dev"})

    assert result.events == ["cluster.environment_removed", "environment.cluster_unlinked"]
    assert tenancy.aggregate(Cluster, "prod-eu").environments == ["prod"]
    assert tenancy.aggregate(Environment, "dev").clusters == set()


def test_an_environment_a_live_workspace_is_tagged_with_cannot_be_removed(
    tenancy: Tenancy,
) -> None:
    _register(tenancy, "prod-eu", ["dev", "prod"])
    tenancy.workspace("prod-eu", "fraud", "prod")

    error = tenancy.refuse(
        "remove_cluster_environment",
        {"cluster": "prod-eu", "environment": "prod"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details["workspaces"] == ["prod-eu:fraud"]


def test_the_environment_is_removable_once_its_workspace_is_retagged_or_deleted(
    tenancy: Tenancy,
) -> None:
    _register(tenancy, "prod-eu", ["dev", "staging", "prod"])
    tenancy.workspace("prod-eu", "fraud", "prod")
    tenancy.workspace("prod-eu", "churn", "staging")

    tenancy.run("set_workspace_environment", {"workspace": "prod-eu:fraud", "environment": "dev"})
    tenancy.run("delete_workspace", {"workspace": "prod-eu:churn"})

    tenancy.run("remove_cluster_environment", {"cluster": "prod-eu", "environment": "prod"})
    tenancy.run("remove_cluster_environment", {"cluster": "prod-eu", "environment": "staging"})
    assert tenancy.aggregate(Cluster, "prod-eu").environments == ["dev"]


def test_removing_an_environment_the_cluster_does_not_offer_is_refused(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev", "prod"])

    tenancy.refuse(
        "remove_cluster_environment",
        {"cluster": "prod-eu", "environment": "staging"},
        PreconditionFailed,
        "precondition_failed",
    )


def test_a_cluster_keeps_at_least_one_environment(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev"])

    tenancy.refuse(
        "remove_cluster_environment",
        {"cluster": "prod-eu", "environment": "dev"},
        PreconditionFailed,
        "precondition_failed",
    )


def test_a_cluster_with_live_workspaces_cannot_be_deregistered(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["prod"])
    tenancy.workspace("prod-eu", "fraud", "prod")

    error = tenancy.refuse(
        "deregister_cluster", {"cluster": "prod-eu"}, PreconditionFailed, "precondition_failed"
    )
    assert error.details["workspaces"] == ["prod-eu:fraud"]


def test_deregistering_unlinks_its_environments_and_ends_the_cluster(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev", "prod"])
    tenancy.workspace("prod-eu", "fraud", "prod")
    tenancy.run("delete_workspace", {"workspace": "prod-eu:fraud"})

    result = tenancy.run("deregister_cluster", {"cluster": "prod-eu"})

    assert result.events == [
        "cluster.deregistered",
        "environment.cluster_unlinked",
        "environment.cluster_unlinked",
    ]
    assert not tenancy.aggregate(Cluster, "prod-eu").live
    tenancy.refuse(
        "create_workspace",
        {"cluster": "prod-eu", "name": "churn", "environment": "prod"},
        PreconditionFailed,
        "precondition_failed",
    )
    tenancy.refuse(
        "add_cluster_environment",
        {"cluster": "prod-eu", "environment": "staging"},
        NotFound,
        "not_found",
    )


def test_a_deregistered_cluster_may_be_registered_again(tenancy: Tenancy) -> None:
    _register(tenancy, "prod-eu", ["dev"])
    tenancy.run("deregister_cluster", {"cluster": "prod-eu"})

    result = _register(tenancy, "prod-eu", ["prod"], region="us-east-1")

    assert result.events == ["cluster.reregistered", "environment.cluster_linked"]
    cluster = tenancy.aggregate(Cluster, "prod-eu")
    assert (cluster.live, cluster.region, cluster.environments) == (True, "us-east-1", ["prod"])
