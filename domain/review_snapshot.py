"""What an access review covers: the grants in force in its scope, and the members of the teams
holding them, read from the aggregates in the command's session when the review opens.

The snapshot is a pure function of those aggregates' states (each recorded with its version in
the review's `opened` event): items in a fixed order (grants by repo then subject, then
memberships by team then user), numbered `i1`, `i2`, …"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.access_review import ReviewItem
from domain.base import now
from domain.cluster import Cluster
from domain.environment import Environment
from domain.ml_repo import MlRepo
from domain.session import Session
from domain.team import Team
from domain.workspace import Workspace


@dataclass
class Snapshot:
    repos: list[str]
    items: list[ReviewItem] = field(default_factory=list)
    read_versions: dict[str, int] = field(default_factory=dict)


def repos_in_scope(
    s: Session, repos: list[str] | None, environment: str | None, everything: bool
) -> list[str]:
    """The live repos a scope names, sorted: the repos listed (each must be live); those a
    workspace of the environment holds a grant on; or every live repo."""
    if repos is not None:
        for name in repos:
            s.referred(MlRepo, name, "repo")
        return sorted(set(repos))
    if environment is not None:
        env = s.referred(Environment, environment, "environment")
        found: set[str] = set()
        for cluster_name in sorted(env.clusters):
            cluster = s.find(Cluster, cluster_name)
            if cluster is None or not cluster.live:
                continue
            for workspace_name, tagged in sorted(cluster.workspaces.items()):
                if tagged != environment:
                    continue
                workspace = s.find(Workspace, cluster_name, workspace_name)
                if workspace is not None and workspace.live:
                    found |= workspace.repos
        return sorted(name for name in found if _live_repo(s, name))
    assert everything
    return [name for name in s.names_of(MlRepo) if _live_repo(s, name)]


def _live_repo(s: Session, name: str) -> bool:
    repo = s.find(MlRepo, name)
    return repo is not None and repo.live


def take(s: Session, repo_names: list[str]) -> Snapshot:
    """The grants in force on `repo_names` now (by the command's clock), and the memberships
    of the teams among their holders."""
    at = now()
    snapshot = Snapshot(repos=repo_names)
    grants: list[ReviewItem] = []
    team_repos: dict[str, list[str]] = {}
    for name in repo_names:
        repo = s.get(MlRepo, name)
        snapshot.read_versions[f"ml_repo:{name}"] = repo.version
        for subject, grant in sorted(repo.grants.items()):
            if not grant.in_force(at):
                continue  # past its deadline: it allows nothing, there is nothing to review
            grants.append(
                ReviewItem(
                    id="",
                    kind="grant",
                    subject=subject,
                    repo=name,
                    role=grant.role,
                    granted_by=grant.granted_by,
                    granted_at=grant.granted_at,
                    reason=grant.reason,
                    expires_at=grant.expires_at,
                )
            )
            if subject.startswith("team:"):
                team_repos.setdefault(subject.removeprefix("team:"), []).append(name)
    memberships: list[ReviewItem] = []
    for team_name, repos in sorted(team_repos.items()):
        team = s.find(Team, team_name)
        if team is None:
            continue
        snapshot.read_versions[f"team:{team_name}"] = team.version
        for user in sorted(team.members):
            memberships.append(
                ReviewItem(
                    id="",
                    kind="membership",
                    subject=f"user:{user}",
                    team=team_name,
                    repos=tuple(repos),
                )
            )
    snapshot.items = [
        item.model_copy(update={"id": f"i{number}"})
        for number, item in enumerate(grants + memberships, start=1)
    ]
    return snapshot
