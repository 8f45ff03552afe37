"""The storage provisioner on the real bus: ML repos become folders with a JSON access policy
(`file://` roots) or a bucket prefix with a bucket policy on a real S3-speaking server (moto's,
as a process), both following grants, revokes and deletion; an unwritable root ends as
`failed`, an S3 outage is retried and, if it lasts, recorded as a failure. Issue 12: data
Tenantry did not create (or retained for an earlier incarnation) is neither handed over nor
removed, and one repo's refused principal holds back no other repo's policy."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from domain.authorization import Authorization
from tenantry.server.nats_server import NatsServer
from tests.integration.provisioning import (
    ADMIN,
    Tenancy,
    published_seq,
    running_tenancy,
    running_worker,
    wait_settled,
    wait_until,
)
from tests.integration.s3_server import ACCESS_KEY, SECRET_KEY, CountingProxy, MotoServer
from workers import BackendConfig
from workers.access_policy import principal_arn
from workers.errors import PermanentError
from workers.local_storage import LocalStorageBackend
from workers.ownership import MARKER, Marker
from workers.s3_storage import S3StorageBackend, s3_location
from workers.storage import RepoView, StorageBackend

PROVISIONED = "ml_repo.storage_provisioned"
BOB = "user:bob@example.com"
ALICE = "user:alice@example.com"
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

        marker = s3.get_object(Bucket="ml-bucket", Key="repos/fraud-models/" + MARKER)
        assert Marker.decode(marker["Body"].read()) == Marker("fraud-models", 1, "created")
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
    assert keys == ["repos/churn-models/" + MARKER]  # fraud-models removed, churn retained
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
    marker = Marker("fraud-models", 1, "created").encode()
    s3.put_object(Bucket="ml-bucket", Key="repos/fraud-models/" + MARKER, Body=marker)
    backend = S3StorageBackend(
        endpoint_url=s3_proxy.url,
        region=None,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        principal_account="123456789012",
    )
    repo = RepoView(
        "fraud-models", "s3://ml-bucket/repos/fraud-models/", {ADMIN: "admin"}, incarnation=1
    )
    await backend.ensure(repo, [repo])
    assert s3_proxy.operations("PUT") == {"bucket-policy": 1}
    await backend.ensure(repo, [repo])
    await backend.close()
    assert s3_proxy.operations("PUT") == {"bucket-policy": 1}
    assert set(principals(bucket_statements(s3, "ml-bucket"), "fraud-models")) == {
        principal_arn(ADMIN, "123456789012")
    }


# --- whose data a location holds ------------------------------------------------------------


class Place:
    """One storage root, local or on the S3 server: what the tests write and read there
    behind the worker's back, and what the worker granted."""

    def __init__(self, kind: str, tmp_path: Path, moto: MotoServer | None) -> None:
        self.kind = kind
        self.folder = tmp_path / "storage"
        self.s3 = s3_client(moto) if moto is not None else None
        if self.s3 is not None:
            self.s3.create_bucket(Bucket="ml-bucket")

    @property
    def root(self) -> str:
        return f"file://{self.folder}" if self.kind == "local" else "s3://ml-bucket/repos"

    @property
    def provider(self) -> str:
        return "local" if self.kind == "local" else "s3"

    def location(self, repo: str) -> str:
        return f"{self.root}/{repo}/"

    def put(self, repo: str, name: str, data: bytes) -> None:
        if self.s3 is None:
            (self.folder / repo).mkdir(parents=True, exist_ok=True)
            (self.folder / repo / name).write_bytes(data)
        else:
            self.s3.put_object(Bucket="ml-bucket", Key=f"repos/{repo}/{name}", Body=data)

    def get(self, repo: str, name: str) -> bytes | None:
        if self.s3 is None:
            path = self.folder / repo / name
            return path.read_bytes() if path.exists() else None
        try:
            answer = self.s3.get_object(Bucket="ml-bucket", Key=f"repos/{repo}/{name}")
        except self.s3.exceptions.NoSuchKey:
            return None
        data: bytes = answer["Body"].read()
        return data

    def marker(self, repo: str) -> Marker | None:
        data = self.get(repo, MARKER)
        return None if data is None else Marker.decode(data)

    def granted(self, repo: str) -> set[str]:
        """The principals (S3) or subjects (local) the storage lets at the repo's data."""
        if self.s3 is None:
            path = self.folder / repo / ".tenantry-access.json"
            return set(grants(self.folder / repo)) if path.exists() else set()
        try:
            statements = bucket_statements(self.s3, "ml-bucket")
        except self.s3.exceptions.ClientError:
            return set()  # no policy at all
        return set(principals(statements, repo))

    def grant_of(self, subject: str) -> str:
        return subject if self.s3 is None else principal_arn(subject, "123456789012")

    def backend(self, proxy: CountingProxy | None) -> StorageBackend:
        if proxy is None:
            return LocalStorageBackend()
        return S3StorageBackend(
            endpoint_url=proxy.url,
            region=None,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            principal_account="123456789012",
        )


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Place, Any]]:
    """A storage root of each kind, with the worker configuration that serves it."""
    if request.param == "local":
        yield Place("local", tmp_path, None), None
        return
    moto = request.getfixturevalue("moto")
    proxy = request.getfixturevalue("s3_proxy")
    yield Place("s3", tmp_path, moto), proxy


@pytest.fixture
async def secured(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Tenancy]:
    """Authorization on: ADMIN is the tenant admin, BOB and ALICE are users."""
    admins = Authorization(admins=frozenset({ADMIN}))
    async with running_tenancy(nats_server, tmp_path / "state", admins) as t:
        yield t


def _config(proxy: CountingProxy | None) -> BackendConfig:
    return BackendConfig() if proxy is None else s3_config(proxy)


async def test_a_recreated_repo_is_not_handed_the_data_retained_at_its_location(
    secured: Tenancy, place: tuple[Place, CountingProxy | None]
) -> None:
    """Issue 12, item 1: BOB's repo is deleted with its storage retained; ALICE re-creating the
    name must not be granted BOB's data. Only a tenant admin may take it over, explicitly."""
    storage, proxy = place
    t = secured
    await t.integration("store", storage.root, provider=storage.provider)
    body = {"name": "fraud-models", "storage_integration": "store"}
    async with running_worker("storage", t.url, _config(proxy)):
        await t.ok("create_ml_repo", body, actor=BOB)
        await t.wait_status("ml_repo", "fraud-models", "ready")
        storage.put("fraud-models", "model.bin", b"bob's weights")
        await t.ok("delete_ml_repo", {"name": "fraud-models"}, actor=BOB)
        await t.wait_status("ml_repo", "fraud-models", "deleted")
        assert storage.granted("fraud-models") == set()

        for actor in (ALICE, BOB):
            answer = await t.command("create_ml_repo", body, actor=actor)
            assert answer["error"]["code"] == "precondition_failed", answer
            assert "adopt_storage" in answer["error"]["message"]
        answer = await t.command("create_ml_repo", {**body, "adopt_storage": True}, ALICE)
        assert answer["error"]["code"] == "forbidden", answer
        assert storage.granted("fraud-models") == set()
        assert t.repo("fraud-models").status == "deleted"

        # A tenant admin takes it over, and only so: the data is theirs to grant now.
        await t.ok("create_ml_repo", {**body, "adopt_storage": True}, actor=ADMIN)
        await t.wait_status("ml_repo", "fraud-models", "ready")
    assert storage.get("fraud-models", "model.bin") == b"bob's weights"
    assert storage.granted("fraud-models") == {storage.grant_of(ADMIN)}
    recreated = t.events("ml_repo.recreated", "fraud-models")[-1]
    assert storage.marker("fraud-models") == Marker("fraud-models", recreated["version"], "created")


async def test_a_backend_does_not_hand_one_incarnations_data_to_another(
    place: tuple[Place, CountingProxy | None],
) -> None:
    """The worker's own check, whatever the domain let through: a location marked for
    incarnation 1 is not provisioned for incarnation 3 unless the repo adopts it."""
    storage, proxy = place
    backend = storage.backend(proxy)
    location = storage.location("fraud-models")
    first = RepoView("fraud-models", location, {BOB: "admin"}, incarnation=1)
    await backend.ensure(first, [first])
    storage.put("fraud-models", "model.bin", b"bob's weights")
    gone = RepoView("fraud-models", location, {}, live=False, incarnation=1)
    await backend.remove(gone, [])
    later = RepoView("fraud-models", location, {ALICE: "admin"}, incarnation=3)

    with pytest.raises(PermanentError, match="another incarnation of ML repo 'fraud-models'"):
        await backend.ensure(later, [later])
    assert storage.granted("fraud-models") == set()
    assert storage.marker("fraud-models") == Marker("fraud-models", 1, "created")

    adopting = RepoView("fraud-models", location, {ADMIN: "admin"}, incarnation=3)
    adopting.adopt_storage = True
    await backend.ensure(adopting, [adopting])
    await backend.close()
    assert storage.granted("fraud-models") == {storage.grant_of(ADMIN)}
    assert storage.marker("fraud-models") == Marker("fraud-models", 3, "created")


async def test_a_location_tenantry_did_not_create_is_neither_taken_over_nor_removed(
    secured: Tenancy, place: tuple[Place, CountingProxy | None]
) -> None:
    """Issue 12, item 2: a repo named like data already under the root does not get it, and
    its `delete_storage` does not remove it: the refusal is recorded as a failure. A tenant
    admin may adopt such data; adopted, it is served but never removed."""
    storage, proxy = place
    t = secured
    storage.put("datasets", "data.csv", b"not Tenantry's")
    storage.put("shared", "data.csv", b"adopt me")
    await t.integration("store", storage.root, provider=storage.provider)
    async with running_worker("storage", t.url, _config(proxy)):
        await t.ok("create_ml_repo", {"name": "datasets", "storage_integration": "store"}, BOB)
        await t.wait_status("ml_repo", "datasets", "failed")
        failed = t.events("ml_repo.storage_failed", "datasets")[0]
        assert "already holds data that Tenantry did not create" in failed["data"]["detail"]
        assert storage.granted("datasets") == set()
        assert storage.marker("datasets") is None

        await t.ok("delete_ml_repo", {"name": "datasets", "delete_storage": True}, actor=BOB)
        [refused] = await removal_failures(t, "datasets")
        assert "was not removed: it was not created by Tenantry" in refused["data"]["detail"]
        assert t.repo("datasets").status == "deletion_failed"
        assert not t.repo("datasets").live

        adopt = {"name": "shared", "storage_integration": "store", "adopt_storage": True}
        await t.ok("create_ml_repo", adopt, actor=ADMIN)
        await t.wait_status("ml_repo", "shared", "ready")
        assert storage.granted("shared") == {storage.grant_of(ADMIN)}
        await t.ok("delete_ml_repo", {"name": "shared", "delete_storage": True}, actor=ADMIN)
        [refused] = await removal_failures(t, "shared")
        assert "Tenantry adopted it, it did not create it" in refused["data"]["detail"]
    assert storage.get("datasets", "data.csv") == b"not Tenantry's"
    assert storage.get("shared", "data.csv") == b"adopt me"
    assert storage.granted("shared") == set()  # access ended all the same


async def removal_failures(t: Tenancy, repo: str) -> list[dict[str, Any]]:
    """The recorded failures of `repo`'s removal, once there is one."""

    def found() -> list[dict[str, Any]]:
        failed = t.events("ml_repo.storage_failed", repo)
        return [e for e in failed if e["data"].get("removal")]

    await wait_until(lambda: bool(found()), 15.0, lambda: f"no removal failure of {repo}")
    return found()


async def test_a_location_served_before_markers_keeps_serving_but_is_never_removed(
    place: tuple[Place, CountingProxy | None],
) -> None:
    """The upgrade: a live repo's location from before markers (the stream holds its
    `storage_provisioned`) has data and no marker. It is this repo's, marked adopted."""
    storage, proxy = place
    backend = storage.backend(proxy)
    storage.put("fraud-models", "model.bin", b"weights")
    repo = RepoView("fraud-models", storage.location("fraud-models"), {BOB: "admin"})
    repo.incarnation, repo.provisioned = 1, True

    await backend.ensure(repo, [repo])
    assert storage.marker("fraud-models") == Marker("fraud-models", 1, "adopted")
    repo.live, repo.delete_storage = False, True
    with pytest.raises(PermanentError, match="Tenantry adopted it"):
        await backend.remove(repo, [])
    await backend.close()
    assert storage.get("fraud-models", "model.bin") == b"weights"


@pytest.mark.parametrize("bad", ["root/../outside", "root/%2e%2e/outside", "root?", "root#x"])
async def test_a_location_under_a_root_stored_before_roots_were_canonical_is_refused(
    tmp_path: Path, bad: str
) -> None:
    """Issue 12, item 3, the worker's side: roots like these are refused at registration now;
    one stored before cannot lead the worker outside its root (or put repos together)."""
    location = f"file://{tmp_path}/{bad}/fraud-models/"
    repo = RepoView("fraud-models", location, {BOB: "admin"}, incarnation=1)
    with pytest.raises(PermanentError, match="is not a canonical local location"):
        await LocalStorageBackend().ensure(repo, [repo])
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(PermanentError, match="is not a canonical s3:// location"):
        s3_location(f"s3://ml-bucket/{bad}/fraud-models/")


# --- one bucket policy, many repos -------------------------------------------------------


async def test_a_principal_the_bucket_refuses_holds_back_no_other_repo(
    tenancy: Tenancy, s3_proxy: CountingProxy
) -> None:
    """Issue 12, item 4. moto stores any bucket policy (it checks no principal; no setting
    turns a check on), so the proxy in front of it answers as AWS does a policy naming a
    principal IAM does not know: `400 MalformedPolicy: Invalid principal in policy`.

    A grant of fraud-models to such a principal must not stop churn-models' revoke (the whole
    bucket's policy used to be rebuilt from every repo, so every later PUT was refused), nor
    fraud-models' own revoke of a known principal. A subject that can't be an IAM name at all
    never reaches the server."""
    ghost = "user:ghost@example.com"
    odd = "user:o'brien@example.com"  # a valid e-mail address, not a valid IAM user name
    s3_proxy.refused_principals = {principal_arn(ghost, "123456789012")}
    await tenancy.integration("s3-main", "s3://ml-bucket/repos", provider="s3")
    grant = "grant_repo_access"
    async with running_worker("storage", tenancy.url, s3_config(s3_proxy)):
        for repo in ("fraud-models", "churn-models"):
            await tenancy.ok("create_ml_repo", {"name": repo, "storage_integration": "s3-main"})
            await tenancy.ok(grant, {"repo": repo, "subject": BOB, "role": "viewer"})
            await tenancy.wait_reports(PROVISIONED, repo, 3)

        await tenancy.ok(grant, {"repo": "fraud-models", "subject": ghost, "role": "viewer"})
        await tenancy.wait_status("ml_repo", "fraud-models", "failed")

        # Another repo's revoke goes through.
        await tenancy.ok("revoke_repo_access", {"repo": "churn-models", "subject": BOB})
        # The revoke itself settled, not merely a durable idle before the relay published it.
        [revoked] = tenancy.events("ml_repo.access_revoked", "churn-models")
        seq = await published_seq(tenancy.client, revoked["position"])
        await wait_settled(tenancy.client, "storage", seq)
        assert tenancy.events("ml_repo.storage_failed", "churn-models") == []
        assert tenancy.repo("churn-models").status == "ready"
        statements = bucket_statements(s3_client_of(s3_proxy), "ml-bucket")
        assert principal_arn(BOB, "123456789012") not in principals(statements, "churn-models")

        [refused] = tenancy.events("ml_repo.storage_failed", "fraud-models")
        assert f"{ghost}: the bucket refused it (MalformedPolicy" in refused["data"]["detail"]
        # And the repo's own revoke of a principal the bucket knows goes through too.
        await tenancy.ok("revoke_repo_access", {"repo": "fraud-models", "subject": BOB})
        await tenancy.wait_reports("ml_repo.storage_failed", "fraud-models", 2)
        await tenancy.ok(grant, {"repo": "fraud-models", "subject": odd, "role": "editor"})
        await tenancy.wait_reports("ml_repo.storage_failed", "fraud-models", 3)
        detail = tenancy.events("ml_repo.storage_failed", "fraud-models")[-1]["data"]["detail"]
        assert f"{odd}: \"o'brien@example.com\" can't be an IAM name" in detail

    statements = bucket_statements(s3_client_of(s3_proxy), "ml-bucket")
    account = "123456789012"
    assert set(principals(statements, "churn-models")) == {principal_arn(ADMIN, account)}
    assert set(principals(statements, "fraud-models")) == {principal_arn(ADMIN, account)}
    assert s3_proxy.refused_policies >= 1
    assert not any(b"o'brien" in policy for policy in s3_proxy.policies)


def s3_client_of(proxy: CountingProxy) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
