"""The grants view: the direct grants in force on each ML repo, with who granted them, when and
why (`repo_access`, a repo's `grants`). Effective access (through teams, workspaces,
applications) is the temporal access view's (`projections.current_access`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete

from domain.event_log import Published
from projections import schema as t
from projections.store import upsert


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    for body, _ in events:
        _apply(conn, body)


def _apply(conn: Connection, body: dict[str, Any]) -> None:
    type_, repo, data = body["type"], body["fqn"], body["data"]
    if type_ == "ml_repo.access_granted":
        upsert(
            conn,
            t.grants,
            {
                "repo": repo,
                "subject": data["subject"],
                "role": data["role"],
                "granted_by": body["actor"],
                "granted_at": body["occurred_at"],
                "reason": data["reason"],
            },
        )
        # The last grant owns it: one without a manager leaves it nobody's.
        managed_by = data.get("managed_by")
        if managed_by is None:
            _unmanage(conn, repo, data["subject"])
        else:
            upsert(
                conn,
                t.grant_managers,
                {"repo": repo, "subject": data["subject"], "managed_by": managed_by},
            )
    elif type_ == "ml_repo.access_revoked":
        conn.execute(
            delete(t.grants).where(t.grants.c.repo == repo, t.grants.c.subject == data["subject"])
        )
        _unmanage(conn, repo, data["subject"])
    elif type_ == "ml_repo.recreated":
        # A recreated repo starts without grants (its deletion ended them, as events, anyway).
        conn.execute(delete(t.grants).where(t.grants.c.repo == repo))
        conn.execute(delete(t.grant_managers).where(t.grant_managers.c.repo == repo))


def _unmanage(conn: Connection, repo: str, subject: str) -> None:
    m = t.grant_managers.c
    conn.execute(delete(t.grant_managers).where(m.repo == repo, m.subject == subject))
