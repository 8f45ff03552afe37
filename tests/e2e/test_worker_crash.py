"""Worker processes SIGKILLed in the middle of a stream of events and restarted: no action is
lost and none is done twice in effect (git commits and S3 PUTs counted), every report is
recorded once, and SIGTERM ends a worker cleanly.

The command service and the relay run in this process; the worker runs as its own process
(`tests/e2e/worker_process.py`), against a real nats-server, real git and moto's S3 server.
All the commands are sent before the worker first starts, so the end state of the world is
known, and with it exactly how many writes reaching it takes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

from tenantry.server.nats_server import NatsServer
from tests.integration.provisioning import (
    Tenancy,
    commits,
    git,
    git_init,
    running_tenancy,
    start_worker_process,
    wait_settled,
)
from tests.integration.s3_server import ACCESS_KEY, SECRET_KEY, CountingProxy
from tests.integration.streams import wait_for_stream
from workers import BackendConfig


@pytest.fixture
async def tenancy(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Tenancy]:
    async with running_tenancy(nats_server, tmp_path / "state") as t:
        await t.cluster()
        yield t


async def crash_and_restart(
    start: Callable[[], subprocess.Popen[bytes]], progress: Callable[[], int], kills: list[int]
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start the worker; each time `progress` reaches the next of `kills`, SIGKILL it and start
    it again. Returns the last (running) process and the progress seen at each kill."""
    seen = []
    process = start()
    for mark in kills:
        deadline = time.monotonic() + 30
        while progress() < mark:
            assert process.poll() is None, "the worker died by itself"
            assert time.monotonic() < deadline, f"no progress past {progress()}"
            await asyncio.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        seen.append(progress())
        process = start()
    return process, seen


def namespaces_written(root: Path) -> int:
    """Cheap enough to poll every few milliseconds (a `git` process each time is not)."""
    try:
        return len(os.listdir(root / "prod-eu"))
    except FileNotFoundError:
        return 0


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM: the worker finishes what it holds, unsubscribes, drains and exits 0."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 5


async def test_the_namespace_worker_killed_mid_stream_commits_each_change_once(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    live, retagged, deleted = range(0, 30), range(0, 10), range(30, 40)
    for i in range(40):
        await tenancy.ok(
            "create_workspace", {"cluster": "prod-eu", "name": f"ws-{i:02}", "environment": "prod"}
        )
    for i in retagged:
        await tenancy.ok(
            "set_workspace_environment", {"workspace": f"prod-eu:ws-{i:02}", "environment": "dev"}
        )
    for i in deleted:
        await tenancy.ok("delete_workspace", {"workspace": f"prod-eu:ws-{i:02}"})
    js = tenancy.client.jetstream()
    await wait_for_stream(js, tenancy.service.recorder)

    root = git_init(tmp_path / "gitops")
    config = BackendConfig(gitops_root=root, ack_wait=0.5)
    log = tmp_path / "worker.log"
    process, seen = await crash_and_restart(
        lambda: start_worker_process("namespaces", tenancy.url, config, log),
        lambda: namespaces_written(root),
        kills=[6, 16],
    )
    try:
        await wait_settled(tenancy.client, "namespaces", timeout=30)
    finally:
        stop(process, log)

    assert all(0 < s < len(live) for s in seen), seen  # killed mid-stream, twice
    assert log.read_text().count('"worker.started"') == 3
    # The end state is reached with one commit per namespace that exists at the end (the
    # retags were already in the stream, the deleted workspaces never needed a namespace),
    # none repeated across the crashes, nothing left uncommitted.
    assert commits(root) == len(live)
    trailers = re.findall(r"Tenantry-Event-Id: (\S+)", git(root, "log"))
    created = {e["fqn"]: e["id"] for e in tenancy.events("workspace.created")}
    assert sorted(trailers) == sorted(created[f"prod-eu:ws-{i:02}"] for i in live)
    assert git(root, "status", "--porcelain") == ""
    assert sorted(p.name for p in (root / "prod-eu").iterdir()) == [f"ws-{i:02}" for i in live]
    for i in live:
        namespace = yaml.safe_load((root / "prod-eu" / f"ws-{i:02}" / "namespace.yaml").read_text())
        labels = namespace["metadata"]["labels"]
        assert labels["tenantry.io/environment"] == ("dev" if i in retagged else "prod")

    # Every event reported once, whatever the crashes: the redelivered ones were replays.
    for i in live:
        fqn = f"prod-eu:ws-{i:02}"
        assert tenancy.workspace(fqn).status == "ready"
        events = 2 if i in retagged else 1
        assert len(tenancy.events("workspace.namespace_provisioned", fqn)) == events
    for i in deleted:
        fqn = f"prod-eu:ws-{i:02}"
        assert tenancy.workspace(fqn).status == "deleted"
        assert len(tenancy.events("workspace.namespace_deleted", fqn)) == 1
        assert tenancy.events("workspace.namespace_provisioned", fqn) == []


async def test_the_storage_worker_killed_mid_stream_puts_each_object_once(
    tenancy: Tenancy, s3_proxy: CountingProxy, tmp_path: Path
) -> None:
    await tenancy.ok(
        "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
    )
    await tenancy.integration("s3-main", "s3://ml-bucket/repos", provider="s3")
    await tenancy.ok("create_team", {"name": "risk"})
    repos = [f"repo-{i:02}" for i in range(16)]
    deleted = set(repos[:4])  # the first ones, so the bucket is missing when they are handled
    for repo in repos:
        await tenancy.ok("create_ml_repo", {"name": repo, "storage_integration": "s3-main"})
        for subject, role in (("workspace:prod-eu:fraud", "editor"), ("team:risk", "viewer")):
            await tenancy.ok("grant_repo_access", {"repo": repo, "subject": subject, "role": role})
        if repo.endswith(("1", "3", "5", "7", "9")):
            await tenancy.ok("revoke_repo_access", {"repo": repo, "subject": "team:risk"})
    for repo in sorted(deleted):
        await tenancy.ok("delete_ml_repo", {"name": repo, "delete_storage": True})
    js = tenancy.client.jetstream()
    await wait_for_stream(js, tenancy.service.recorder)

    config = BackendConfig(
        storage_backend="s3",
        s3_endpoint_url=s3_proxy.url,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        ack_wait=0.5,
    )
    log = tmp_path / "worker.log"
    live = [r for r in repos if r not in deleted]
    process, seen = await crash_and_restart(
        lambda: start_worker_process("storage", tenancy.url, config, log),
        lambda: s3_proxy.operations("PUT")["object"],
        kills=[3, 7],
    )
    try:
        await wait_settled(tenancy.client, "storage", timeout=30)
    finally:
        stop(process, log)

    assert all(0 < s < len(live) for s in seen), seen  # killed mid-stream, twice
    assert log.read_text().count('"worker.started"') == 3
    # The bucket once, a marker per live repo once, and the policy once per live repo: each
    # repo writes only its own statements (issue 12: one repo's refused principal must not
    # hold back another's), already its final grants, so its later events write nothing.
    assert s3_proxy.operations("PUT") == {
        "bucket": 1,
        "object": len(live),
        "bucket-policy": len(live),
    }
    policy = s3_proxy.policies[-1].decode()
    for repo in live:
        assert f'"tenantry-{repo}-list"' in policy
        assert tenancy.repo(repo).status == "ready"
    for repo in deleted:
        assert f"tenantry-{repo}-" not in policy
        assert tenancy.repo(repo).status == "deleted"
        assert len(tenancy.events("ml_repo.storage_deleted", repo)) == 1

    # One report per event about a live repo: created, its creator's grant, two grants, and
    # a revoke for some; redeliveries were answered from the command service's records.
    for repo in live:
        events = 4 + (1 if repo.endswith(("1", "3", "5", "7", "9")) else 0)
        assert len(tenancy.events("ml_repo.storage_provisioned", repo)) == events, repo
