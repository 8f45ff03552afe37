"""Today's access: what a subject may do on an ML repo now, and through which grant, read from the
temporal access view's open rows (`view_access_open`, kept by `projections.temporal_access`).

Those rows are every way a subject holds a role at this moment: its own grant (`via` `direct`),
a team's grant to a member (`team:<name>`), a live workspace's grant to its live applications
(`workspace:<cluster>:<name>`); a repo being deleted, or a workspace being deleted, has none. So
`check_access`, `subject_access` and `list_ml_repos(subject)` answer the same question as
`access_report` as of now, from the same rows, and no rule of access is restated here: only how
the rows of one (subject, repo) make one answer.

A row past its grant's deadline (`expires_at`) answers nothing from the deadline on, whether or
not the expiry event has come: "now" is the moment of the question (the server's clock).

A subject's role on a repo is the highest of its rows; on a tie the direct grant decides, then
the holders in name order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, or_, select

from domain.names import ROLE_RANK
from projections import schema as t
from projections.audit import utc_text


def now_of(conn: Connection) -> datetime:
    """The moment of a question asked on `conn` (`ViewStore.clock`; the system clock else)."""
    clock = conn.info.get("tenantry_clock")
    return clock() if clock is not None else datetime.now(UTC)


@dataclass(frozen=True)
class Access:
    repo: str
    role: str
    via: str


def subject_access(
    conn: Connection, subject: str, repo: str | None = None, at: datetime | None = None
) -> list[Access]:
    """Every repo `subject` may use now (at `at`, if given: a moment not before the views'
    last event), only `repo` if given, by repo name."""
    rows = t.access_open.c
    moment = utc_text(at or now_of(conn))
    # Current rows only, by the open table's primary key (subject, via, repo): as many as the
    # subject holds now, whatever the history.
    statement = select(rows.repo, rows.role, rows.via).where(
        rows.subject == subject, or_(rows.expires_at.is_(None), rows.expires_at > moment)
    )
    if repo is not None:
        statement = statement.where(rows.repo == repo)
    best: dict[str, Access] = {}
    for found in conn.execute(statement):
        held = best.get(found.repo)
        if held is None or _precedence(found.role, found.via) < _precedence(held.role, held.via):
            best[found.repo] = Access(found.repo, found.role, found.via)
    return [best[name] for name in sorted(best)]


def _precedence(role: str, via: str) -> tuple[int, bool, str]:
    """Lowest first: the highest role, then the direct grant, then holders by name."""
    return (-ROLE_RANK[role], via != t.DIRECT, via)
