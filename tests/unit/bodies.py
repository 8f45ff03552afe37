"""A valid body for every command, and a world in which each of them succeeds on its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.access_request import request_id

from .support import Tenancy

# The access requests `build_world` opens: one by Alice (for the approvers' commands), one by
# root (for its requester's cancel), named by the command ids that open them.
ALICES_REQUEST = request_id("world-request-alice", 0)
ROOTS_REQUEST = request_id("world-request-root", 0)
ROOT = "user:root@example.com"

VALID_BODIES: dict[str, dict[str, Any]] = {
    "create_environment": {"name": "qa"},
    "update_environment": {"name": "dev", "color": "#00ff00"},
    "delete_environment": {"name": "staging"},
    "register_cluster": {
        "name": "prod-us",
        "region": "eu-west-1",
        "provider": "aws-eks",
        "environments": ["dev"],
    },
    "add_cluster_environment": {"cluster": "prod-eu", "environment": "staging"},
    "remove_cluster_environment": {"cluster": "prod-eu", "environment": "dev"},
    "deregister_cluster": {"cluster": "spare"},
    "create_workspace": {"cluster": "prod-eu", "name": "churn", "environment": "dev"},
    "set_workspace_environment": {"workspace": "prod-eu:fraud", "environment": "dev"},
    "update_workspace": {"workspace": "prod-eu:fraud", "labels": {"team": "risk"}},
    "delete_workspace": {"workspace": "prod-eu:fraud", "force": True},
    "register_application": {"workspace": "prod-eu:fraud", "name": "trainer"},
    "remove_application": {"workspace": "prod-eu:fraud", "name": "scorer"},
    "register_storage_integration": {
        "name": "s3-new",
        "provider": "s3",
        "storage_root": "s3://ml-bucket/repos",
    },
    "remove_storage_integration": {"name": "spare-store"},
    "create_ml_repo": {"name": "churn-models", "storage_integration": "s3-main"},
    "update_ml_repo": {"name": "fraud-models", "description": "models"},
    "grant_repo_access": {
        "repo": "fraud-models",
        "subject": "user:bob@example.com",
        "role": "editor",
    },
    "set_repo_access_policy": {"repo": "fraud-models", "approvals": 1, "max_duration": "30d"},
    "revoke_repo_access": {"repo": "fraud-models", "subject": "user:bob@example.com"},
    "delete_ml_repo": {"name": "fraud-models"},
    "create_team": {"name": "ml-ops", "members": ["bob@example.com"]},
    "add_team_member": {"team": "risk", "user": "carol@example.com"},
    "remove_team_member": {"team": "risk", "user": "bob@example.com"},
    "record_namespace_provisioned": {"workspace": "prod-eu:fraud", "namespace": "fraud"},
    "record_namespace_failed": {"workspace": "prod-eu:fraud", "namespace": "fraud"},
    "record_namespace_deleted": {"workspace": "prod-eu:fraud", "namespace": "fraud"},
    "record_storage_provisioned": {
        "repo": "fraud-models",
        "location": "s3://ml-bucket/repos/fraud-models/",
    },
    "record_storage_failed": {
        "repo": "fraud-models",
        "location": "s3://ml-bucket/repos/fraud-models/",
    },
    "record_storage_deleted": {
        "repo": "fraud-models",
        "location": "s3://ml-bucket/repos/fraud-models/",
    },
    "request_repo_access": {
        "repo": "fraud-models",
        "role": "viewer",
        "reason": "reviewing the models",
        "duration": "12h",
    },
    "approve_access_request": {"request": ALICES_REQUEST, "comment": "fine"},
    "deny_access_request": {"request": ALICES_REQUEST, "reason": "not needed"},
    "cancel_access_request": {"request": ROOTS_REQUEST},
    "break_glass_repo_access": {
        "repo": "fraud-models",
        "subject": "user:carol@example.com",
        "role": "editor",
        "reason": "incident 42",
        "duration": "2h",
    },
}

# --- access reviews (issue 15): a review `q4` of fraud-models is open in the world below.
VALID_BODIES.update(
    {
        "open_access_review": {
            "name": "q1",
            "scope": {"repos": ["fraud-models"]},
            "due": datetime(2099, 1, 1, tzinfo=UTC),
            "on_undecided": "keep",
        },
        # i2: bob's grant (i1 is ana's, the repo's creator).
        "decide_access_review_item": {
            "review": "q4",
            "item": "i2",
            "decision": "keep",
            "reason": "still on the team",
        },
        "close_access_review": {"review": "q4"},
    }
)

RECORD_COMMANDS = sorted(name for name in VALID_BODIES if name.startswith("record_"))
USER_COMMANDS = sorted(name for name in VALID_BODIES if not name.startswith("record_"))


def build_world(t: Tenancy) -> Tenancy:
    """What the bodies above name: each user command (and each record_* command but the
    *_deleted ones) succeeds here, so that only authorization can refuse it."""
    t.cluster("prod-eu", ("dev", "prod"))
    t.cluster("spare", ("dev",))
    t.workspace("prod-eu", "fraud", "prod")
    t.run("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"})
    t.integration("s3-main")
    t.integration("spare-store")
    t.repo("fraud-models")
    t.team("risk", ("bob@example.com",))
    t.run(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": "user:bob@example.com", "role": "viewer"},
    )
    ask = {"repo": "fraud-models", "role": "viewer", "reason": "a look"}
    t.run(
        "request_repo_access", ask, actor="user:alice@example.com", command_id="world-request-alice"
    )
    t.run("request_repo_access", ask, actor=ROOT, command_id="world-request-root")
    t.run("open_access_review", {**VALID_BODIES["open_access_review"], "name": "q4"})
    return t
