"""The grants view: the direct grants in force on each ML repo, with who granted them, when and
why, and until when (`repo_access`, a repo's `grants`), and each repo's access policy. Effective
access (through teams, workspaces, applications) is the temporal access view's
(`projections.current_access`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, bindparam, delete

from domain.event_log import Published
from projections import schema as t
from projections.audit import utc_text_of
from projections.store import Raw, upsert


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
        # A grant without a deadline clears the one before it.
        expires_at = data.get("expires_at")
        if isinstance(expires_at, str):
            upsert(
                conn,
                t.grant_deadlines,
                {"repo": repo, "subject": data["subject"], "expires_at": utc_text_of(expires_at)},
            )
        elif not new_grant(data):
            _DELETE_DEADLINE.run(conn, {"w_repo": repo, "w_subject": data["subject"]})
        # The last grant owns it: one without a manager leaves it nobody's. (A new grant, not
        # a new role, had no grant before it, so no manager to forget.)
        managed_by = data.get("managed_by")
        if managed_by is None:
            if not new_grant(data):
                _unmanage(conn, repo, data["subject"])
        else:
            upsert(
                conn,
                t.grant_managers,
                {"repo": repo, "subject": data["subject"], "managed_by": managed_by},
            )
    elif type_ in ("ml_repo.access_revoked", "ml_repo.access_expired"):
        key = {"w_repo": repo, "w_subject": data["subject"]}
        _DELETE_GRANT.run(conn, key)
        _DELETE_DEADLINE.run(conn, key)
        _unmanage(conn, repo, data["subject"])
    elif type_ == "ml_repo.access_policy_set":
        upsert(
            conn,
            t.repo_access_policies,
            {"repo": repo, "approvals": data["approvals"], "max_duration": data["max_duration"]},
        )
    elif type_ == "ml_repo.recreated":
        # A recreated repo starts without grants (its deletion ended them, as events, anyway)
        # and with the default access policy.
        for table in (t.grants, t.grant_managers, t.grant_deadlines, t.repo_access_policies):
            conn.execute(delete(table).where(table.c.repo == repo))


def new_grant(data: dict[str, Any]) -> bool:
    """The grant event gave a role where none was held (not a new role for a holder)."""
    return "previous_role" in data and data["previous_role"] is None


def _unmanage(conn: Connection, repo: str, subject: str) -> None:
    _UNMANAGE.run(conn, {"w_repo": repo, "w_subject": subject})


# Built once, run on the driver's cursor: run for most events of a busy tenancy (a statement
# built for each was most of this view's cost).
def _where_key(table: Table) -> tuple[ColumnElement[bool], ...]:
    return (table.c.repo == bindparam("w_repo"), table.c.subject == bindparam("w_subject"))


_DELETE_GRANT = Raw(delete(t.grants).where(*_where_key(t.grants)))
_UNMANAGE = Raw(delete(t.grant_managers).where(*_where_key(t.grant_managers)))
_DELETE_DEADLINE = Raw(delete(t.grant_deadlines).where(*_where_key(t.grant_deadlines)))
