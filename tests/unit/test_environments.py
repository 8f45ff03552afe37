"""Environments: unique names, production/optimisation metadata, not deletable while in use."""

from __future__ import annotations

from domain.environment import Environment
from domain.errors import AlreadyExists, NotFound, PreconditionFailed

from .support import Tenancy


def test_create_records_the_metadata(tenancy: Tenancy) -> None:
    result = tenancy.run(
        "create_environment",
        {"name": "qa", "is_production": True, "optimize_for": "availability", "color": "#1a2B3c"},
    )

    assert (result.fqn, result.version, result.events) == ("qa", 1, ["environment.created"])
    env = tenancy.aggregate(Environment, "qa")
    assert (env.name, env.is_production, env.optimize_for, env.color) == (
        "qa",
        True,
        "availability",
        "#1a2B3c",
    )


def test_create_defaults_to_a_non_production_cost_environment_without_color(
    tenancy: Tenancy,
) -> None:
    tenancy.run("create_environment", {"name": "qa"})

    env = tenancy.aggregate(Environment, "qa")
    assert (env.is_production, env.optimize_for, env.color) == (False, "cost", None)


def test_a_name_that_exists_is_already_exists(tenancy: Tenancy) -> None:
    tenancy.run("create_environment", {"name": "qa"})

    error = tenancy.refuse("create_environment", {"name": "qa"}, AlreadyExists, "already_exists")
    assert error.details == {"kind": "environment", "name": "qa"}


def test_update_changes_only_the_given_fields(tenancy: Tenancy) -> None:
    tenancy.run("create_environment", {"name": "qa", "color": "#000000"})

    result = tenancy.run("update_environment", {"name": "qa", "optimize_for": "availability"})

    assert result.events == ["environment.updated"]
    env = tenancy.aggregate(Environment, "qa")
    assert (env.is_production, env.optimize_for, env.color) == (False, "availability", "#000000")


def test_an_update_that_changes_nothing_records_nothing(tenancy: Tenancy) -> None:
    tenancy.run("create_environment", {"name": "qa", "optimize_for": "availability"})

    result = tenancy.run("update_environment", {"name": "qa", "optimize_for": "availability"})

    assert result.events == []
    assert tenancy.aggregate(Environment, "qa").version == 1


def test_update_or_delete_of_an_unknown_environment_is_not_found(tenancy: Tenancy) -> None:
    tenancy.refuse(
        "update_environment", {"name": "nope", "is_production": True}, NotFound, "not_found"
    )
    tenancy.refuse("delete_environment", {"name": "nope"}, NotFound, "not_found")


def test_an_environment_used_by_a_cluster_cannot_be_deleted(tenancy: Tenancy) -> None:
    tenancy.cluster("prod-eu", ("dev", "prod"))
    tenancy.cluster("prod-us", ("prod",))

    error = tenancy.refuse(
        "delete_environment", {"name": "prod"}, PreconditionFailed, "precondition_failed"
    )
    assert error.details == {"environment": "prod", "clusters": ["prod-eu", "prod-us"]}


def test_an_environment_can_be_deleted_once_no_cluster_offers_it(tenancy: Tenancy) -> None:
    tenancy.cluster("prod-eu", ("dev", "prod"))
    tenancy.cluster("prod-us", ("prod",))
    tenancy.run("remove_cluster_environment", {"cluster": "prod-eu", "environment": "prod"})
    tenancy.run("deregister_cluster", {"cluster": "prod-us"})

    result = tenancy.run("delete_environment", {"name": "prod"})

    assert result.events == ["environment.deleted"]
    assert not tenancy.aggregate(Environment, "prod").live


def test_a_deleted_environment_is_gone_and_may_be_created_again(tenancy: Tenancy) -> None:
    tenancy.run("create_environment", {"name": "qa", "is_production": True})
    tenancy.run("delete_environment", {"name": "qa"})

    tenancy.refuse("update_environment", {"name": "qa", "color": "#ffffff"}, NotFound, "not_found")
    tenancy.refuse(
        "register_cluster",
        {"name": "c-1", "region": "eu", "provider": "generic", "environments": ["qa"]},
        PreconditionFailed,
        "precondition_failed",
    )
    result = tenancy.run("create_environment", {"name": "qa"})

    assert result.events == ["environment.recreated"]
    env = tenancy.aggregate(Environment, "qa")
    assert (env.live, env.is_production, env.version) == (True, False, 3)
