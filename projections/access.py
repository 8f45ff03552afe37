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
from projections.store import Raw, Writes


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """The batch's writes are held and run at its end, a run of one statement at a time."""
    writes = Writes(conn)
    for body, _ in events:
        _apply(writes, body)
    writes.flush()


def _apply(writes: Writes, body: dict[str, Any]) -> None:
    type_, repo, data = body["type"], body["fqn"], body["data"]
    if type_ == "ml_repo.access_granted":
        writes.upsert(
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
            writes.upsert(
                t.grant_deadlines,
                {"repo": repo, "subject": data["subject"], "expires_at": utc_text_of(expires_at)},
            )
        elif not new_grant(data):
            writes.add(_DELETE_DEADLINE, {"w_repo": repo, "w_subject": data["subject"]})
        # The last grant owns it: one without a manager leaves it nobody's. (A new grant, not
        # a new role, had no grant before it, so no manager to forget.)
        managed_by = data.get("managed_by")
        if managed_by is None:
            if not new_grant(data):
                _unmanage(writes, repo, data["subject"])
        else:
            writes.upsert(
                t.grant_managers,
                {"repo": repo, "subject": data["subject"], "managed_by": managed_by},
            )
    elif type_ in ("ml_repo.access_revoked", "ml_repo.access_expired"):
        key = {"w_repo": repo, "w_subject": data["subject"]}
        writes.add(_DELETE_GRANT, key)
        writes.add(_DELETE_DEADLINE, key)
        _unmanage(writes, repo, data["subject"])
    elif type_ == "ml_repo.access_policy_set":
        writes.upsert(
            t.repo_access_policies,
            {"repo": repo, "approvals": data["approvals"], "max_duration": data["max_duration"]},
        )
    elif type_ == "ml_repo.recreated":
        # A recreated repo starts without grants (its deletion ended them, as events, anyway)
        # and with the default access policy.
        for statement in _DELETE_REPO_ROWS:
            writes.add(statement, {"w_repo": repo})


def new_grant(data: dict[str, Any]) -> bool:
    """The grant event gave a role where none was held (not a new role for a holder)."""
    return "previous_role" in data and data["previous_role"] is None


def _unmanage(writes: Writes, repo: str, subject: str) -> None:
    writes.add(_UNMANAGE, {"w_repo": repo, "w_subject": subject})


# Built once, run on the driver's cursor: run for most events of a busy tenancy (a statement
# built for each was most of this view's cost).
def _where_key(table: Table) -> tuple[ColumnElement[bool], ...]:
    return (table.c.repo == bindparam("w_repo"), table.c.subject == bindparam("w_subject"))


_DELETE_GRANT = Raw(delete(t.grants).where(*_where_key(t.grants)))
_UNMANAGE = Raw(delete(t.grant_managers).where(*_where_key(t.grant_managers)))
_DELETE_DEADLINE = Raw(delete(t.grant_deadlines).where(*_where_key(t.grant_deadlines)))
_DELETE_REPO_ROWS = [
    Raw(delete(table).where(table.c.repo == bindparam("w_repo")))
    for table in (t.grants, t.grant_managers, t.grant_deadlines, t.repo_access_policies)
]
