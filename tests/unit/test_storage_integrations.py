"""Storage integrations: unique, the root repos live under, not removable while repos live."""

from __future__ import annotations

import pytest

from domain.errors import AlreadyExists, NotFound, PreconditionFailed
from domain.ml_repo import MlRepo
from domain.storage_integration import StorageIntegration

from .support import Tenancy


def test_register_records_provider_root_and_region(tenancy: Tenancy) -> None:
    result = tenancy.run(
        "register_storage_integration",
        {
            "name": "gcs-eu",
            "provider": "gcs",
            "storage_root": "gs://ml-eu/repos",
            "region": "europe-west4",
        },
    )

    assert (result.fqn, result.events) == ("gcs-eu", ["storage_integration.registered"])
    integration = tenancy.aggregate(StorageIntegration, "gcs-eu")
    assert (integration.provider, integration.storage_root, integration.region) == (
        "gcs",
        "gs://ml-eu/repos",
        "europe-west4",
    )


def test_a_name_that_exists_is_already_exists(tenancy: Tenancy) -> None:
    tenancy.integration("s3-main")

    tenancy.refuse(
        "register_storage_integration",
        {"name": "s3-main", "provider": "local", "storage_root": "file:///srv/ml"},
        AlreadyExists,
        "already_exists",
    )


@pytest.mark.parametrize(
    ("provider", "root", "location"),
    [
        ("s3", "s3://ml-bucket/repos", "s3://ml-bucket/repos/fraud-models/"),
        ("s3", "s3://ml-bucket/repos/", "s3://ml-bucket/repos/fraud-models/"),
        ("s3", "s3://ml-bucket", "s3://ml-bucket/fraud-models/"),
        ("gcs", "gs://ml-eu/a/b", "gs://ml-eu/a/b/fraud-models/"),
        ("azure-blob", "az://mlstore/repos", "az://mlstore/repos/fraud-models/"),
        ("local", "file:///srv/ml", "file:///srv/ml/fraud-models/"),
        ("local", "file:///srv/ml/", "file:///srv/ml/fraud-models/"),
    ],
)
def test_a_repos_location_is_storage_root_slash_name_slash(
    tenancy: Tenancy, provider: str, root: str, location: str
) -> None:
    tenancy.run(
        "register_storage_integration",
        {"name": "store", "provider": provider, "storage_root": root},
    )
    tenancy.repo("fraud-models", integration="store")

    assert tenancy.aggregate(MlRepo, "fraud-models").location == location


def test_an_integration_with_live_repos_cannot_be_removed(tenancy: Tenancy) -> None:
    tenancy.integration("s3-main")
    tenancy.repo("fraud-models")
    tenancy.repo("churn-models")

    error = tenancy.refuse(
        "remove_storage_integration",
        {"name": "s3-main"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details["repos"] == ["churn-models", "fraud-models"]


def test_an_integration_can_be_removed_once_its_repos_are_deleted(tenancy: Tenancy) -> None:
    tenancy.integration("s3-main")
    tenancy.repo("fraud-models")
    tenancy.run("delete_ml_repo", {"name": "fraud-models"})

    result = tenancy.run("remove_storage_integration", {"name": "s3-main"})

    assert result.events == ["storage_integration.removed"]
    tenancy.refuse("remove_storage_integration", {"name": "s3-main"}, NotFound, "not_found")


def test_a_removed_integration_takes_no_new_repos_and_may_be_registered_again(
    tenancy: Tenancy,
) -> None:
    tenancy.integration("s3-main")
    tenancy.run("remove_storage_integration", {"name": "s3-main"})

    tenancy.refuse(
        "create_ml_repo",
        {"name": "fraud-models", "storage_integration": "s3-main"},
        PreconditionFailed,
        "precondition_failed",
    )
    result = tenancy.integration("s3-main", root="s3://other-bucket")
    assert tenancy.aggregate(StorageIntegration, "s3-main").storage_root == "s3://other-bucket"
    assert result == "s3-main"
