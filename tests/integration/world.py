"""A realistic tenancy built by commands, shared by the projection and query tests."""

from __future__ import annotations

from typing import Any

ADMIN = "user:root@example.com"
NAMESPACES = "service:namespaces"
STORAGE = "service:storage"

Step = tuple[str, dict[str, Any], str]

# Two clusters, two repos, a team, two workspaces with grants, an application, provisioned.
WORLD: list[Step] = [
    (
        "register_cluster",
        {
            "name": "prod-eu",
            "region": "eu-west-1",
            "provider": "aws-eks",
            "environments": ["prod", "dev"],
            "labels": {"tier": "gold"},
        },
        ADMIN,
    ),
    (
        "register_cluster",
        {"name": "dev-us", "region": "us-east-1", "provider": "generic", "environments": ["dev"]},
        ADMIN,
    ),
    (
        "register_storage_integration",
        {
            "name": "s3-main",
            "provider": "s3",
            "storage_root": "s3://ml-bucket/repos",
            "region": "eu-west-1",
        },
        ADMIN,
    ),
    (
        "create_ml_repo",
        {"name": "fraud-models", "storage_integration": "s3-main", "description": "fraud"},
        ADMIN,
    ),
    ("create_ml_repo", {"name": "churn-models", "storage_integration": "s3-main"}, ADMIN),
    ("create_team", {"name": "risk", "members": ["bo@example.com", "cy@example.com"]}, ADMIN),
    (
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "labels": {"team": "risk"},
            "annotations": {"owner": "risk"},
            "ml_repo_access": [{"repo": "fraud-models", "role": "editor"}],
        },
        ADMIN,
    ),
    ("create_workspace", {"cluster": "dev-us", "name": "sandbox", "environment": "dev"}, ADMIN),
    ("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"}, ADMIN),
    (
        "grant_repo_access",
        {"repo": "fraud-models", "subject": "team:risk", "role": "editor", "reason": "on call"},
        ADMIN,
    ),
    (
        "grant_repo_access",
        {"repo": "fraud-models", "subject": "user:bo@example.com", "role": "viewer"},
        ADMIN,
    ),
    (
        "grant_repo_access",
        {
            "repo": "churn-models",
            "subject": "workspace:dev-us:sandbox",
            "role": "viewer",
            "managed_by": "apply",
        },
        ADMIN,
    ),
    # An access request, pending (issue 15).
    (
        "request_repo_access",
        {
            "repo": "fraud-models",
            "subject": "user:cy@example.com",
            "role": "viewer",
            "reason": "a look",
        },
        "user:bo@example.com",
    ),
    (
        "record_namespace_provisioned",
        {"workspace": "prod-eu:fraud", "namespace": "fraud"},
        NAMESPACES,
    ),
    (
        "record_storage_provisioned",
        {"repo": "fraud-models", "location": "s3://ml-bucket/repos/fraud-models/"},
        STORAGE,
    ),
]

# Then the world changes: every kind of update, removal, deletion and recreation.
# What the views answer of the world's prod-eu cluster and its fraud workspace.
PROD_EU: dict[str, Any] = {
    "name": "prod-eu",
    "region": "eu-west-1",
    "provider": "aws-eks",
    "environments": ["prod", "dev"],
    "labels": {"tier": "gold"},
}
FRAUD: dict[str, Any] = {
    "fqn": "prod-eu:fraud",
    "cluster": "prod-eu",
    "name": "fraud",
    "environment": "prod",
    "is_production": True,
    "labels": {"team": "risk"},
    "annotations": {"owner": "risk"},
    "status": "ready",
    "failure": None,
    "applications": ["scorer"],
}

CHANGES: list[Step] = [
    ("update_environment", {"name": "dev", "color": "#00ff00"}, ADMIN),
    ("create_environment", {"name": "qa", "optimize_for": "availability"}, ADMIN),
    ("add_cluster_environment", {"cluster": "dev-us", "environment": "qa"}, ADMIN),
    ("set_workspace_environment", {"workspace": "dev-us:sandbox", "environment": "qa"}, ADMIN),
    ("update_workspace", {"workspace": "prod-eu:fraud", "labels": {"team": "fraud"}}, ADMIN),
    ("update_ml_repo", {"name": "fraud-models", "description": "fraud detection"}, ADMIN),
    ("add_team_member", {"team": "risk", "user": "di@example.com"}, ADMIN),
    ("remove_team_member", {"team": "risk", "user": "cy@example.com"}, ADMIN),
    (
        "grant_repo_access",
        {
            "repo": "fraud-models",
            "subject": "user:bo@example.com",
            "role": "admin",
            "managed_by": "apply",
        },
        ADMIN,
    ),
    ("revoke_repo_access", {"repo": "fraud-models", "subject": "team:risk"}, ADMIN),
    ("register_application", {"workspace": "dev-us:sandbox", "name": "notebook"}, ADMIN),
    ("remove_application", {"workspace": "prod-eu:fraud", "name": "scorer"}, ADMIN),
    ("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"}, ADMIN),
    ("delete_workspace", {"workspace": "dev-us:sandbox", "force": True}, ADMIN),
    (
        "record_namespace_deleted",
        {"workspace": "dev-us:sandbox", "namespace": "sandbox"},
        NAMESPACES,
    ),
    ("remove_cluster_environment", {"cluster": "dev-us", "environment": "qa"}, ADMIN),
    ("delete_ml_repo", {"name": "churn-models", "delete_storage": True}, ADMIN),
    (
        "record_storage_deleted",
        {"repo": "churn-models", "location": "s3://ml-bucket/repos/churn-models/"},
        STORAGE,
    ),
    ("create_ml_repo", {"name": "churn-models", "storage_integration": "s3-main"}, ADMIN),
    ("delete_environment", {"name": "qa"}, ADMIN),
    ("deregister_cluster", {"cluster": "dev-us"}, ADMIN),
    (
        "register_cluster",
        {"name": "dev-us", "region": "us-east-2", "provider": "generic", "environments": ["dev"]},
        ADMIN,
    ),
    ("create_workspace", {"cluster": "dev-us", "name": "sandbox", "environment": "dev"}, ADMIN),
    (
        "register_storage_integration",
        {"name": "gcs-old", "provider": "gcs", "storage_root": "gs://old-bucket"},
        ADMIN,
    ),
    ("remove_storage_integration", {"name": "gcs-old"}, ADMIN),
    # The recreated repo's storage fails: the view keeps why, while it is failed.
    (
        "record_storage_failed",
        {
            "repo": "churn-models",
            "location": "s3://ml-bucket/repos/churn-models/",
            "detail": "AccessDenied: the bucket policy refused the change",
        },
        STORAGE,
    ),
    # A grant with a deadline (far off), and an access policy capping the grants of a repo.
    (
        "grant_repo_access",
        {"repo": "fraud-models", "subject": "user:eve@example.com", "role": "viewer"}
        | {"duration": "3650d"},
        ADMIN,
    ),
    (
        "set_repo_access_policy",
        {"repo": "churn-models", "approvals": 1, "max_duration": "30d"},
        ADMIN,
    ),
]

# Access reviews (issue 15): a review of fraud-models, one item decided, then closed (i1 is
# team:risk's grant: items are ordered by repo, then subject).
CHANGES += [
    (
        "open_access_review",
        {"name": "q4", "scope": {"repos": ["fraud-models"]}, "due": "2999-01-01T00:00:00Z"},
        ADMIN,
    ),
    (
        "decide_access_review_item",
        {"review": "q4", "item": "i1", "decision": "keep", "reason": "still on call"},
        ADMIN,
    ),
    ("close_access_review", {"review": "q4"}, ADMIN),
]
