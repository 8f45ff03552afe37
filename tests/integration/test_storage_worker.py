"""The storage provisioner on the real bus: ML repos become folders with a JSON access policy
(`file://` roots) or a bucket prefix with a bucket policy on a real S3-speaking server (moto's,
as a process), both following grants, revokes and deletion; an unwritable root ends as
`failed`, an S3 outage is retried and, if it lasts, recorded as a failure."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tenantry.nats_server import NatsServer
from tests.integration.provisioning import (
    ADMIN,
    Tenancy,
    running_tenancy,
    running_worker,
    wait_settled,
)
from tests.integration.s3_server import ACCESS_KEY, SECRET_KEY, CountingProxy, MotoServer
from workers import BackendConfig
from workers.access_policy import principal_arn
from workers.s3_storage import S3StorageBackend
from workers.storage import RepoView

PROVISIONED = "ml_repo.storage_provisioned"
BOB = "user:bob@example.com"
WORKSPACE = "workspace:prod-eu:fraud"


@pytest.fixture
async def tenancy(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Tenancy]:
    async with running_tenancy(nats_server, tmp_path / "state") as t:
        await t.cluster()
        await t.ok(
            "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
        )
        yield t


def policy(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / ".tenantry-access.json").read_text())
    return loaded


def grants(folder: Path) -> dict[str, tuple[str, list[str]]]:
    return {g["subject"]: (g["role"], g["access"]) for g in policy(folder)["grants"]}


async def test_a_local_repo_follows_its_grants_and_is_retained_or_removed(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    root = tmp_path / "storage"
    await tenancy.integration("local", f"file://{root}")
    async with running_worker("storage", tenancy.url, BackendConfig()):
        await tenancy.ok("create_ml_repo", {"name": "fraud-models", "storage_integration": "local"})
        await tenancy.wait_status("ml_repo", "fraud-models", "ready")
        folder = root / "fraud-models"
        assert folder.is_dir()
        assert policy(folder)["location"] == f"file://{root}/fraud-models/"
        assert grants(folder) == {ADMIN: ("admin", ["read", "write"])}

        for subject, role in ((WORKSPACE, "editor"), (BOB, "viewer")):
            await tenancy.ok(
                "grant_repo_access", {"repo": "fraud-models", "subject": subject, "role": role}
            )
        # Created, granted to its creator, then the two grants: one report each.
        await tenancy.wait_reports(PROVISIONED, "fraud-models", 4)
        assert grants(folder) == {
            ADMIN: ("admin", ["read", "write"]),
            WORKSPACE: ("editor", ["read", "write"]),
            BOB: ("viewer", ["read"]),
        }

        await tenancy.ok("revoke_repo_access", {"repo": "fraud-models", "subject": BOB})
        await tenancy.wait_reports(PROVISIONED, "fraud-models", 5)
        assert BOB not in grants(folder)
        (folder / "model.bin").write_bytes(b"weights")

        # Retained: the data stays, nobody keeps access.
        await tenancy.ok("delete_ml_repo", {"name": "fraud-models"})
        await tenancy.wait_status("ml_repo", "fraud-models", "deleted")
        assert (folder / "model.bin").read_bytes() == b"weights"
        assert grants(folder) == {}

        # Removed.
        await tenancy.ok("create_ml_repo", {"name": "churn-models", "storage_integration": "local"})
        await tenancy.wait_status("ml_repo", "churn-models", "ready")
        assert (root / "churn-models").is_dir()
        await tenancy.ok("delete_ml_repo", {"name": "churn-models", "delete_storage": True})
        await tenancy.wait_status("ml_repo", "churn-models", "deleted")
        assert not (root / "churn-models").exists()

    deleted = tenancy.events("ml_repo.storage_deleted")
    assert [e["data"]["detail"].rsplit(": ", 1)[1] for e in deleted] == ["retained", "removed"]
    assert {e["actor"] for e in tenancy.events(PROVISIONED)} == {"service:storage"}


async def test_an_unwritable_root_ends_as_failed_and_the_next_repo_goes_on(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    """Tests run as root, so a root *below a regular file* is what can't be written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    await tenancy.integration("broken", f"file://{blocker}/storage")
    await tenancy.integration("local", f"file://{tmp_path}/storage")
    async with running_worker("storage", tenancy.url, BackendConfig(backoff=(0.05,))):
        await tenancy.ok(
            "create_ml_repo", {"name": "fraud-models", "storage_integration": "broken"}
        )
        await tenancy.ok("create_ml_repo", {"name": "churn-models", "storage_integration": "local"})
        await tenancy.wait_status("ml_repo", "churn-models", "ready")
        info = await wait_settled(tenancy.client, "storage")
    assert tenancy.repo("fraud-models").status == "failed"
    # Its creation and its creator's grant: each tried once, each recorded as failed.
    failed = tenancy.events("ml_repo.storage_failed", "fraud-models")
    assert len(failed) == 2
    assert all("Not a directory" in f["data"]["detail"] for f in failed)
    assert info.num_redelivered == 0  # terminated at its first delivery, not retried
    assert info.num_ack_pending == 0


# --- S3 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def s3_proxy(moto: MotoServer) -> Iterator[CountingProxy]:
    moto.reset()
    proxy = CountingProxy(moto.port).start()
    yield proxy
    proxy.stop()


def s3_config(proxy: CountingProxy, **changes: Any) -> BackendConfig:
    return BackendConfig(
        storage_backend="s3",
        s3_endpoint_url=proxy.url,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        s3_principal_account="123456789012",
        **changes,
    )


def s3_client(moto: MotoServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def bucket_statements(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    document = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    return {s["Sid"]: s for s in document["Statement"]}


def principals(statements: dict[str, dict[str, Any]], repo: str) -> dict[str, list[str]]:
    """The granted principals of `repo` and the actions each may do."""
    return {
        s["Principal"]["AWS"]: s["Action"]
        for sid, s in statements.items()
        if sid.startswith(f"tenantry-{repo}-") and not sid.endswith("-list")
    }


async def test_an_s3_repo_gets_its_bucket_prefix_and_a_statement_per_principal(
    tenancy: Tenancy, moto: MotoServer, s3_proxy: CountingProxy
) -> None:
    s3 = s3_client(moto)
    s3.create_bucket(Bucket="ml-bucket")
    foreign = {
        "Sid": "KeepMe",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteBucket",
        "Resource": "arn:aws:s3:::ml-bucket",
    }
    s3.put_bucket_policy(
        Bucket="ml-bucket", Policy=json.dumps({"Version": "2012-10-17", "Statement": [foreign]})
    )
    await tenancy.integration("s3-main", "s3://ml-bucket/repos", provider="s3")
    account = "123456789012"
    async with running_worker("storage", tenancy.url, s3_config(s3_proxy)):
        for repo in ("fraud-models", "churn-models"):
            await tenancy.ok("create_ml_repo", {"name": repo, "storage_integration": "s3-main"})
        await tenancy.ok(
            "grant_repo_access", {"repo": "fraud-models", "subject": WORKSPACE, "role": "editor"}
        )
        await tenancy.ok(
            "grant_repo_access", {"repo": "fraud-models", "subject": BOB, "role": "viewer"}
        )
        await tenancy.wait_reports(PROVISIONED, "fraud-models", 4)
        await tenancy.wait_status("ml_repo", "churn-models", "ready")

        marker = s3.head_object(Bucket="ml-bucket", Key="repos/fraud-models/")
        assert marker["ContentLength"] == 0
        statements = bucket_statements(s3, "ml-bucket")
        assert statements["KeepMe"] == foreign  # not ours: left as it was
        write = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
        assert principals(statements, "fraud-models") == {
            f"arn:aws:iam::{account}:user/tenantry/ana@example.com": write,
            f"arn:aws:iam::{account}:role/tenantry/workspaces/prod-eu/fraud": write,
            f"arn:aws:iam::{account}:user/tenantry/bob@example.com": ["s3:GetObject"],
        }
        for statement in statements.values():
            if statement["Sid"].startswith("tenantry-fraud-models-") and statement["Action"] != (
                "s3:ListBucket"
            ):
                assert statement["Resource"] == "arn:aws:s3:::ml-bucket/repos/fraud-models/*"
        listing = statements["tenantry-fraud-models-list"]
        assert listing["Condition"] == {"StringLike": {"s3:prefix": ["repos/fraud-models/*"]}}
        assert principal_arn(BOB, account) in listing["Principal"]["AWS"]
        assert set(principals(statements, "churn-models")) == {principal_arn(ADMIN, account)}

        await tenancy.ok("revoke_repo_access", {"repo": "fraud-models", "subject": BOB})
        await tenancy.wait_reports(PROVISIONED, "fraud-models", 5)
        statements = bucket_statements(s3, "ml-bucket")
        assert principal_arn(BOB, account) not in principals(statements, "fraud-models")
        assert (
            principal_arn(BOB, account)
            not in statements["tenantry-fraud-models-list"]["Principal"]["AWS"]
        )

        s3.put_object(Bucket="ml-bucket", Key="repos/fraud-models/v1/model.bin", Body=b"w")
        await tenancy.ok("delete_ml_repo", {"name": "fraud-models", "delete_storage": True})
        await tenancy.ok("delete_ml_repo", {"name": "churn-models"})
        await tenancy.wait_status("ml_repo", "fraud-models", "deleted")
        await tenancy.wait_status("ml_repo", "churn-models", "deleted")

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ml-bucket").get("Contents", [])]
    assert keys == ["repos/churn-models/"]  # fraud-models removed, churn-models retained
    assert bucket_statements(s3, "ml-bucket") == {"KeepMe": foreign}
    # Every write was needed: one marker per repo, no bucket creation (it existed), and each
    # policy written differs from the one before it.
    assert s3_proxy.operations("PUT")["object"] == 2
    assert s3_proxy.operations("PUT")["bucket"] == 0
    assert all(a != b for a, b in itertools.pairwise(s3_proxy.policies))


async def test_an_s3_outage_is_retried_then_recorded_as_a_failure_if_it_lasts(
    tenancy: Tenancy, s3_proxy: CountingProxy
) -> None:
    await tenancy.integration("s3-main", "s3://ml-bucket/repos", provider="s3")
    config = s3_config(s3_proxy, max_deliver=3, backoff=(0.05,))
    s3_proxy.failing = 10**6
    async with running_worker("storage", tenancy.url, config):
        await tenancy.ok(
            "create_ml_repo", {"name": "fraud-models", "storage_integration": "s3-main"}
        )
        # Its creation and its creator's grant, each given up after max_deliver attempts.
        await tenancy.wait_reports("ml_repo.storage_failed", "fraud-models", 2)
        assert tenancy.repo("fraud-models").status == "failed"
        for failed in tenancy.events("ml_repo.storage_failed", "fraud-models"):
            assert failed["data"]["detail"] == (
                "gave up after repeated transient failures: S3 503: Service Unavailable"
            )

        # A short outage: retried with backoff until the endpoint answers again.
        s3_proxy.failing = 3
        await tenancy.ok(
            "create_ml_repo", {"name": "churn-models", "storage_integration": "s3-main"}
        )
        await tenancy.wait_status("ml_repo", "churn-models", "ready")
        # The next change of the failed repo provisions it.
        await tenancy.ok(
            "grant_repo_access", {"repo": "fraud-models", "subject": BOB, "role": "viewer"}
        )
        await tenancy.wait_status("ml_repo", "fraud-models", "ready")
        info = await wait_settled(tenancy.client, "storage")
    assert info.num_ack_pending == 0
    assert len(tenancy.events("ml_repo.storage_failed")) == 2  # created, granted to creator


async def test_an_interrupted_s3_action_does_only_what_is_left(
    moto: MotoServer, s3_proxy: CountingProxy
) -> None:
    """The backend alone: a crash left the bucket and the marker; the retry writes the policy
    and nothing else, and running it once more writes nothing."""
    s3 = s3_client(moto)
    s3.create_bucket(Bucket="ml-bucket")
    s3.put_object(Bucket="ml-bucket", Key="repos/fraud-models/", Body=b"")
    backend = S3StorageBackend(
        endpoint_url=s3_proxy.url,
        region=None,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        principal_account="123456789012",
    )
    repo = RepoView("fraud-models", "s3://ml-bucket/repos/fraud-models/", {ADMIN: "admin"})
    await backend.ensure(repo, [repo])
    assert s3_proxy.operations("PUT") == {"bucket-policy": 1}
    await backend.ensure(repo, [repo])
    await backend.close()
    assert s3_proxy.operations("PUT") == {"bucket-policy": 1}
    assert set(principals(bucket_statements(s3, "ml-bucket"), "fraud-models")) == {
        principal_arn(ADMIN, "123456789012")
    }
