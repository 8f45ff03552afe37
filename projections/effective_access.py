"""Effective access: what a subject may do on an ML repo, and through which grant.

- a user holds the highest of its own grant and its teams' grants;
- a team or a live workspace holds its own grant;
- a live application `app:<cluster>:<workspace>:<name>` holds its workspace's grant (viewer:
  read, editor: read and write);
- a repo being deleted, or deleted, grants nothing, nor does a workspace being deleted.

`via` names the grant that decided: `direct`, `team:<name>` or `workspace:<cluster>:<name>`.
On a tie the direct grant wins, then teams in name order."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from domain.names import ROLE_RANK
from projections import schema as t

DIRECT = "direct"
GONE = ("deleting", "deleted", "deletion_failed")
ACTION_RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True)
class Access:
    repo: str
    role: str
    via: str


def subject_access(conn: Connection, subject: str, repo: str | None = None) -> list[Access]:
    """Every live repo `subject` may use (only `repo`, if given), by repo name."""
    best: dict[str, Access] = {}
    for grant_subject, via in _holders(conn, subject):
        statement = (
            select(t.grants.c.repo, t.grants.c.role)
            .join(t.ml_repos, t.ml_repos.c.name == t.grants.c.repo)
            .where(t.grants.c.subject == grant_subject, t.ml_repos.c.status.not_in(GONE))
        )
        if repo is not None:
            statement = statement.where(t.grants.c.repo == repo)
        for row in conn.execute(statement):
            held = best.get(row.repo)
            if held is None or ROLE_RANK[row.role] > ROLE_RANK[held.role]:
                best[row.repo] = Access(row.repo, row.role, via)
    return [best[name] for name in sorted(best)]


def allows(role: str | None, action: str) -> bool:
    return role is not None and ROLE_RANK[role] >= ACTION_RANK[action]


def _holders(conn: Connection, subject: str) -> list[tuple[str, str]]:
    """The grant subjects whose grants `subject` holds, with how: in order of precedence."""
    kind, _, rest = subject.partition(":")
    if kind == "user":
        teams = conn.execute(
            select(t.team_members.c.team)
            .where(t.team_members.c.user == rest)
            .order_by(t.team_members.c.team)
        ).scalars()
        return [(subject, DIRECT)] + [(f"team:{team}", f"team:{team}") for team in teams]
    if kind == "team":
        return [(subject, DIRECT)]
    if kind == "workspace":
        return [(subject, DIRECT)] if _live_workspace(conn, rest) else []
    if kind == "app":
        workspace = conn.execute(
            select(t.applications.c.workspace).where(t.applications.c.fqn == rest)
        ).scalar()
        if workspace is not None and _live_workspace(conn, workspace):
            return [(f"workspace:{workspace}", f"workspace:{workspace}")]
    return []


def _live_workspace(conn: Connection, fqn: str) -> bool:
    status = conn.execute(select(t.workspaces.c.status).where(t.workspaces.c.fqn == fqn)).scalar()
    return status is not None and status not in GONE
