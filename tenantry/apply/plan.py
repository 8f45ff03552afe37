"""The plan of `tenantry apply`: what to send so that the tenancy matches the manifests (over
~400 lines: the diff of every type and of the grants between documents is one walk, read whole).

The plan compares every document with what the views hold and lists the commands that close
the gap, in dependency order: environments, storage integrations, teams, clusters, ML repos,
workspaces, then grants, then what is taken away (revocations, team members, cluster
environments — after the workspaces have moved). When all matches the plan is empty, so
applying the same manifests again sends nothing and writes nothing.

Only what a document says is managed: a field left out of a document is left as it is (the
create command's default applies when the thing is created). `members` and a cluster's
`environments`, when given, are complete: what they do not name is taken away. Grants are only
ever added or changed by default. The grants apply sends record `managed_by: apply`; one of
those that `collaborators` or `ml_repo_access` no longer names is shown as a removal (`-
revoke`) and kept, and revoked with `prune`. A grant made from Python, the bus or by hand (no
manager, or regranted without one since) is never removed. Each grant belongs to one field: a
workspace's grants to its document's `ml_repo_access`, every other subject's to the repo's
`collaborators` — so a repo document never removes a grant a workspace document declares. A
repo's admins are kept unless the document names admins of its own.

The plan decides no domain rule: whether an environment, a cluster or a team exists, whether a
cluster offers an environment, whether a repo would be left without an admin — the command
service decides, once, for the whole plan (`Client.apply`: one request, all or nothing; the
refusal names the command, which `Plan.sources` maps back to its document). What the plan
refuses itself is what it cannot turn into commands: the same thing described twice, two roles
for one grant, a change no command makes (a cluster's region, a storage integration's root)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from domain.commands import (
    AccessPolicyFields,
    AddClusterEnvironment,
    AddTeamMember,
    Command,
    CreateEnvironment,
    CreateMlRepo,
    CreateTeam,
    CreateWorkspace,
    Deadline,
    GrantRepoAccess,
    RegisterCluster,
    RegisterStorageIntegration,
    RemoveClusterEnvironment,
    RemoveTeamMember,
    RevokeRepoAccess,
    SetRepoAccessPolicy,
    SetWorkspaceEnvironment,
    UpdateEnvironment,
    UpdateMlRepo,
    UpdateWorkspace,
)
from projections.results import GONE
from tenantry.apply.manifests import (
    MANIFEST_TYPES,
    AnyManifest,
    ClusterManifest,
    Document,
    EnvironmentManifest,
    MlRepoManifest,
    Problem,
    Source,
    StorageIntegrationManifest,
    TeamManifest,
    WorkspaceManifest,
    check_unique,
    name_of,
)
from tenantry.sdk.client import Client
from tenantry.sdk.results import (
    Cluster,
    Environment,
    MlRepo,
    StorageIntegration,
    Team,
    Workspace,
)

# --- what is there ------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What the views hold, by name (workspaces by FQN)."""

    environments: Mapping[str, Environment] = field(default_factory=dict)
    storage_integrations: Mapping[str, StorageIntegration] = field(default_factory=dict)
    teams: Mapping[str, Team] = field(default_factory=dict)
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    ml_repos: Mapping[str, MlRepo] = field(default_factory=dict)
    workspaces: Mapping[str, Workspace] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        environments: Sequence[Environment] = (),
        storage_integrations: Sequence[StorageIntegration] = (),
        teams: Sequence[Team] = (),
        clusters: Sequence[Cluster] = (),
        ml_repos: Sequence[MlRepo] = (),
        workspaces: Sequence[Workspace] = (),
    ) -> State:
        """From the lists the queries answer."""
        return cls(
            environments={e.name: e for e in environments},
            storage_integrations={s.name: s for s in storage_integrations},
            teams={t.name: t for t in teams},
            clusters={c.name: c for c in clusters},
            # A repo or workspace being deleted, or deleted, is not there: the plan creates it
            # again, and whether it may be (a repo's storage left behind, adopt_storage; a
            # workspace whose namespace is still being removed is refused) is the command
            # service's decision, which `--dry-run` reports.
            ml_repos={r.name: r for r in ml_repos if r.status not in GONE},
            workspaces={w.fqn: w for w in workspaces if w.status not in GONE},
        )


# --- the plan -----------------------------------------------------------------------------


class _Absent:
    def __repr__(self) -> str:
        return "(none)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Change:
    """One field's value before and after (`ABSENT` where there is none)."""

    field: str
    before: Any
    after: Any
    # A grant the manifests do not name: revoked only when the plan prunes.
    removal: bool = False


@dataclass
class Action:
    """What the plan does to one document's thing."""

    kind: Literal["create", "update", "unchanged"]
    type: str
    name: str
    source: Source
    changes: list[Change] = field(default_factory=list)


# The `managed_by` of the grants apply sends: `--prune` revokes only grants that bear it.
APPLY = "apply"


# The phases commands run in; within a phase, in the order planned.
_ENVIRONMENTS, _STORAGE, _TEAMS, _CLUSTERS, _REPOS, _WORKSPACES, _GRANTS, _TAKE_AWAY = range(8)


@dataclass
class Plan:
    actions: list[Action]
    commands: list[Command]
    problems: list[Problem]
    prune: bool = False
    # The document each command comes from (same order as `commands`).
    sources: list[Source] = field(default_factory=list)

    def source_of(self, index: int) -> Source | None:
        """The document of the command at `index` (what a refusal's `index` names)."""
        return self.sources[index] if 0 <= index < len(self.sources) else None

    @property
    def removals(self) -> int:
        """Grants the manifests do not name (revoked by this plan only when it prunes)."""
        return sum(1 for a in self.actions for c in a.changes if c.removal)

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    @property
    def changes_nothing(self) -> bool:
        return not self.commands


def plan(documents: Sequence[Document], state: State, creator: str, *, prune: bool = False) -> Plan:
    """The commands that make `state` match `documents`. `creator` is the actor who will send
    them: a repo it creates starts with it as admin. With `prune`, grants the documents do not
    name are revoked (else they are listed as removals and kept)."""
    return _Planner(documents, state, creator, prune).run()


class _Planner:
    def __init__(
        self, documents: Sequence[Document], state: State, creator: str, prune: bool = False
    ) -> None:
        self.prune = prune
        order = list(MANIFEST_TYPES)
        self.documents = sorted(documents, key=lambda d: order.index(d.manifest.kind))
        self.state = state
        self.creator = creator
        self.steps: list[tuple[int, Command, Source]] = []
        self.actions: dict[tuple[str, str], Action] = {}
        self.problems: list[Problem] = []

    def run(self) -> Plan:
        self.problems.extend(check_unique(self.documents))
        for document in self.documents:
            m = document.manifest
            action = Action("unchanged", m.kind, name_of(m), document.source)
            self.actions[document.key] = action
            if isinstance(m, EnvironmentManifest):
                self._environment(m, action)
            elif isinstance(m, StorageIntegrationManifest):
                self._storage_integration(document, m, action)
            elif isinstance(m, TeamManifest):
                self._team(m, action)
            elif isinstance(m, ClusterManifest):
                self._cluster(document, m, action)
            elif isinstance(m, MlRepoManifest):
                self._ml_repo(m, action)
            else:
                self._workspace(m, action)
        self._grants()
        ordered = sorted(self.steps, key=lambda s: s[0])
        return Plan(
            list(self.actions.values()),
            [command for _, command, _ in ordered],
            self.problems,
            self.prune,
            [source for _, _, source in ordered],
        )

    # --- helpers --------------------------------------------------------------------------

    def _step(self, phase: int, command: Command, action: Action) -> None:
        self.steps.append((phase, command, action.source))
        if action.kind == "unchanged":
            action.kind = "update"

    def _refuse(self, document: Document, path: str, message: str) -> None:
        self.problems.append(
            Problem(
                document.source.file,
                message,
                index=document.source.index,
                line=document.line_of(path),
                path=path,
            )
        )

    def _created(self, action: Action, manifest: AnyManifest) -> None:
        """A creation shows the fields its document gives (grants are shown as grants)."""
        action.kind = "create"
        shown = manifest.model_fields_set - {"type", "name", "collaborators", "ml_repo_access"}
        if isinstance(manifest, WorkspaceManifest):
            shown.discard("cluster")
        for name, value in manifest.model_dump(mode="json", include=shown).items():
            action.changes.append(Change(name, ABSENT, value))

    def _given(self, manifest: AnyManifest, name: str) -> bool:
        return name in manifest.model_fields_set

    def _unchangeable(
        self, document: Document, fields: Mapping[str, tuple[Any, Any]], what: str
    ) -> None:
        for name, (before, after) in fields.items():
            if self._given(document.manifest, name) and before != after:
                self._refuse(
                    document,
                    name,
                    f"is {json.dumps(before)} and cannot be changed to {json.dumps(after)}: "
                    f"no command changes {what}",
                )

    # --- by type --------------------------------------------------------------------------

    def _environment(self, m: EnvironmentManifest, action: Action) -> None:
        current = self.state.environments.get(m.name)
        if current is None:
            self._created(action, m)
            self._step(_ENVIRONMENTS, CreateEnvironment.model_validate(_fields(m)), action)
            return
        changed: dict[str, Any] = {}
        for name in ("is_production", "optimize_for", "color", "access_approvals"):
            after = getattr(m, name)
            before = getattr(current, name)
            # `color: null` cannot clear a colour: update_environment reads None as "as is".
            if self._given(m, name) and after is not None and after != before:
                changed[name] = after
                action.changes.append(Change(name, before, after))
        if changed:
            self._step(_ENVIRONMENTS, UpdateEnvironment(name=m.name, **changed), action)

    def _storage_integration(
        self, document: Document, m: StorageIntegrationManifest, action: Action
    ) -> None:
        current = self.state.storage_integrations.get(m.name)
        if current is None:
            self._created(action, m)
            command = RegisterStorageIntegration.model_validate(_fields(m))
            self._step(_STORAGE, command, action)
            return
        self._unchangeable(
            document,
            {
                "provider": (current.provider, m.provider),
                "storage_root": (current.storage_root, m.storage_root),
                "region": (current.region, m.region),
            },
            "a storage integration (remove it and register it again)",
        )

    def _team(self, m: TeamManifest, action: Action) -> None:
        current = self.state.teams.get(m.name)
        if current is None:
            self._created(action, m)
            self._step(_TEAMS, CreateTeam.model_validate(_fields(m)), action)
            return
        if not self._given(m, "members"):
            return
        before, after = set(current.members), set(m.members)
        for user in sorted(after - before):
            action.changes.append(Change(f"members[{user}]", ABSENT, "member"))
            self._step(_TEAMS, AddTeamMember(team=m.name, user=user), action)
        for user in sorted(before - after):
            action.changes.append(Change(f"members[{user}]", "member", ABSENT))
            self._step(_TAKE_AWAY, RemoveTeamMember(team=m.name, user=user), action)

    def _cluster(self, document: Document, m: ClusterManifest, action: Action) -> None:
        current = self.state.clusters.get(m.name)
        if current is None:
            self._created(action, m)
            self._step(_CLUSTERS, RegisterCluster.model_validate(_fields(m)), action)
            return
        self._unchangeable(
            document,
            {
                "region": (current.region, m.region),
                "provider": (current.provider, m.provider),
                "labels": (current.labels, m.labels),
            },
            "a cluster's region, provider or labels (deregister it and register it again)",
        )
        before, after = current.environments, list(dict.fromkeys(m.environments))
        if set(before) == set(after):
            return
        action.changes.append(Change("environments", before, after))
        for environment in after:
            if environment not in before:
                self._step(
                    _CLUSTERS,
                    AddClusterEnvironment(cluster=m.name, environment=environment),
                    action,
                )
        for environment in before:
            if environment not in after:
                self._step(
                    _TAKE_AWAY,
                    RemoveClusterEnvironment(cluster=m.name, environment=environment),
                    action,
                )

    def _ml_repo(self, m: MlRepoManifest, action: Action) -> None:
        current = self.state.ml_repos.get(m.name)
        if current is None:
            self._created(action, m)
            command = CreateMlRepo.model_validate(
                _fields(m, exclude={"collaborators", "access_policy"})
            )
            self._step(_REPOS, command, action)
            if m.access_policy is not None and m.access_policy != AccessPolicyFields():
                self._step(_REPOS, _set_policy(m.name, m.access_policy), action)
            return
        if m.access_policy is not None:
            before = current.access_policy.model_dump()
            if m.access_policy.model_dump() != before:
                action.changes.append(Change("access_policy", before, m.access_policy.model_dump()))
                # Before the grants: those of this plan are held to it too.
                self._step(_REPOS, _set_policy(m.name, m.access_policy), action)
        changed: dict[str, str] = {}
        if self._given(m, "description") and m.description != current.description:
            changed["description"] = m.description
        # Sent for the command service to refuse (a repo's storage integration is immutable).
        if m.storage_integration != current.storage_integration:
            changed["storage_integration"] = m.storage_integration
        for name, after in changed.items():
            action.changes.append(Change(name, getattr(current, name), after))
        if changed:
            update = UpdateMlRepo(
                name=m.name,
                description=changed.get("description", current.description),
                storage_integration=changed.get("storage_integration"),
            )
            self._step(_REPOS, update, action)

    def _workspace(self, m: WorkspaceManifest, action: Action) -> None:
        current = self.state.workspaces.get(m.fqn)
        if current is None:
            self._created(action, m)
            # Its grants go with the creation (same command), once they are known.
            return
        if m.environment != current.environment:
            action.changes.append(Change("environment", current.environment, m.environment))
            self._step(
                _WORKSPACES,
                SetWorkspaceEnvironment(workspace=m.fqn, environment=m.environment),
                action,
            )
        changed: dict[str, dict[str, str]] = {}
        for name in ("labels", "annotations"):
            before: dict[str, str] = getattr(current, name)
            after: dict[str, str] = getattr(m, name)
            if self._given(m, name) and after != before:
                changed[name] = after
                action.changes.extend(_map_changes(name, before, after))
        if changed:
            update = UpdateWorkspace.model_validate({"workspace": m.fqn, **changed})
            self._step(_WORKSPACES, update, action)

    # --- grants ---------------------------------------------------------------------------

    def _grants(self) -> None:
        wanted: dict[tuple[str, str], tuple[str, Document, str]] = {}
        # The deadline each wanted grant asks for (absent: none, until revoked).
        terms: dict[tuple[str, str], dict[str, Any]] = {}
        managed_repos: dict[str, Document] = {}
        managed_subjects: dict[str, Document] = {}
        for d in self.documents:
            m = d.manifest
            if isinstance(m, MlRepoManifest) and self._given(m, "collaborators"):
                managed_repos[m.name] = d
                for i, c in enumerate(m.collaborators):
                    self._want(wanted, (m.name, c.subject), c.role, d, f"collaborators[{i}]")
                    terms[(m.name, c.subject)] = _deadline(c)
            elif isinstance(m, WorkspaceManifest) and self._given(m, "ml_repo_access"):
                managed_subjects[f"workspace:{m.fqn}"] = d
                for i, a in enumerate(m.ml_repo_access):
                    key = (a.repo, f"workspace:{m.fqn}")
                    self._want(wanted, key, a.role, d, f"ml_repo_access[{i}]")
                    terms[key] = _deadline(a)

        held: dict[tuple[str, str], str] = {}
        # The grants an apply made (and no grant since without a manager): only these are ever
        # revoked; a grant made from Python or the bus is nobody's to take away.
        ours: set[tuple[str, str]] = set()
        deadlines: dict[tuple[str, str], datetime | None] = {}
        for name, current in self.state.ml_repos.items():
            held.update({(name, g.subject): g.role for g in current.grants})
            deadlines.update({(name, g.subject): g.expires_at for g in current.grants})
            ours.update((name, g.subject) for g in current.grants if g.managed_by == APPLY)
        # A repo this plan creates starts with its creator as admin.
        for d in self.documents:
            if isinstance(d.manifest, MlRepoManifest) and self.actions[d.key].kind == "create":
                held[(d.manifest.name, self.creator)] = "admin"

        # A workspace created by this plan gets its grants in its creation.
        new_workspaces: dict[str, tuple[Document, WorkspaceManifest]] = {}
        for d in self.documents:
            if isinstance(d.manifest, WorkspaceManifest) and self.actions[d.key].kind == "create":
                new_workspaces[f"workspace:{d.manifest.fqn}"] = (d, d.manifest)
        creations: dict[str, list[dict[str, Any]]] = {s: [] for s in new_workspaces}

        grants: list[tuple[str, str, str, Document]] = []
        for (repo, subject), (role, document, _) in wanted.items():
            before = held.get((repo, subject))
            term = terms.get((repo, subject), {})
            if before == role and _same_deadline(term, deadlines.get((repo, subject))):
                continue
            if subject in creations and before is None:
                creations[subject].append({"repo": repo, "role": role, **term})
                continue
            grants.append((repo, subject, role, document))
            self._grant_change(
                document,
                repo,
                subject,
                _with_deadline(before, deadlines.get((repo, subject))),
                _with_deadline(role, term.get("expires_at") or term.get("duration")),
            )

        revokes: list[tuple[str, str, Document]] = []
        for (repo, subject), role in sorted(held.items()):
            if (repo, subject) in wanted:
                continue
            # One field owns each grant: a workspace's document its grants, the repo's
            # document every other subject's.
            if subject.startswith("workspace:"):
                owner = managed_subjects.get(subject)
            else:
                owner = managed_repos.get(repo)
            if owner is None or (repo, subject) not in ours:
                continue
            repo_document = managed_repos.get(repo)
            if role == "admin" and repo_document is not None and not _names_admins(wanted, repo):
                continue  # kept: the document names no admins of its own
            self._grant_change(owner, repo, subject, role, None, removal=True)
            if self.prune:
                revokes.append((repo, subject, owner))

        for subject, (document, m) in new_workspaces.items():
            if creations[subject]:
                self.actions[document.key].changes.append(
                    Change("ml_repo_access", ABSENT, creations[subject])
                )
            command = CreateWorkspace.model_validate(
                {
                    **_fields(m),
                    "ml_repo_access": [{**a, "managed_by": APPLY} for a in creations[subject]],
                }
            )
            self.steps.append((_WORKSPACES, command, document.source))
        # Admins first, so that a repo never lacks one between two commands.
        for repo, subject, role, document in sorted(grants, key=lambda g: g[2] != "admin"):
            grant = GrantRepoAccess.model_validate(
                {
                    "repo": repo,
                    "subject": subject,
                    "role": role,
                    "reason": _reason(document),
                    "managed_by": APPLY,
                    **terms.get((repo, subject), {}),
                }
            )
            self._step(_GRANTS, grant, self.actions[document.key])
        for repo, subject, document in revokes:
            self._step(
                _TAKE_AWAY,
                RevokeRepoAccess(repo=repo, subject=subject, reason=_reason(document)),
                self.actions[document.key],
            )

    def _want(
        self,
        wanted: dict[tuple[str, str], tuple[str, Document, str]],
        key: tuple[str, str],
        role: str,
        document: Document,
        path: str,
    ) -> None:
        earlier = wanted.get(key)
        if earlier is not None and earlier[0] != role:
            self._refuse(
                document,
                path,
                f"gives {key[1]} the role {role} on {key[0]}, but {earlier[1].source} "
                f"({earlier[2]}) gives it {earlier[0]}",
            )
            return
        wanted.setdefault(key, (role, document, path))

    def _grant_change(
        self,
        document: Document,
        repo: str,
        subject: str,
        before: str | None,
        after: str | None,
        removal: bool = False,
    ) -> None:
        if isinstance(document.manifest, WorkspaceManifest):
            field_name = f"ml_repo_access[{repo}]"
        else:
            field_name = f"collaborators[{subject}]"
        self.actions[document.key].changes.append(
            Change(field_name, _or_absent(before), _or_absent(after), removal)
        )


def _set_policy(repo: str, policy: AccessPolicyFields) -> SetRepoAccessPolicy:
    return SetRepoAccessPolicy(repo=repo, **policy.model_dump())


def _deadline(access: Deadline) -> dict[str, Any]:
    """The deadline fields a manifest's grant gives (none: until revoked)."""
    return access.model_dump(include={"expires_at", "duration"}, exclude_none=True)


def _same_deadline(term: dict[str, Any], held: datetime | None) -> bool:
    """Whether the grant held already has the deadline asked for: the same `expires_at`; any
    deadline for a `duration` (it counts from when the grant is made: applying again does not
    extend it — give a new `expires_at` to); none for none (a grant without one clears it)."""
    if "expires_at" in term:
        return bool(held == term["expires_at"])
    if "duration" in term:
        return held is not None
    return held is None


def _with_deadline(role: str | None, deadline: Any) -> str | None:
    """A grant as the plan shows it: its role, and its deadline when it has one."""
    if role is None or deadline is None:
        return role
    until = deadline.isoformat() if isinstance(deadline, datetime) else f"+{deadline}"
    return f"{role} until {until}"


def _or_absent(value: Any) -> Any:
    return ABSENT if value is None else value


def _names_admins(wanted: Mapping[tuple[str, str], tuple[str, Document, str]], repo: str) -> bool:
    return any(r == repo and role == "admin" for (r, _), (role, _, _) in wanted.items())


def _fields(manifest: AnyManifest, exclude: set[str] | None = None) -> dict[str, Any]:
    """A document's fields as its create command takes them."""
    return manifest.model_dump(exclude={"type", *(exclude or set())})


def _map_changes(
    name: str, before: Mapping[str, str], after: Mapping[str, str]
) -> Iterator[Change]:
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            yield Change(f"{name}.{key}", before.get(key, ABSENT), after.get(key, ABSENT))


def _reason(document: Document) -> str:
    return f"tenantry apply: {document.source.file}"[:1000]


# --- reading the views, and applying -----------------------------------------------------


async def read_state(client: Client) -> State:
    """What the views hold now, for planning."""
    # Where the views stand now (one row is enough to learn it); every list is read from there.
    first = await client.query("list_environments", limit=1)
    environments, storage, teams, clusters, repos, workspaces = await asyncio.gather(
        client.list_environments(min_position=first.position),
        client.list_storage_integrations(min_position=first.position),
        client.list_teams(min_position=first.position),
        client.list_clusters(min_position=first.position),
        client.list_ml_repos(min_position=first.position),
        client.list_workspaces(min_position=first.position),
    )
    return State.of(
        environments=environments,
        storage_integrations=storage,
        teams=teams,
        clusters=clusters,
        ml_repos=repos,
        workspaces=workspaces,
    )
