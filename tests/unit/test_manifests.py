"""Manifests and the plan: documents read with their locations, and plans that, sent to the real
command service (in memory) and read back through the real views, converge — a second plan
is empty — while refusing up front what the service would refuse halfway."""

from __future__ import annotations

import json
import textwrap
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.base import CommandContext
from domain.commands import Command, GrantRepoAccess
from domain.errors import DomainError, PreconditionFailed
from projections.queries import QUERIES, answer
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.apply.manifests import MAX_DEPTH, Document, ManifestError, json_schema, load, parse
from tenantry.apply.plan import ABSENT, Change, Plan, State, plan
from tenantry.sdk.results import Cluster, Environment, MlRepo, StorageIntegration, Team, Workspace

from .support import ADMIN, make_tenancy

BASE = """
type: storage-integration
name: s3-main
provider: s3
storage_root: s3://ml-bucket/repos
---
type: cluster
name: prod-eu
region: eu-west-1
provider: aws-eks
environments: [prod, dev]
---
type: team
name: risk
members: [bo@example.com, cy@example.com]
---
type: ml-repo
name: fraud-models
storage_integration: s3-main
description: Fraud models
collaborators:
  - {subject: team:risk, role: editor}
  - {subject: user:bo@example.com, role: viewer}
---
type: workspace
cluster: prod-eu
name: fraud
environment: prod
labels: {team: risk}
ml_repo_access:
  - {repo: fraud-models, role: editor}
"""


def documents(text: str, file: str = "tenancy.yaml") -> list[Document]:
    found, problems = parse(textwrap.dedent(text), file)
    assert not problems, [str(p) for p in problems]
    return found


class World:
    """The command service and the views, in memory: what `tenantry apply` talks to."""

    def __init__(self) -> None:
        self.tenancy = make_tenancy()
        self.views = ViewStore.in_memory()
        self.views.create_tables()
        self.runner = ProjectionRunner(self.tenancy.svc.recorder, self.views)

    def _query(self, name: str) -> Any:
        self.runner.catch_up()
        return answer(self.views, name, QUERIES[name].params())[1]

    def state(self) -> State:
        return State.of(
            environments=[Environment(**e) for e in self._query("list_environments")],
            storage_integrations=[
                StorageIntegration(**s) for s in self._query("list_storage_integrations")
            ],
            teams=[Team(**t) for t in self._query("list_teams")],
            clusters=[Cluster(**c) for c in self._query("list_clusters")],
            ml_repos=[MlRepo(**r) for r in self._query("list_ml_repos")],
            workspaces=[Workspace(**w) for w in self._query("list_workspaces")],
        )

    def plan(self, text: str, actor: str = ADMIN, prune: bool = False) -> Plan:
        return plan(documents(text), self.state(), actor, prune=prune)

    def send(self, commands: list[Command], actor: str = ADMIN, dry_run: bool = False) -> None:
        """As `tenantry apply` sends a plan: one apply, all or nothing (none when empty)."""
        if not commands:
            return
        context = CommandContext(actor, str(uuid.uuid4()), str(uuid.uuid4()))
        self.tenancy.svc.apply(commands, context, dry_run=dry_run)

    def refusal(self, text: str, actor: str = ADMIN) -> tuple[DomainError, str]:
        """The command service's refusal of the plan of `text` (which the plan itself finds
        no problem with), and the document of the command refused; nothing was written."""
        the_plan = self.plan(text, actor)
        assert not the_plan.problems, [str(p) for p in the_plan.problems]
        before = self.tenancy.position()
        with pytest.raises(DomainError) as dry:
            self.send(the_plan.commands, actor, dry_run=True)
        with pytest.raises(DomainError) as refused:
            self.send(the_plan.commands, actor)
        assert self.tenancy.position() == before
        # A dry run answers what the apply does: the same code, details and index.
        assert (dry.value.code, dry.value.details) == (refused.value.code, refused.value.details)
        return refused.value, str(the_plan.source_of(refused.value.details["index"]))

    def apply(self, text: str, actor: str = ADMIN, prune: bool = False) -> Plan:
        """Plan and send; then assert that planning again finds nothing to do."""
        first = self.plan(text, actor, prune)
        assert not first.problems, [str(p) for p in first.problems]
        self.send(first.commands, actor)
        again = self.plan(text, actor, prune)
        assert again.commands == [], [c.wire_name for c in again.commands]
        assert {a.kind for a in again.actions} == {"unchanged"}
        return first

    def grants(self, repo: str) -> dict[str, str]:
        return {g.subject: g.role for g in self.state().ml_repos[repo].grants}

    def managers(self, repo: str) -> dict[str, str | None]:
        return {g.subject: g.managed_by for g in self.state().ml_repos[repo].grants}


@pytest.fixture
def world() -> World:
    return World()


def names(the_plan: Plan) -> list[str]:
    return [c.wire_name for c in the_plan.commands]


def changes(the_plan: Plan, name: str) -> list[Change]:
    return next(a.changes for a in the_plan.actions if a.name == name)


def problems(the_plan: Plan) -> list[str]:
    return [str(p) for p in the_plan.problems]


# --- reading documents --------------------------------------------------------------------


def test_each_invalid_document_is_reported_with_file_index_line_and_field() -> None:
    text = textwrap.dedent(
        """\
        type: environment
        name: ml-dev
        ---
        type: workspace
        cluster: prod-eu
        name: fraud
        environment: prod
        labels:
          team: 1
        ml_repo_access:
          - {repo: fraud-models, role: owner}
        ---
        type: cluster
        name: prod-eu
        region: eu-west-1
        provider: aws-eks
        environments: [prod]
        colour: blue
        ---
        type: gadget
        """
    )
    found, wrong = parse(text, "bad.yaml")
    assert [d.key for d in found] == [("environment", "ml-dev")]
    assert [(p.file, p.index, p.line, p.path) for p in wrong] == [
        ("bad.yaml", 2, 9, "labels.team"),
        ("bad.yaml", 2, 11, "ml_repo_access[0].role"),
        ("bad.yaml", 3, 18, "colour"),
        ("bad.yaml", 4, 20, "type"),
    ]
    assert str(wrong[0]) == (
        "bad.yaml: document 2 (line 9): labels.team: Input should be a valid string"
    )
    assert "Extra inputs are not permitted" in str(wrong[2])
    assert "must be one of environment, storage-integration, team" in str(wrong[3])


def test_missing_fields_point_at_the_document_and_rules_of_the_commands_apply() -> None:
    _, wrong = parse(
        "type: storage-integration\nname: s3-main\nprovider: gcs\nstorage_root: s3://b/x\n"
        "---\ntype: workspace\ncluster: prod-eu\nname: fraud\nenvironment: prod\n"
        "ml_repo_access: [{repo: fraud-models, role: admin}]\n"
        "---\ntype: ml-repo\nname: r1x\nstorage_integration: s3-main\n"
        "collaborators: [{subject: 'workspace:prod-eu:fraud', role: admin}]\n"
        "---\n- a list\n---\ntype: team\n",
        "f.yaml",
    )
    messages = [str(p) for p in wrong]
    assert any("document 1" in m and "a gcs storage_root looks like gs://" in m for m in messages)
    assert any(
        "document 2" in m and "ml_repo_access: a workspace can hold viewer or editor only" in m
        for m in messages
    )
    assert any(
        "document 3" in m and "collaborators[0].role: a workspace can hold viewer" in m
        for m in messages
    )
    assert any("document 4" in m and "a manifest is a mapping" in m for m in messages)
    assert "f.yaml: document 5 (line 19): name: Field required" in messages


def test_yaml_errors_empty_documents_and_duplicates(tmp_path: Any) -> None:
    assert parse("---\n---\n", "empty.yaml") == ([], [])
    _, wrong = parse("type: team\nname: [risk\n", "broken.yaml")
    assert len(wrong) == 1 and wrong[0].line == 3 and "not valid YAML" in wrong[0].message
    (tmp_path / "a.yaml").write_text("type: team\nname: risk\n")
    (tmp_path / "b.yml").write_text("type: team\nname: risk\n")
    (tmp_path / "notes.txt").write_text("not a manifest")
    with pytest.raises(ManifestError) as info:
        load([str(tmp_path)], lambda: "")
    [duplicate] = info.value.problems
    assert duplicate.file.endswith("b.yml")
    assert "team risk is already described in" in duplicate.message
    assert "a.yaml: document 1 (line 1)" in duplicate.message
    with pytest.raises(ManifestError, match="no manifests found"):
        load(["-"], lambda: "# nothing\n")
    assert [d.key for d in load(["-"], lambda: "type: team\nname: ml\n")] == [("team", "ml")]


def test_the_json_schema_covers_every_type_and_refuses_unknown_fields() -> None:
    schema = json_schema()
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == {
        "environment",
        "storage-integration",
        "team",
        "cluster",
        "ml-repo",
        "workspace",
    }
    for definition in ("WorkspaceManifest", "MlRepoManifest", "ClusterManifest"):
        assert schema["$defs"][definition]["additionalProperties"] is False
    assert "collaborators" in schema["$defs"]["MlRepoManifest"]["properties"]


# --- plans that converge ------------------------------------------------------------------


def test_documents_are_applied_in_dependency_order_whatever_their_order(world: World) -> None:
    reversed_text = "\n---\n".join(reversed(BASE.strip().split("\n---\n")))
    first = world.apply(reversed_text)
    assert names(first) == [
        "register_storage_integration",
        "create_team",
        "register_cluster",
        "create_ml_repo",
        "create_workspace",
        "grant_repo_access",
        "grant_repo_access",
    ]
    assert [a.kind for a in first.actions] == ["create"] * 5
    # The workspace's grant goes with its creation; the creator stays admin (no admin named).
    assert world.grants("fraud-models") == {
        ADMIN: "admin",
        "team:risk": "editor",
        "user:bo@example.com": "viewer",
        "workspace:prod-eu:fraud": "editor",
    }
    assert changes(first, "prod-eu:fraud") == [
        Change("environment", ABSENT, "prod"),
        Change("labels", ABSENT, {"team": "risk"}),
        Change("ml_repo_access", ABSENT, [{"repo": "fraud-models", "role": "editor"}]),
    ]


def test_applying_the_same_documents_again_writes_nothing(world: World) -> None:
    world.apply(BASE)
    again = world.plan(BASE)
    assert again.changes_nothing
    assert [a.kind for a in again.actions] == ["unchanged"] * 5


def test_what_differs_is_updated_field_by_field(world: World) -> None:
    world.apply(BASE + "---\ntype: environment\nname: ml-dev\n")
    changed = (
        BASE.replace("labels: {team: risk}", "labels: {team: fraud, tier: gold}")
        .replace("environment: prod\n", "environment: dev\n")
        .replace("description: Fraud models", "description: Fraud detection")
        .replace("role: viewer}", "role: editor}")
        .replace("members: [bo@example.com, cy@example.com]", "members: [bo@example.com]")
        .replace("environments: [prod, dev]", "environments: [dev, ml-dev]")
        + "---\ntype: environment\nname: ml-dev\nis_production: true\ncolor: '#00ff00'\n"
    )
    updated = world.apply(changed)
    assert names(updated) == [
        "update_environment",
        "add_cluster_environment",
        "update_ml_repo",
        "set_workspace_environment",
        "update_workspace",
        "grant_repo_access",
        "remove_team_member",
        # after the workspace moved off prod
        "remove_cluster_environment",
    ]
    assert changes(updated, "prod-eu:fraud") == [
        Change("environment", "prod", "dev"),
        Change("labels.team", "risk", "fraud"),
        Change("labels.tier", ABSENT, "gold"),
    ]
    assert changes(updated, "ml-dev") == [
        Change("is_production", False, True),
        Change("color", None, "#00ff00"),
    ]
    assert changes(updated, "fraud-models") == [
        Change("description", "Fraud models", "Fraud detection"),
        Change("collaborators[user:bo@example.com]", "viewer", "editor"),
    ]
    assert changes(updated, "risk") == [Change("members[cy@example.com]", "member", ABSENT)]
    assert changes(updated, "prod-eu") == [
        Change("environments", ["prod", "dev"], ["dev", "ml-dev"])
    ]
    state = world.state()
    assert state.clusters["prod-eu"].environments == ["dev", "ml-dev"]
    assert state.workspaces["prod-eu:fraud"].labels == {"team": "fraud", "tier": "gold"}


def test_grants_not_named_are_kept_unless_pruned_and_never_another_documents(
    world: World,
) -> None:
    world.apply(BASE)
    world.apply(
        "type: workspace\ncluster: prod-eu\nname: sandbox\nenvironment: dev\n"
        "ml_repo_access: [{repo: fraud-models, role: viewer}]\n"
    )
    # A grant made elsewhere (from Python, from the bus): no manifest names it, nor manages it.
    world.send(
        [GrantRepoAccess(repo="fraud-models", subject="user:eve@example.com", role="viewer")]
    )
    # The repo's collaborators now name only the team. Without --prune nothing is revoked:
    # bo's grant (apply's) is shown as a removal and kept; eve's is not apply's to show.
    only_team = BASE.replace("  - {subject: user:bo@example.com, role: viewer}\n", "")
    kept = world.apply(only_team)
    assert names(kept) == []
    assert kept.removals == 1
    assert [c for c in changes(kept, "fraud-models") if c.removal] == [
        Change("collaborators[user:bo@example.com]", "viewer", ABSENT, removal=True),
    ]
    assert world.grants("fraud-models")["user:bo@example.com"] == "viewer"
    # With --prune bo's goes; eve's (made on the bus) stays, the sandbox's grant belongs to the
    # sandbox's document (not part of this apply) and stays, and so does the creator's admin
    # grant (made by create_ml_repo, managed by nobody).
    revoked = world.apply(only_team, prune=True)
    assert names(revoked) == ["revoke_repo_access"]
    assert world.grants("fraud-models") == {
        ADMIN: "admin",
        "team:risk": "editor",
        "user:eve@example.com": "viewer",
        "workspace:prod-eu:fraud": "editor",
        "workspace:prod-eu:sandbox": "viewer",
    }
    # Naming admins: the new admin is granted; the creator's grant is not apply's to take away.
    handed = world.apply(
        only_team.replace(
            "  - {subject: team:risk, role: editor}\n",
            "  - {subject: team:risk, role: editor}\n"
            "  - {subject: user:dee@example.com, role: admin}\n",
        ),
        prune=True,
    )
    assert [(c.wire_name, c.subject) for c in handed.commands] == [  # type: ignore[attr-defined]
        ("grant_repo_access", "user:dee@example.com"),
    ]
    assert world.grants("fraud-models")["user:dee@example.com"] == "admin"
    assert world.grants("fraud-models")[ADMIN] == "admin"


def test_prune_revokes_a_grant_regranted_elsewhere_no_more(world: World) -> None:
    world.apply(BASE)
    assert world.managers("fraud-models") == {
        ADMIN: None,  # the creator's, by create_ml_repo
        "team:risk": "apply",
        "user:bo@example.com": "apply",
        "workspace:prod-eu:fraud": "apply",  # in the workspace's creation
    }
    # bo's grant was apply's; granted again on the bus (same role) it is nobody's.
    world.send([GrantRepoAccess(repo="fraud-models", subject="user:bo@example.com", role="viewer")])
    assert world.managers("fraud-models")["user:bo@example.com"] is None
    only_team = BASE.replace("  - {subject: user:bo@example.com, role: viewer}\n", "")
    pruned = world.apply(only_team, prune=True)
    assert pruned.removals == 0
    assert names(pruned) == []
    assert world.grants("fraud-models")["user:bo@example.com"] == "viewer"


def test_a_workspace_document_manages_its_own_grants_on_every_repo(world: World) -> None:
    world.apply(BASE + "---\ntype: ml-repo\nname: churn-models\nstorage_integration: s3-main\n")
    moved = world.apply(
        """
        type: workspace
        cluster: prod-eu
        name: fraud
        environment: prod
        ml_repo_access:
          - {repo: churn-models, role: viewer}
        """,
        prune=True,
    )
    assert names(moved) == ["grant_repo_access", "revoke_repo_access"]
    assert changes(moved, "prod-eu:fraud") == [
        Change("ml_repo_access[churn-models]", ABSENT, "viewer"),
        Change("ml_repo_access[fraud-models]", "editor", ABSENT, removal=True),
    ]
    assert "workspace:prod-eu:fraud" not in world.grants("fraud-models")
    assert world.grants("churn-models")["workspace:prod-eu:fraud"] == "viewer"


def test_fields_left_out_are_left_as_they_are(world: World) -> None:
    world.apply(BASE)
    world.tenancy.run(
        "update_workspace", {"workspace": "prod-eu:fraud", "annotations": {"owner": "risk"}}
    )
    world.tenancy.run("add_team_member", {"team": "risk", "user": "dee@example.com"})
    world.tenancy.run("update_environment", {"name": "dev", "color": "#ff0000"})
    minimal = """
        type: workspace
        cluster: prod-eu
        name: fraud
        environment: prod
        ---
        type: team
        name: risk
        ---
        type: environment
        name: dev
        ---
        type: ml-repo
        name: fraud-models
        storage_integration: s3-main
        """
    assert world.plan(minimal).changes_nothing
    assert world.state().workspaces["prod-eu:fraud"].annotations == {"owner": "risk"}


def test_a_recreated_workspace_gets_its_grants_again(world: World) -> None:
    world.apply(BASE)
    world.tenancy.run("delete_workspace", {"workspace": "prod-eu:fraud"})
    world.tenancy.run(
        "record_namespace_deleted",
        {"workspace": "prod-eu:fraud", "namespace": "fraud"},
        actor="service:namespaces",
    )
    again = world.apply(BASE)
    assert names(again) == ["create_workspace"]
    assert world.grants("fraud-models")["workspace:prod-eu:fraud"] == "editor"


# --- what is refused before anything is written --------------------------------------------


def test_what_no_command_can_change_is_refused(world: World) -> None:
    world.apply(BASE)
    the_plan = world.plan(
        BASE.replace("region: eu-west-1", "region: eu-west-2")
        .replace("storage_root: s3://ml-bucket/repos", "storage_root: s3://other/repos")
        .replace("storage_integration: s3-main", "storage_integration: s3-other")
        + "---\ntype: storage-integration\nname: s3-other\nprovider: s3\n"
        "storage_root: s3://other\n"
    )
    assert len(the_plan.problems) == 2
    found = problems(the_plan)
    assert any(
        # At the field's own line, not the document's (line 7).
        'document 2 (line 9): region: is "eu-west-1" and cannot be changed to "eu-west-2"' in p
        for p in found
    )
    assert any("storage_root" in p and "remove it and register it again" in p for p in found)
    # A repo's storage integration: update_ml_repo carries it, the command service refuses it.
    refusal, where = world.refusal(
        BASE.replace("storage_integration: s3-main", "storage_integration: s3-other")
        + "---\ntype: storage-integration\nname: s3-other\nprovider: s3\n"
        "storage_root: s3://other\n"
    )
    assert isinstance(refusal, PreconditionFailed)
    assert refusal.details["command"] == "update_ml_repo"
    assert "storage integration of ML repo 'fraud-models' cannot be changed" in refusal.message
    assert where.startswith("tenancy.yaml: document 4")


def test_a_repo_whose_storage_could_not_be_removed_is_recreated_only_by_adopting_it(
    world: World,
) -> None:
    world.apply(BASE)
    world.tenancy.run("delete_ml_repo", {"name": "fraud-models", "delete_storage": True})
    location = "s3://ml-bucket/repos/fraud-models/"
    world.tenancy.run(
        "record_storage_failed",
        {"repo": "fraud-models", "location": location, "removal": True},
        actor="service:storage",
    )

    plain = world.plan(BASE)
    assert "create_ml_repo" in names(plain)
    with pytest.raises(PreconditionFailed, match=r"could not be removed.*adopt_storage"):
        world.send(plain.commands)
    adopting = BASE.replace("description: Fraud models", "description: x\nadopt_storage: true")
    world.apply(adopting)
    assert world.state().ml_repos["fraud-models"].status == "pending"


@pytest.mark.parametrize(
    ("text", "document", "message"),
    [
        (
            "type: cluster\nname: prod-eu\nregion: eu-west-1\nprovider: aws-eks\n"
            "environments: [prod, gpu]\n",
            1,
            "environment 'gpu' does not exist",
        ),
        (
            "type: workspace\ncluster: dev-us\nname: sandbox\nenvironment: dev\n",
            1,
            "cluster 'dev-us' does not exist",
        ),
        (
            "type: ml-repo\nname: fraud-models\nstorage_integration: s3-main\n",
            1,
            "storage integration 's3-main' does not exist",
        ),
        (
            "type: storage-integration\nname: s3-main\nprovider: s3\n"
            "storage_root: s3://ml-bucket/r\n---\n"
            "type: ml-repo\nname: fraud-models\nstorage_integration: s3-main\n"
            "collaborators: [{subject: team:nobody, role: viewer}]\n",
            2,
            "team 'nobody' does not exist",
        ),
        (
            "type: cluster\nname: prod-eu\nregion: eu-west-1\nprovider: aws-eks\n"
            "environments: [prod]\n---\n"
            "type: workspace\ncluster: prod-eu\nname: fraud\nenvironment: prod\n"
            "ml_repo_access: [{repo: ghost-models, role: viewer}]\n",
            2,
            "ML repo 'ghost-models' does not exist",
        ),
    ],
)
def test_references_to_what_does_not_exist_are_refused_by_the_service(
    world: World, text: str, document: int, message: str
) -> None:
    refusal, where = world.refusal(text)
    assert isinstance(refusal, PreconditionFailed)
    assert message in refusal.message
    assert where.startswith(f"tenancy.yaml: document {document} ")


def test_conflicting_roles_and_a_repo_without_admin_are_refused(world: World) -> None:
    world.apply(BASE)
    conflicting = world.plan(
        BASE.replace(
            "  - {subject: team:risk, role: editor}\n",
            "  - {subject: team:risk, role: editor}\n"
            "  - {subject: 'workspace:prod-eu:fraud', role: viewer}\n",
        )
    )
    [conflict] = problems(conflicting)
    assert "ml_repo_access[0]: gives workspace:prod-eu:fraud the role editor" in conflict
    assert "gives it viewer" in conflict
    # The creator (the only admin) made a viewer while no admin is named: the service refuses.
    refusal, where = world.refusal(
        BASE.replace(
            "  - {subject: team:risk, role: editor}\n",
            f"  - {{subject: '{ADMIN}', role: viewer}}\n",
        )
    )
    assert refusal.code == "precondition_failed"
    assert refusal.details["command"] == "grant_repo_access"
    assert f"{ADMIN!r} is the last admin of ML repo 'fraud-models'" in refusal.message
    assert where.startswith("tenancy.yaml: document 4")


def test_an_environment_still_in_use_is_not_taken_from_its_cluster(world: World) -> None:
    world.apply(BASE)
    world.tenancy.run(
        "create_workspace", {"cluster": "prod-eu", "name": "sandbox", "environment": "dev"}
    )
    refusal, where = world.refusal(
        BASE.replace("environments: [prod, dev]", "environments: [prod]")
    )
    assert refusal.details["command"] == "remove_cluster_environment"
    assert refusal.details["workspaces"] == ["prod-eu:sandbox"]
    assert "environment 'dev' is used by workspaces ['sandbox']" in refusal.message
    assert where.startswith("tenancy.yaml: document 2")


# --- the verbs, where no bus is needed ------------------------------------------------------


def test_tenantry_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from tenantry.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_an_invalid_manifest_is_refused_before_connecting(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenantry.cli import main

    # Nothing listens there: reaching the bus would fail differently (and slowly).
    monkeypatch.setenv("TENANTRY_NATS_URL", "nats://127.0.0.1:1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: team\nname: risk\n---\ntype: team\nname: Risk Team\n")
    assert main(["apply", "-f", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: document 2 (line 5): name: String should match pattern" in err
    assert "nothing was applied" in err


def _nested(kind: str, depth: int) -> str:
    """A value nested `depth` levels deep, in one of YAML's four ways of nesting."""
    if kind == "flow-sequence":
        return "[" * depth + "x" + "]" * depth
    if kind == "flow-mapping":
        return "{a: " * depth + "x" + "}" * depth
    if kind == "block-sequence":
        return "\n" + "".join("  " * i + "-\n" for i in range(1, depth)) + "  " * depth + "- x"
    return "\n" + "".join("  " * i + "a:\n" for i in range(1, depth)) + "  " * depth + "a: x"


NESTINGS = ["flow-sequence", "flow-mapping", "block-sequence", "block-mapping"]


@pytest.mark.parametrize("kind", NESTINGS)
def test_deeply_nested_yaml_is_an_invalid_document_not_a_crash(
    kind: str, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenantry.cli import main

    monkeypatch.setenv("TENANTRY_NATS_URL", "nats://127.0.0.1:1")
    deep = tmp_path / "deep.yaml"
    deep.write_text(
        f"type: team\nname: risk\n---\ntype: team\nname: ml\nmembers: {_nested(kind, 5000)}\n"
    )
    assert main(["apply", "-f", str(deep)]) == 1
    err = capsys.readouterr().err
    assert f"{deep}: document 2 (line " in err
    assert "not valid YAML: nested more than" in err
    assert "nothing was applied" in err
    assert "Traceback" not in err


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(NESTINGS), depth=st.integers(1, 3000))
def test_nesting_at_any_depth_is_parsed_or_reported(kind: str, depth: int) -> None:
    documents, problems = parse(f"type: team\nname: ml\nmembers: {_nested(kind, depth)}\n", "f")
    assert not documents  # members must be emails, never nested values
    assert problems
    if depth > MAX_DEPTH:
        assert problems[0].message.startswith("not valid YAML: nested more than")
        assert problems[0].line is not None


def test_nesting_up_to_the_limit_is_read() -> None:
    # The document's own mapping is one level: the value may nest MAX_DEPTH - 1 more.
    text = f"type: team\nname: ml\nmembers: {_nested('flow-sequence', MAX_DEPTH - 1)}\n"
    _, [problem] = parse(text, "f")
    assert "nested more than" not in problem.message


def test_a_character_yaml_does_not_allow_is_an_invalid_document_not_a_crash(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenantry.cli import main

    monkeypatch.setenv("TENANTRY_NATS_URL", "nats://127.0.0.1:1")
    bad = tmp_path / "escape.yaml"
    bad.write_text("type: team\nname: risk\n---\ntype: team\nname: ml\n# \x1b[2J\n")
    assert main(["apply", "-f", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad} (line 6): not valid YAML: character U+001B is not allowed" in err
    assert "\x1b" not in err
    assert "nothing was applied" in err


# --- deadlines on grants (issue 15) ---------------------------------------------------------


def _deadlines(world: World, repo: str) -> dict[str, Any]:
    return {g.subject: g.expires_at for g in world.state().ml_repos[repo].grants}


def test_collaborators_and_ml_repo_access_take_a_deadline(world: World) -> None:
    until = "2999-01-01T00:00:00Z"
    text = BASE.replace(
        "{subject: user:bo@example.com, role: viewer}",
        "{subject: user:bo@example.com, role: viewer, duration: 12h}",
    ).replace(
        "{repo: fraud-models, role: editor}",
        f"{{repo: fraud-models, role: editor, expires_at: '{until}'}}",
    )
    world.apply(text)  # and applying again changes nothing: a duration is not extended
    deadlines = _deadlines(world, "fraud-models")
    assert deadlines["workspace:prod-eu:fraud"] == datetime(2999, 1, 1, tzinfo=UTC)
    assert deadlines["user:bo@example.com"] is not None
    assert deadlines["team:risk"] is None

    # A later deadline is a new grant (an extension); none clears it.
    later = text.replace(until, "3000-01-01T00:00:00Z")
    extended = world.apply(later)
    assert names(extended) == ["grant_repo_access"]
    assert changes(extended, "prod-eu:fraud") == [
        Change(
            "ml_repo_access[fraud-models]",
            "editor until 2999-01-01T00:00:00+00:00",
            "editor until 3000-01-01T00:00:00+00:00",
        )
    ]
    cleared = world.apply(BASE)
    assert sorted(c.wire_name for c in cleared.commands) == ["grant_repo_access"] * 2
    assert set(_deadlines(world, "fraud-models").values()) == {None}


def test_a_deadline_past_the_repos_cap_is_refused_with_its_document(world: World) -> None:
    world.apply(BASE)
    world.tenancy.run("set_repo_access_policy", {"repo": "fraud-models", "max_duration": "1d"})
    text = BASE.replace(
        "{subject: user:bo@example.com, role: viewer}",
        "{subject: user:bo@example.com, role: editor, duration: 2d}",
    )
    refused, source = world.refusal(text)
    assert refused.code == "validation_error"
    assert refused.details["max_duration"] == "1d"
    assert refused.details["command"] == "grant_repo_access"
    assert source.startswith("tenancy.yaml: document 4")


def test_an_ml_repo_document_sets_its_access_policy_before_its_grants(world: World) -> None:
    capped = BASE.replace(
        "description: Fraud models\n",
        "description: Fraud models\naccess_policy: {approvals: 0, max_duration: 30d}\n",
    )
    # (No approvals: a repo that asks for them refuses the manifest's direct grants, issue 15
    # part B.) Under the cap every grant has a deadline (the creator's admin came before the
    # policy).
    capped = capped.replace("role: viewer}", "role: viewer, duration: 7d}")
    capped = capped.replace("role: editor}", "role: editor, duration: 30d}")
    created = world.apply(capped)
    assert "set_repo_access_policy" in names(created)
    policy = world.state().ml_repos["fraud-models"].access_policy
    assert (policy.approvals, policy.max_duration) == (0, "30d")
    loosened = world.apply(capped.replace("max_duration: 30d", "max_duration: null"))
    assert names(loosened)[0] == "set_repo_access_policy"
    assert changes(loosened, "fraud-models")[0] == Change(
        "access_policy",
        {"approvals": 0, "max_duration": "30d"},
        {"approvals": 0, "max_duration": None},
    )
