"""Aggregate ids derive from natural keys: the same name is always the same aggregate."""

from __future__ import annotations

from uuid import UUID, uuid5

from domain.names import TENANTRY_NAMESPACE

from .support import Tenancy


def test_the_namespace_of_every_stored_id_never_changes() -> None:
    assert UUID("6f1c8a52-3b0e-5d4a-9e57-7c2b1f0a9d13") == TENANTRY_NAMESPACE


def test_each_aggregate_id_is_uuid5_of_kind_and_natural_key(tenancy: Tenancy) -> None:
    results = {
        "environment:qa": tenancy.run("create_environment", {"name": "qa"}),
        "cluster:prod-eu": tenancy.run(
            "register_cluster",
            {"name": "prod-eu", "region": "eu", "provider": "generic", "environments": ["qa"]},
        ),
        "workspace:prod-eu:fraud": tenancy.run(
            "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "qa"}
        ),
        "application:prod-eu:fraud:scorer": tenancy.run(
            "register_application", {"workspace": "prod-eu:fraud", "name": "scorer"}
        ),
        "storage_integration:s3-main": tenancy.run(
            "register_storage_integration",
            {"name": "s3-main", "provider": "s3", "storage_root": "s3://ml-bucket"},
        ),
        "ml_repo:fraud-models": tenancy.run(
            "create_ml_repo", {"name": "fraud-models", "storage_integration": "s3-main"}
        ),
        "team:risk": tenancy.run("create_team", {"name": "risk"}),
    }

    for key, result in results.items():
        assert result.aggregate_id == str(uuid5(TENANTRY_NAMESPACE, key)), key
