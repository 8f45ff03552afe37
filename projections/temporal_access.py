"""The temporal access view: every way a subject held a role on an ML repo, as an interval in
time with who began and ended it and why. `access_report` (as of a moment) and `access_changes`
(between two moments) are answered from it, by indexed range queries, never by replaying the log.

Ways to hold a role (the `via` of a row), the rules of `projections.effective_access` over time:
- `direct`: the subject's own grant (a user, a team or a workspace);
- `team:<name>`: a member of a team holding a grant, while both the membership and the team's
  grant last;
- `workspace:<cluster>:<name>`: a live application of a workspace holding a grant, while both
  last. A workspace's grants end when its deletion is asked for (the domain then revokes them
  too), a repo's when it is deleted.

Time: a row begins and ends at the *log clock* of the event that caused it, the latest
`occurred_at` of the published events up to and including it (kept in `view_access_clock`). That
is the event's own time unless an event stored before it bears a later one (two command
services' clocks disagree), and it makes "as of T" mean exactly "the log replayed up to its
first event after T"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, insert, select, text, update

from domain.event_log import Published
from projections import schema as t
from projections.audit import utc_text_of
from projections.effective_access import DIRECT
from projections.store import Raw

Body = dict[str, Any]


@dataclass(frozen=True)
class _Change:
    """The event that begins or ends rows, as the rows record it."""

    position: int
    at: str  # the log clock
    occurred_at: str  # the event's own time, as published
    event: str
    actor: str
    reason: str | None

    def ending(self, how: str) -> dict[str, Any]:
        return {
            "to_at": self.at,
            "to_position": self.position,
            "end_change": how,
            "end_event": self.event,
            "end_actor": self.actor,
            "end_reason": self.reason,
        }


_Handler = Callable[[Connection, Body, _Change], None]
_HANDLERS: dict[str, _Handler] = {}


def _on(*types: str) -> Callable[[_Handler], _Handler]:
    def register(handler: _Handler) -> _Handler:
        for type_ in types:
            _HANDLERS[type_] = handler
        return handler

    return register


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """Apply `events` in log order. The clock is read once and written once per batch."""
    if not events:
        return
    clock = _READ_CLOCK.run(conn, {})
    started = latest = clock[0][0] if clock else None
    for body, _ in events:
        # Every event moves the clock, whether it concerns access or not.
        own = utc_text_of(body["occurred_at"])
        if latest is None or own > latest:
            latest = own
        handler = _HANDLERS.get(body["type"])
        if handler is None:
            continue
        reason = body["data"].get("reason")
        change = _Change(
            position=body["position"],
            at=latest,
            occurred_at=body["occurred_at"],
            event=body["type"],
            actor=body["actor"],
            reason=reason if isinstance(reason, str) else None,
        )
        handler(conn, body, change)
    if started is None:
        _START_CLOCK.run(conn, {"name": "log", "at": latest})
    elif latest != started:
        _MOVE_CLOCK.run(conn, {"at": latest})


# --- statements ---------------------------------------------------------------------------
# Built once, run on the driver's cursor (`Raw`): the view runs several for each event.
# Parameters of WHERE clauses are named `w_…`; the other keys of an UPDATE's parameters are
# the columns it sets.

_open = t.access_open.c
_holders = t.access_holders.c
_ENDING = ("to_at", "to_position", "end_change", "end_event", "end_actor", "end_reason")
_OPEN_COLUMNS = tuple(column.name for column in t.access_open.columns)


class _Ending:
    """Ends the open rows a condition selects: copies them, whole and with their end, to the
    history table, then deletes them (two statements, set-based, whatever their number)."""

    def __init__(self, *where: ColumnElement[bool]) -> None:
        # Typed, so that PostgreSQL knows what the selected parameters are.
        ends = [bindparam(f"e_{name}", type_=t.access_ended.c[name].type) for name in _ENDING]
        self._copy = Raw(
            insert(t.access_ended).from_select(
                [*_OPEN_COLUMNS, *_ENDING],
                select(*(_open[name] for name in _OPEN_COLUMNS), *ends).where(*where),
            )
        )
        self._delete = Raw(delete(t.access_open).where(*where))

    def run(self, conn: Connection, where: dict[str, Any], ending: dict[str, Any]) -> None:
        self._copy.run(conn, {**where, **{f"e_{k}": v for k, v in ending.items()}})
        self._delete.run(conn, where)


_clock = t.access_clock.c
_READ_CLOCK = Raw(select(_clock.at).where(_clock.name == "log"))
_START_CLOCK = Raw(insert(t.access_clock), ("name", "at"))
_MOVE_CLOCK = Raw(update(t.access_clock).where(_clock.name == "log"), ("at",))
_KEY = (
    _open.subject == bindparam("w_subject"),
    _open.via == bindparam("w_via"),
    _open.repo == bindparam("w_repo"),
)
# The open row of (repo, subject, via), if any. A SELECT first: most grants are new, and a
# SELECT that finds nothing costs much less than statements that end nothing.
_OPEN_ROW = Raw(select(_open.role).where(*_KEY))
_END_ROW = _Ending(*_KEY)
_INSERT_ROW = Raw(insert(t.access_open), _OPEN_COLUMNS)
# The rows that exist because of a subject's grants, its own and its holders', on a repo or on
# all: two statements each rather than an OR, so that each uses an index.
_END_OWN_ON_REPO = _Ending(
    _open.subject == bindparam("w_subject"), _open.via == DIRECT, _open.repo == bindparam("w_repo")
)
_END_HOLDERS_ON_REPO = _Ending(
    _open.via == bindparam("w_subject"), _open.repo == bindparam("w_repo")
)
_END_OWN = _Ending(_open.subject == bindparam("w_subject"), _open.via == DIRECT)
_END_HOLDERS = _Ending(_open.via == bindparam("w_subject"))
_END_ON_REPO = _Ending(_open.repo == bindparam("w_repo"))
_END_HOLDING = _Ending(_open.subject == bindparam("w_subject"), _open.via == bindparam("w_via"))
_GRANTS_OF = Raw(
    select(_open.repo, _open.role, _open.granted_at, _open.granted_by, _open.reason).where(
        _open.subject == bindparam("w_subject"), _open.via == DIRECT
    )
)

_holder_open = text(t.OPEN)  # as the partial index of open holders says it
_MEMBERSHIP = Raw(
    select(_holders.member).where(
        _holders.holder == bindparam("w_holder"),
        _holders.member == bindparam("w_member"),
        _holder_open,
    )
)
_MEMBERS = Raw(
    select(_holders.member)
    .where(_holders.holder == bindparam("w_holder"), _holder_open)
    .order_by(_holders.member)
)
_INSERT_HOLDER = Raw(
    insert(t.access_holders), ("holder", "member", "from_position", "from_at", "added_by")
)
_END_HOLDER = Raw(
    update(t.access_holders).where(
        _holders.holder == bindparam("w_holder"),
        _holders.member == bindparam("w_member"),
        _holder_open,
    ),
    ("to_at", "to_position", "removed_by"),
)


# --- grants -------------------------------------------------------------------------------


@_on("ml_repo.access_granted")
def _granted(conn: Connection, body: Body, change: _Change) -> None:
    repo, subject, role = body["fqn"], body["data"]["subject"], body["data"]["role"]
    # As `repo_access` shows it: the time the grant event bears.
    grant = {"granted_at": change.occurred_at, "granted_by": change.actor, "reason": change.reason}
    _begin(conn, change, grant, repo, subject, DIRECT, role)
    # Those who hold this subject's grants (a team's members, a workspace's applications).
    for member in _members(conn, subject):
        _begin(conn, change, grant, repo, member, subject, role)


@_on("ml_repo.access_revoked")
def _revoked(conn: Connection, body: Body, change: _Change) -> None:
    where = {"w_repo": body["fqn"], "w_subject": body["data"]["subject"]}
    _end(conn, _END_OWN_ON_REPO, where, change)
    _end(conn, _END_HOLDERS_ON_REPO, where, change)


@_on("ml_repo.deletion_requested", "ml_repo.recreated")
def _repo_gone(conn: Connection, body: Body, change: _Change) -> None:
    # The domain revokes every grant before asking for deletion: this only makes sure.
    _end(conn, _END_ON_REPO, {"w_repo": body["fqn"]}, change)


@_on("workspace.deletion_requested")
def _workspace_gone(conn: Connection, body: Body, change: _Change) -> None:
    # A workspace being deleted grants nothing from this moment; the domain's revokes follow.
    ended = replace(change, reason=f"workspace {body['fqn']} deleted")
    where = {"w_subject": f"workspace:{body['fqn']}"}
    _end(conn, _END_OWN, where, ended)
    _end(conn, _END_HOLDERS, where, ended)


# --- holders of grants: team members, applications ----------------------------------------


@_on("team.created")
def _team_created(conn: Connection, body: Body, change: _Change) -> None:
    for user in dict.fromkeys(body["data"]["members"]):
        _join(conn, change, f"team:{body['fqn']}", f"user:{user}")


@_on("team.member_added")
def _member_added(conn: Connection, body: Body, change: _Change) -> None:
    _join(conn, change, f"team:{body['fqn']}", f"user:{body['data']['user']}")


@_on("team.member_removed")
def _member_removed(conn: Connection, body: Body, change: _Change) -> None:
    _leave(conn, change, f"team:{body['fqn']}", f"user:{body['data']['user']}")


@_on("application.registered", "application.reregistered")
def _application_registered(conn: Connection, body: Body, change: _Change) -> None:
    workspace = body["fqn"].rpartition(":")[0]
    _join(conn, change, f"workspace:{workspace}", f"app:{body['fqn']}")


@_on("application.removed")
def _application_removed(conn: Connection, body: Body, change: _Change) -> None:
    workspace = body["fqn"].rpartition(":")[0]
    _leave(conn, change, f"workspace:{workspace}", f"app:{body['fqn']}")


def _join(conn: Connection, change: _Change, holder: str, member: str) -> None:
    """`member` holds `holder`'s grants from now: one row per grant `holder` has."""
    if _MEMBERSHIP.run(conn, {"w_holder": holder, "w_member": member}):
        return
    _INSERT_HOLDER.run(
        conn,
        {
            "holder": holder,
            "member": member,
            "from_position": change.position,
            "from_at": change.at,
            "added_by": change.actor,
        },
    )
    for repo, role, granted_at, granted_by, reason in _GRANTS_OF.run(conn, {"w_subject": holder}):
        given = {"granted_at": granted_at, "granted_by": granted_by, "reason": reason}
        _begin(conn, change, given, repo, member, holder, role)


def _leave(conn: Connection, change: _Change, holder: str, member: str) -> None:
    ended = {"to_at": change.at, "to_position": change.position, "removed_by": change.actor}
    _END_HOLDER.run(conn, {"w_holder": holder, "w_member": member, **ended})
    _end(conn, _END_HOLDING, {"w_subject": member, "w_via": holder}, change)


def _members(conn: Connection, holder: str) -> list[str]:
    if not holder.startswith(("team:", "workspace:")):
        return []
    return [member for (member,) in _MEMBERS.run(conn, {"w_holder": holder})]


# --- rows ---------------------------------------------------------------------------------


def _begin(
    conn: Connection,
    change: _Change,
    grant: dict[str, Any],
    repo: str,
    subject: str,
    via: str,
    role: str,
) -> None:
    """A row for (repo, subject, via) from now; an open one is ended as `changed`."""
    key = {"w_repo": repo, "w_subject": subject, "w_via": via}
    found = _OPEN_ROW.run(conn, key)
    previous_role = None
    if found:
        ((previous_role,),) = found
        _END_ROW.run(conn, key, change.ending("changed"))
    _INSERT_ROW.run(
        conn,
        {
            "repo": repo,
            "subject": subject,
            "via": via,
            "from_position": change.position,
            "role": role,
            "from_at": change.at,
            **grant,
            "start_change": "granted" if previous_role is None else "changed",
            "start_event": change.event,
            "start_actor": change.actor,
            "start_reason": change.reason,
            "previous_role": previous_role,
        },
    )


def _end(conn: Connection, ending: _Ending, where: dict[str, Any], change: _Change) -> None:
    ending.run(conn, where, change.ending("revoked"))
