"""The GitOps backend against real git, without the bus: a change run twice, or run again after
a crash between writing and committing, makes exactly one commit."""

from __future__ import annotations

from pathlib import Path

from tests.integration.provisioning import commits, git, git_init
from workers.events import Event
from workers.gitops import GitOpsBackend, render
from workers.manifests import NamespaceSpec, namespace_spec

EVENT = Event(
    7,
    {
        "id": "f3bca223-3fc5-5b49-8147-dd1afac26671",
        "type": "workspace.created",
        "fqn": "prod-eu:fraud",
        "position": 15,
        "actor": "user:ana@example.com",
    },
)


def spec(environment: str = "prod") -> NamespaceSpec:
    return namespace_spec(
        "prod-eu",
        "fraud",
        environment=environment,
        is_production=environment == "prod",
        optimize_for="availability",
        labels={"team": "risk"},
        annotations={},
    )


async def test_a_change_made_twice_is_committed_once(tmp_path: Path) -> None:
    root = git_init(tmp_path / "gitops")
    backend = GitOpsBackend(root)
    await backend.ensure([spec()], EVENT)
    await backend.ensure([spec()], EVENT)
    assert commits(root) == 1
    assert "Tenantry-Event-Id: f3bca223-3fc5-5b49-8147-dd1afac26671" in git(root, "log")
    await backend.ensure([spec("dev")], EVENT)
    assert commits(root) == 2


async def test_a_change_interrupted_before_its_commit_is_committed_by_the_retry(
    tmp_path: Path,
) -> None:
    root = git_init(tmp_path / "gitops")
    folder = root / "prod-eu" / "fraud"
    folder.mkdir(parents=True)
    # What a crash right after writing leaves: the files, a temporary file, no commit.
    (folder / "namespace.yaml").write_bytes(render(spec().namespace()))
    (folder / ".namespace.yaml.tenantry-tmp").write_text("an older version, half written")
    await GitOpsBackend(root).ensure([spec()], EVENT)
    assert commits(root) == 1
    assert sorted(git(root, "ls-files").split()) == [
        "prod-eu/fraud/namespace.yaml",
        "prod-eu/fraud/serviceaccount.yaml",
    ]
    assert git(root, "status", "--porcelain") == ""


async def test_removing_what_was_never_written_commits_nothing(tmp_path: Path) -> None:
    root = git_init(tmp_path / "gitops")
    detail = await GitOpsBackend(root).remove("prod-eu", "fraud", EVENT)
    assert detail == "gitops: prod-eu/fraud removed"
    assert commits(root) == 0


async def test_a_root_it_initialises_is_a_repository_of_its_own(tmp_path: Path) -> None:
    """`tenantry up` keeps its state in the folder it is started from, maybe a checkout: its
    manifests must not be committed into that repository."""
    enclosing = git_init(tmp_path / "checkout")
    root = enclosing / ".tenantry" / "gitops"
    await GitOpsBackend(root, init=True).ensure([spec()], EVENT)
    assert git(root, "rev-parse", "--show-toplevel").strip() == str(root.resolve())
    assert int(git(root, "rev-list", "--count", "HEAD")) == 1
    assert commits(enclosing) == 0


async def test_a_root_inside_a_repository_commits_into_it(tmp_path: Path) -> None:
    """A GitOps repository with its manifests in a subfolder: the root is that subfolder."""
    repository = git_init(tmp_path / "fleet")
    await GitOpsBackend(repository / "namespaces").ensure([spec()], EVENT)
    assert commits(repository) == 1
    assert "namespaces/prod-eu/fraud/namespace.yaml" in git(repository, "ls-files")
