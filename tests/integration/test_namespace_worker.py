"""The namespace provisioner on the real bus: workspaces become namespaces in a GitOps git
repository (real git), follow retagging, label and environment changes, disappear on deletion,
and a root that can't be written ends as `failed`, not as an endless retry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.server.nats_server import NatsServer
from tests.integration.provisioning import (
    Tenancy,
    commits,
    durable_info,
    git,
    git_init,
    running_tenancy,
    running_worker,
    wait_settled,
)
from workers import BackendConfig

FQN = "prod-eu:fraud"
PROVISIONED = "workspace.namespace_provisioned"


@pytest.fixture
async def tenancy(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Tenancy]:
    async with running_tenancy(nats_server, tmp_path / "state") as t:
        await t.cluster()
        yield t


def manifest(root: Path, name: str, cluster: str = "prod-eu") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((root / cluster / name / "namespace.yaml").read_text())
    return loaded


async def test_a_created_workspace_becomes_ready_with_its_manifests_committed(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    root = git_init(tmp_path / "gitops")
    async with running_worker("namespaces", tenancy.url, BackendConfig(gitops_root=root)):
        await tenancy.ok(
            "create_workspace",
            {
                "cluster": "prod-eu",
                "name": "fraud",
                "environment": "prod",
                "labels": {"team": "risk"},
                "annotations": {"example.com/owner": "ana"},
            },
        )
        await tenancy.wait_status("workspace", FQN, "ready")

    namespace = manifest(root, "fraud")
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == "fraud"
    assert namespace["metadata"]["labels"] == {
        "team": "risk",
        "app.kubernetes.io/managed-by": "tenantry",
        "tenantry.io/workspace-fqn": "prod-eu.fraud",
        "tenantry.io/environment": "prod",
        "tenantry.io/production": "true",
        "tenantry.io/optimize-for": "availability",
    }
    assert namespace["metadata"]["annotations"] == {
        "example.com/owner": "ana",
        "tenantry.io/workspace-fqn": "prod-eu:fraud",
    }
    account = yaml.safe_load((root / "prod-eu" / "fraud" / "serviceaccount.yaml").read_text())
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["namespace"] == "fraud"
    assert account["metadata"]["annotations"]["tenantry.io/subject"] == "workspace:prod-eu:fraud"

    # One commit, naming the event it came from; nothing left uncommitted.
    assert commits(root) == 1
    created = tenancy.events("workspace.created", FQN)[0]
    assert f"Tenantry-Event-Id: {created['id']}" in git(root, "log", "-1")
    assert git(root, "status", "--porcelain") == ""
    # The report came from the worker, as a service.
    report = tenancy.events(PROVISIONED, FQN)[0]
    assert report["actor"] == "service:namespaces"
    assert report["data"]["namespace"] == "fraud"


async def test_retagging_relabelling_and_deleting_follow_the_events(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    root = git_init(tmp_path / "gitops")
    async with running_worker("namespaces", tenancy.url, BackendConfig(gitops_root=root)):
        await tenancy.ok(
            "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
        )
        await tenancy.wait_reports(PROVISIONED, FQN, 1)

        await tenancy.ok("set_workspace_environment", {"workspace": FQN, "environment": "dev"})
        await tenancy.wait_reports(PROVISIONED, FQN, 2)
        labels = manifest(root, "fraud")["metadata"]["labels"]
        assert labels["tenantry.io/environment"] == "dev"
        assert labels["tenantry.io/production"] == "false"
        assert labels["tenantry.io/optimize-for"] == "cost"

        await tenancy.ok("update_workspace", {"workspace": FQN, "labels": {"tier": "gold"}})
        await tenancy.wait_reports(PROVISIONED, FQN, 3)
        assert manifest(root, "fraud")["metadata"]["labels"]["tier"] == "gold"

        # The environment's metadata is in the labels of every workspace tagged with it.
        await tenancy.ok("update_environment", {"name": "dev", "color": "#00ff00"})  # not shown
        await tenancy.ok("update_environment", {"name": "dev", "optimize_for": "availability"})
        await tenancy.wait_reports(PROVISIONED, FQN, 4)
        assert manifest(root, "fraud")["metadata"]["labels"]["tenantry.io/optimize-for"] == (
            "availability"
        )
        assert commits(root) == 4

        await tenancy.ok("delete_workspace", {"workspace": FQN})
        await tenancy.wait_status("workspace", FQN, "deleted")
        assert not (root / "prod-eu" / "fraud").exists()

    assert commits(root) == 5
    assert len(tenancy.events(PROVISIONED, FQN)) == 4  # the colour change reported nothing
    assert git(root, "status", "--porcelain") == ""


async def test_running_every_event_again_changes_nothing(tenancy: Tenancy, tmp_path: Path) -> None:
    """The durable is deleted and made anew, so every event is delivered and acted on a
    second time: no commit, no second report (the deterministic command ids are replayed)."""
    root = git_init(tmp_path / "gitops")
    config = BackendConfig(gitops_root=root)
    async with running_worker("namespaces", tenancy.url, config):
        for name in ("fraud", "risk", "churn"):
            await tenancy.ok(
                "create_workspace", {"cluster": "prod-eu", "name": name, "environment": "prod"}
            )
        await tenancy.ok("set_workspace_environment", {"workspace": FQN, "environment": "dev"})
        await tenancy.ok("delete_workspace", {"workspace": "prod-eu:churn"})
        await tenancy.wait_status("workspace", "prod-eu:churn", "deleted")
        await tenancy.wait_reports(PROVISIONED, FQN, 2)
    before = (commits(root), len(tenancy.events()))
    handled = (await durable_info(tenancy.client, "namespaces")).delivered.stream_seq

    await tenancy.client.jetstream().delete_consumer("TENANTRY_EVENTS", "tenantry-namespaces")
    async with running_worker("namespaces", tenancy.url, config):
        await wait_settled(tenancy.client, "namespaces", handled)

    assert (commits(root), len(tenancy.events())) == before
    assert tenancy.workspace(FQN).status == "ready"


async def test_an_unwritable_root_ends_as_failed_with_its_reason(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    """Tests run as root, so a root *below a regular file* is what can't be written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    config = BackendConfig(gitops_root=blocker / "gitops", max_deliver=5, backoff=(0.05,))
    async with running_worker("namespaces", tenancy.url, config):
        await tenancy.ok(
            "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
        )
        await tenancy.wait_status("workspace", FQN, "failed")
        info = await wait_settled(tenancy.client, "namespaces")

    failed = tenancy.events("workspace.namespace_failed", FQN)
    assert len(failed) == 1
    assert "Not a directory" in failed[0]["data"]["detail"]
    # Settled at the first delivery: terminated, not retried.
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 0
