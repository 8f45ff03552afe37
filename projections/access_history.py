"""Reads of the temporal access view: the rows in force at a moment (`access_report`) and the
changes between two moments (`access_changes`).

The view stores every row in force (`view_access_open`), the ended *direct* rows
(`view_access_ended`) and every membership of a team or workspace (`view_access_holders`). A
member's ended row through a team or a workspace is not stored: it is the overlap of a direct row
of its holder (the grant to the team or workspace, one role) with the membership, in log
positions, and is derived here. The view begins and ends those rows exactly so (a member's row
begins with the later of the two and ends with the earlier, as the earlier ended), which
`tests/property/test_temporal_vs_replay.py` holds against a replay of the log.

A grant's deadline (`expires_at`, issue 15) ends its rows there: an ended row's `to_at` is
never past it, and a row still open past its deadline (its expiry not recorded yet) counts as
ended at the deadline (`expired`) in every answer here.

Every search has a lower bound in time or reads rows in force only: the cost of a question is
the history after the moment asked about, never a key's whole history."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    union_all,
)

from projections import schema as t
from projections.schema import DIRECT
from projections.store import read_tracking

# Who records an expiry (the scheduler): the actor of an expiry not recorded yet.
EXPIRY_ACTOR = "service:tenantry"
EXPIRY_EVENT = "ml_repo.access_expired"

Row = dict[str, Any]
_REPORTED = ("repo", "subject", "role", "granted_at", "granted_by", "reason", "via")


def in_force(conn: Connection, moment: str, repo: str | None, subject: str | None) -> list[Row]:
    """`access_report`'s rows at `moment` (fixed-width UTC text), sorted: one statement."""
    params = {"moment": moment, "repo": repo, "subject": subject}
    statement = _report(repo is not None, subject is not None)
    found = [dict(row._mapping) for row in conn.execute(statement, params)]
    found.sort(key=lambda row: (row["repo"], row["subject"], row["via"]))
    return found


@functools.cache
def _report(by_repo: bool, by_subject: bool) -> CompoundSelect[Any]:
    """The rows in force at :moment (by :repo, :subject), as one UNION ALL: the stored rows
    (open, and ended after :moment) and the members' rows through a holder's grant that the
    view no longer stores, the overlap of a grant and a membership both in force at :moment
    (those where both are open still are rows of the open table: the first part)."""
    stored = [_in_force(table, by_repo, by_subject) for table in ("open", "ended")]
    members = [
        _members_in_force(grant_ended, membership_ended, by_repo, by_subject)
        for grant_ended, membership_ended in ((True, False), (False, True), (True, True))
    ]
    return union_all(*stored, *members)


def _members_in_force(
    grant_ended: bool, membership_ended: bool, by_repo: bool, by_subject: bool
) -> Select[Any]:
    """Members' rows at :moment through a direct grant of their holder (open or ended) and a
    membership (open or ended), each searched as `_in_force` and `_memberships` search."""
    grants = t.access_ended if grant_ended else t.access_open
    g, h = grants.c, t.access_holders.c
    where = [g.via == DIRECT, h.holder == g.subject, _unindexed(h.from_at) <= bindparam("moment")]
    if grant_ended:
        where += [g.to_at > bindparam("moment"), _unindexed(g.from_at) <= bindparam("moment")]
    else:
        where.append(g.from_at <= bindparam("moment"))
    where.append(h.to_at > bindparam("moment") if membership_ended else h.to_position.is_(None))
    if by_repo:
        where.append(g.repo == bindparam("repo"))
    if by_subject:
        where.append(h.member == bindparam("subject"))
    else:
        where.append(_holder(_unindexed(g.subject)))
    columns = [
        g.repo,
        h.member.label("subject"),
        g.role,
        g.granted_at,
        g.granted_by,
        g.reason,
        g.subject.label("via"),
    ]
    return (
        select(*columns)
        .select_from(grants)
        .join(t.access_holders, h.holder == g.subject)
        .where(*where)
    )


@functools.cache
def _in_force(table: str, by_repo: bool, by_subject: bool) -> Select[Any]:
    """The rows of `table` ("open" or "ended") in force at :moment (by :repo, :subject).
    Built once for each shape: building a statement costs as much as running it here."""
    if table == "open":
        # In force at T: begun by T and not ended by it. The rows still open, and those ended
        # after T: neither search walks the rows that ended before T.
        open_ = t.access_open.c
        statement = select(*(open_[name] for name in _REPORTED)).where(
            open_.from_at <= bindparam("moment"), _before_deadline(open_, bindparam("moment"))
        )
        columns = open_
    else:
        # (`from_at` wrapped, so that no planner searches by it: that bound is the one that
        # walks history; with no statistics SQLite would take either.)
        ended = t.access_ended.c
        statement = select(*(ended[name] for name in _REPORTED)).where(
            ended.to_at > bindparam("moment"), _unindexed(ended.from_at) <= bindparam("moment")
        )
        columns = ended
    if by_repo:
        statement = statement.where(columns.repo == bindparam("repo"))
    if by_subject:
        statement = statement.where(columns.subject == bindparam("subject"))
    return statement


def changes(
    conn: Connection, after: str, until: str, repo: str | None, subject: str | None
) -> list[Row]:
    """`access_changes`' changes after `after` up to `until`, in log order."""
    open_, ended = t.access_open.c, t.access_ended.c
    # Rows begun in the window, open or ended since; rows ended in it. Each from its lower
    # bound on. (A row begun after `after` ended after it: ended rows are searched by when
    # they ended.)
    began = [
        # (Not one whose deadline came by when it began, the log clock having stepped back
        # between: it never allowed anything, as `access_report` says.)
        select(t.access_open).where(
            open_.from_at > after,
            open_.from_at <= until,
            _before_deadline(open_, open_.from_at),
        ),
        select(t.access_ended).where(
            ended.to_at > after, ended.from_at > after, ended.from_at <= until
        ),
    ]
    # A row ended as `changed` is followed by its successor at the same position: one change.
    revoked = select(t.access_ended).where(
        ended.to_at > after, ended.to_at <= until, ended.end_change.in_(("revoked", "expired"))
    )
    # Open rows whose deadline fell in the window: ended there, their expiry not recorded yet.
    lapsed = select(t.access_open).where(
        open_.expires_at > after, open_.expires_at <= until, open_.expires_at > open_.from_at
    )
    found = [
        _began(dict(r._mapping))
        for statement, table in zip(began, (t.access_open, t.access_ended), strict=True)
        for r in conn.execute(statement.where(*_filters(table, repo, subject)))
    ] + [
        _revoked(dict(r._mapping))
        for r in conn.execute(revoked.where(*_filters(t.access_ended, repo, subject)))
    ]
    # An expiry not recorded yet is not in the log: it comes after everything the views
    # hold, so its `position` is the next one.
    pending = read_tracking(conn).position + 1
    found += [
        {**_revoked(_lapsed(dict(r._mapping))), "position": pending}
        for r in conn.execute(lapsed.where(*_filters(t.access_open, repo, subject)))
    ]
    grants, members = _overlapping(conn, after, until, repo, subject)
    for grant in grants:
        for member in members.get(grant["subject"], ()):
            row = _member_row(grant, member)
            if row is None or row["to_at"] is None:
                continue  # never overlapped, or in force still: read from the open table
            if row["to_position"] is None and member["to_position"] is None:
                continue  # lapsed but still in the open table: read from there
            if after < row["from_at"] <= until:
                found.append(_began(row))
            if row["end_change"] in ("revoked", "expired") and after < row["to_at"] <= until:
                found.append(_revoked(row) | {"position": row["to_position"] or pending})
    found.sort(key=lambda c: (c["position"], c["repo"], c["subject"], c["via"]))
    return found


def _began(r: Row) -> Row:
    return {
        "at": r["from_at"],
        "change": r["start_change"],
        "repo": r["repo"],
        "subject": r["subject"],
        "role": r["role"],
        "previous_role": r["previous_role"],
        "actor": r["start_actor"],
        "reason": r["start_reason"],
        "via": r["via"],
        "event": r["start_event"],
        "position": r["from_position"],
    }


def _revoked(r: Row) -> Row:
    return {
        "at": r["to_at"],
        "change": r["end_change"],
        "repo": r["repo"],
        "subject": r["subject"],
        "role": None,
        "previous_role": r["role"],
        "actor": r["end_actor"],
        "reason": r["end_reason"],
        "via": r["via"],
        "event": r["end_event"],
        "position": r["to_position"],
    }


_END = ("to_at", "to_position", "end_change", "end_event", "end_actor", "end_reason")


def _lapsed(row: Row) -> Row:
    """An open row past its deadline, as ended there (its expiry not recorded yet)."""
    return {
        **row,
        "to_at": row["expires_at"],
        "to_position": None,
        "end_change": "expired",
        "end_event": EXPIRY_EVENT,
        "end_actor": EXPIRY_ACTOR,
        "end_reason": None,
    }


def _before_deadline(columns: Any, moment: Any) -> ColumnElement[bool]:
    """A row's deadline, if it has one, is after `moment`."""
    return or_(columns.expires_at.is_(None), columns.expires_at > moment)


def _member_row(grant: Row, member: Row) -> Row | None:
    """The row `member` held through `grant` (a direct row of its holder), as the view began
    and ended it: from the later start to the earlier end, in log positions; None if the two
    never overlapped."""
    row = {**grant, "subject": member["member"], "via": grant["subject"]}
    expires_at = grant.get("expires_at")
    if member["from_position"] > grant["from_position"]:
        # Joined while the grant was in force: a new row, begun by the joining.
        row.update(
            from_position=member["from_position"],
            from_at=member["from_at"],
            start_change="granted",
            start_event=member["added_event"],
            start_actor=member["added_by"],
            start_reason=member["added_reason"],
            previous_role=None,
        )
    if expires_at is not None and row["from_at"] >= expires_at:
        return None  # joined after the deadline
    grant_end, member_end = grant.get("to_position"), member["to_position"]
    left_first = member_end is not None and (grant_end is None or member_end < grant_end)
    if left_first and expires_at is not None and member["to_at"] >= expires_at:
        left_first = False  # the deadline came first
    if left_first:
        row.update(
            to_at=member["to_at"],
            to_position=member_end,
            end_change="revoked",
            end_event=member["removed_event"],
            end_actor=member["removed_by"],
            end_reason=member["removed_reason"],
        )
    elif grant_end is None and expires_at is not None and member_end is not None:
        row = _lapsed(row)  # left after the deadline, its expiry not recorded yet
    elif grant_end is None:
        row.update(dict.fromkeys(_END))
    if row["to_position"] is not None and row["to_position"] <= row["from_position"]:
        return None
    return row


def _overlapping(
    conn: Connection,
    since: str,
    until: str,
    repo: str | None,
    subject: str | None,
) -> tuple[list[Row], dict[str, list[Row]]]:
    """The direct rows of teams and workspaces and the memberships of those holders that were
    in force at some moment of [since, until]: the
    holders' grants (on `repo`, if given) and their members by holder (only `subject`'s
    memberships, if given)."""
    if subject is not None:
        if subject.startswith(("team:", "workspace:")):
            return [], {}  # a team or a workspace holds no other holder's grants
        memberships = _rows(conn, t.access_holders, since, until, member=subject)
        holders = sorted({m["holder"] for m in memberships})
        if not holders:
            return [], {}
        grants = _rows(conn, None, since, until, repo=repo, subjects=holders)
    else:
        grants = _rows(conn, None, since, until, repo=repo)
        holders = sorted({g["subject"] for g in grants})
        if not holders:
            return [], {}
        memberships = _rows(conn, t.access_holders, since, until, holders=holders)
    by_holder: dict[str, list[Row]] = defaultdict(list)
    for membership in memberships:
        by_holder[membership["holder"]].append(membership)
    return grants, by_holder


def _rows(
    conn: Connection,
    holders_table: Table | None,
    since: str,
    until: str,
    *,
    repo: str | None = None,
    subjects: Sequence[str] | None = None,
    member: str | None = None,
    holders: Sequence[str] | None = None,
) -> list[Row]:
    """Rows in force at some moment of [since, until]: the holders' direct rows (open and
    ended), or, given `holders_table`, memberships (open and ended). Open rows are read from
    rows in force (the open table; the holders' partial indexes of open rows), ended ones by
    when they ended, from `since` on (a row ended at `since` was not in force then)."""
    params = {
        "since": since,
        "until": until,
        "repo": repo,
        "subjects": subjects,
        "member": member,
        "holders": holders,
    }
    if holders_table is None:
        shapes = [_grants("open", repo is not None, subjects is not None)]
        shapes.append(_grants("ended", repo is not None, subjects is not None))
    else:
        shapes = [_memberships(ended, member is not None) for ended in (False, True)]
    return [dict(row._mapping) for statement in shapes for row in conn.execute(statement, params)]


@functools.cache
def _grants(table: str, by_repo: bool, by_subjects: bool) -> Select[Any]:
    """Direct rows of teams and workspaces (:subjects, or all) in `table` ("open" or "ended")
    in force at some moment of [:since, :until] (on :repo)."""
    chosen = t.access_open if table == "open" else t.access_ended
    c = chosen.c
    where = [c.via == DIRECT]
    # (The ranges wrapped, as below: the ended rows are searched by when they ended.)
    if by_subjects:
        where.append(c.subject.in_(bindparam("subjects", expanding=True)))
    else:
        where.append(_holder(_unindexed(c.subject)))
    if by_repo:
        where.append(c.repo == bindparam("repo"))
    if chosen is t.access_open:
        where += [c.from_at <= bindparam("until"), _before_deadline(c, bindparam("since"))]
    else:
        where += [c.to_at > bindparam("since"), _unindexed(c.from_at) <= bindparam("until")]
    return select(chosen).where(*where)


@functools.cache
def _memberships(ended: bool, by_member: bool) -> Select[Any]:
    """Memberships (of :member, or in :holders), open or ended, in force at some moment of
    [:since, :until]."""
    c = t.access_holders.c
    if by_member:
        key = c.member == bindparam("member")
    else:
        key = c.holder.in_(bindparam("holders", expanding=True))
    bound = c.to_at > bindparam("since") if ended else c.to_position.is_(None)
    return select(t.access_holders).where(key, bound, _unindexed(c.from_at) <= bindparam("until"))


def _holder(column: Any) -> ColumnElement[bool]:
    """`column` names a team or a workspace (ranges, so that an index can serve them)."""
    return or_(
        and_(column >= "team:", column < "team;"),
        and_(column >= "workspace:", column < "workspace;"),
    )


def _unindexed(column: Any) -> Any:
    return func.coalesce(column, "")


def _filters(table: Table, repo: str | None, subject: str | None) -> list[ColumnElement[bool]]:
    where = []
    if repo is not None:
        where.append(table.c.repo == repo)
    if subject is not None:
        where.append(table.c.subject == subject)
    return where
