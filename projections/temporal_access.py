"""The temporal access view (one file past 400 lines: its handlers and the batch writing their
rows share private statements): every way a subject held a role on an ML repo, as an interval in
time with who began and ended it and why. `access_report` (as of a moment) and `access_changes`
(between two moments) are answered from it (`projections.access_history`), by indexed range
queries, never by replaying the log.

Stored: every row in force (`view_access_open`), the ended direct rows (`view_access_ended`) and
every membership of a team or workspace (`view_access_holders`). A member's row through a team or
workspace is begun and ended here like any other, but once ended it is not stored: it is the
overlap of its holder's direct row with the membership, derived when asked.

Ways to hold a role (the `via` of a row), the rules of `projections.replay.access_in_force` over
time (its open rows are today's access, `projections.current_access`):
- `direct`: the subject's own grant (a user, a team or a workspace);
- `team:<name>`: a member of a team holding a grant, while both the membership and the team's
  grant last;
- `workspace:<cluster>:<name>`: a live application of a workspace holding a grant, while both
  last. A workspace's grants end when its deletion is asked for (the domain then revokes them
  too), a repo's when it is deleted.

Deadlines (issue 15): a row of a grant with a deadline carries it (`expires_at`, the members'
rows through it too) and is in force until the earlier of its end and its deadline: it is ended
AT the deadline (`expired`) by whatever event ends it later — `ml_repo.access_expired`, a
deletion — never at that event's time, and until then the readers compare with `expires_at`.

Time: a row begins and ends at the *log clock* of the event that caused it, the latest
`occurred_at` of the published events up to and including it (kept in `view_access_clock`). That
is the event's own time unless an event stored before it bears a later one (two command
services' clocks disagree), and it makes "as of T" mean exactly "the log replayed up to its
first event after T"."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, text, update

from domain.event_log import Published
from projections import schema as t
from projections.access import new_grant
from projections.audit import utc_text_of
from projections.event_handlers import EventHandlers
from projections.schema import DIRECT
from projections.store import Raw, Writes

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


_Handler = Callable[["_Batch", Body, _Change], None]
_HANDLERS: EventHandlers[_Handler] = EventHandlers()
_on = _HANDLERS.on


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """Apply `events` in log order. The clock is read once and written once per batch; the
    rows are built in memory for the whole batch (`_Batch`) and written at its end, each table
    with one driver call per kind of statement."""
    if not events:
        return
    batch = _Batch(conn, events)
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
        handler(batch, body, change)
    batch.flush()
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
    """The open rows a condition selects, to be ended: `columns` maps a column to the name of
    a parameter (`w_…`) or to a literal. Reads the stored ones whole (`_Batch.end` writes them
    to the history table and deletes them at the batch's end) and matches the batch's own."""

    def __init__(self, **columns: str) -> None:
        self.columns = columns
        where = [
            _open[name] == (bindparam(value) if value.startswith("w_") else value)
            for name, value in columns.items()
        ]
        self.stored = Raw(select(*(_open[name] for name in _OPEN_COLUMNS)).where(*where))

    def values(self, where: dict[str, Any]) -> dict[str, str]:
        """The condition as column: value."""
        return {
            name: where[value] if value.startswith("w_") else value
            for name, value in self.columns.items()
        }


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
_END_ROW = _Ending(subject="w_subject", via="w_via", repo="w_repo")
_INSERT_ROW = Raw(insert(t.access_open), _OPEN_COLUMNS)
_DELETE_ROW = Raw(delete(t.access_open).where(*_KEY))
_INSERT_ENDED = Raw(insert(t.access_ended), (*_OPEN_COLUMNS, *_ENDING))
# The rows that exist because of a subject's grants, its own and its holders', on a repo or on
# all: two conditions each rather than an OR, so that each uses an index.
_END_OWN_ON_REPO = _Ending(subject="w_subject", via=DIRECT, repo="w_repo")
_END_HOLDERS_ON_REPO = _Ending(via="w_subject", repo="w_repo")
_END_OWN = _Ending(subject="w_subject", via=DIRECT)
_END_HOLDERS = _Ending(via="w_subject")
_END_ON_REPO = _Ending(repo="w_repo")
_END_HOLDING = _Ending(subject="w_subject", via="w_via")
_GRANTS_OF = _Ending(subject="w_subject", via=DIRECT)  # (read, not ended)

_holder_open = text(t.OPEN)  # as the partial index of open holders says it
# The current members of the holders a batch names, read once at its start, up to 512 holders
# a statement (SQLite takes 999 parameters in older builds).
_CHUNK = 512


@functools.cache
def _members_of(count: int) -> Raw:
    """The open memberships of :w_0 … :w_<count - 1> (a power of two, the last name repeated
    to fill it: ten statements to compile at most)."""
    holders: list[Any] = [bindparam(f"w_{i}") for i in range(count)]
    return Raw(
        select(_holders.holder, _holders.member).where(_holders.holder.in_(holders), _holder_open)
    )


_INSERT_HOLDER = Raw(
    insert(t.access_holders),
    ("holder", "member", "from_position", "from_at", "added_by", "added_event", "added_reason"),
)
_END_HOLDER = Raw(
    update(t.access_holders).where(
        _holders.holder == bindparam("w_holder"),
        _holders.member == bindparam("w_member"),
        _holder_open,
    ),
    ("to_at", "to_position", "removed_by", "removed_event", "removed_reason"),
)


# --- grants -------------------------------------------------------------------------------


@_on("ml_repo.access_granted")
def _granted(batch: _Batch, body: Body, change: _Change) -> None:
    repo, subject, role = body["fqn"], body["data"]["subject"], body["data"]["role"]
    # As `repo_access` shows it: the time the grant event bears.
    grant = {
        "granted_at": change.occurred_at,
        "granted_by": change.actor,
        "reason": change.reason,
        "expires_at": deadline_of(body["data"]),
    }
    # A new grant (not a new role) has no row of its subject's open to end.
    new = new_grant(body["data"])
    replaced = batch.begin(change, grant, repo, subject, DIRECT, role, fresh=new)
    # Those who hold this subject's grants (a team's members, a workspace's applications):
    # a member's row through the subject exists only while the subject's own row does, so
    # after a new grant (not a new role) there is none to look up.
    for member in batch.members(subject):
        batch.begin(change, grant, repo, member, subject, role, fresh=not replaced)


@_on("ml_repo.access_revoked")
def _revoked(batch: _Batch, body: Body, change: _Change) -> None:
    where = {"w_repo": body["fqn"], "w_subject": body["data"]["subject"]}
    batch.end(_END_OWN_ON_REPO, where, change)
    batch.end(_END_HOLDERS_ON_REPO, where, change)


@_on("ml_repo.access_expired")
def _expired(batch: _Batch, body: Body, change: _Change) -> None:
    # Ended at the deadline (`_closed`), not at this event's time.
    where = {"w_repo": body["fqn"], "w_subject": body["data"]["subject"]}
    batch.end(_END_OWN_ON_REPO, where, change, how="expired")
    batch.end(_END_HOLDERS_ON_REPO, where, change, how="expired")


def deadline_of(data: dict[str, Any]) -> str | None:
    """A grant event's deadline as fixed-width UTC text (None: none)."""
    expires_at = data.get("expires_at")
    return utc_text_of(expires_at) if isinstance(expires_at, str) else None


def _closed(row: dict[str, Any], ending: dict[str, Any]) -> dict[str, Any]:
    """`row` ended by `ending`, or at its deadline if that came first (`expired`)."""
    expires_at = row.get("expires_at")
    if expires_at is not None and expires_at <= ending["to_at"]:
        return {**row, **ending, "to_at": expires_at, "end_change": "expired"}
    return {**row, **ending}


@_on("ml_repo.deletion_requested", "ml_repo.recreated")
def _repo_gone(batch: _Batch, body: Body, change: _Change) -> None:
    # The domain revokes every grant before asking for deletion: this only makes sure.
    batch.end(_END_ON_REPO, {"w_repo": body["fqn"]}, change)


@_on("workspace.deletion_requested")
def _workspace_gone(batch: _Batch, body: Body, change: _Change) -> None:
    # A workspace being deleted grants nothing from this moment; the domain's revokes follow.
    ended = replace(change, reason=f"workspace {body['fqn']} deleted")
    where = {"w_subject": f"workspace:{body['fqn']}"}
    batch.end(_END_OWN, where, ended)
    batch.end(_END_HOLDERS, where, ended)


# --- holders of grants: team members, applications ----------------------------------------


@_on("team.created")
def _team_created(batch: _Batch, body: Body, change: _Change) -> None:
    for user in dict.fromkeys(body["data"]["members"]):
        _join(batch, change, f"team:{body['fqn']}", f"user:{user}")


@_on("team.member_added")
def _member_added(batch: _Batch, body: Body, change: _Change) -> None:
    _join(batch, change, f"team:{body['fqn']}", f"user:{body['data']['user']}")


@_on("team.member_removed")
def _member_removed(batch: _Batch, body: Body, change: _Change) -> None:
    _leave(batch, change, f"team:{body['fqn']}", f"user:{body['data']['user']}")


@_on("application.registered", "application.reregistered")
def _application_registered(batch: _Batch, body: Body, change: _Change) -> None:
    workspace = body["fqn"].rpartition(":")[0]
    _join(batch, change, f"workspace:{workspace}", f"app:{body['fqn']}")


@_on("application.removed")
def _application_removed(batch: _Batch, body: Body, change: _Change) -> None:
    workspace = body["fqn"].rpartition(":")[0]
    _leave(batch, change, f"workspace:{workspace}", f"app:{body['fqn']}")


def _join(batch: _Batch, change: _Change, holder: str, member: str) -> None:
    """`member` holds `holder`'s grants from now: one row per grant `holder` has."""
    members = batch.members_of(holder)
    if member in members:
        return
    members.add(member)
    batch.writes.add(
        _INSERT_HOLDER,
        {
            "holder": holder,
            "member": member,
            "from_position": change.position,
            "from_at": change.at,
            "added_by": change.actor,
            "added_event": change.event,
            "added_reason": change.reason,
        },
    )
    for row in batch.rows(_GRANTS_OF, {"w_subject": holder}):
        if row["expires_at"] is not None and row["expires_at"] <= change.at:
            continue  # past its deadline: nothing to hold
        given = {name: row[name] for name in ("granted_at", "granted_by", "reason", "expires_at")}
        # (No row of the member's through the holder is open: it was not a member.)
        batch.begin(change, given, row["repo"], member, holder, row["role"], fresh=True)


def _leave(batch: _Batch, change: _Change, holder: str, member: str) -> None:
    ended = {
        "to_at": change.at,
        "to_position": change.position,
        "removed_by": change.actor,
        "removed_event": change.event,
        "removed_reason": change.reason,
    }
    members = batch.members_of(holder)
    if member in members:
        members.discard(member)
        batch.writes.add(_END_HOLDER, {"w_holder": holder, "w_member": member, **ended})
    batch.end(_END_HOLDING, {"w_subject": member, "w_via": holder}, change)


def _holders_named(events: Sequence[Published]) -> set[str]:
    """The holders (teams, workspaces) whose members the handlers of `events` look at."""
    named = set()
    for body, _ in events:
        type_ = body["type"]
        if type_ == "ml_repo.access_granted":
            named.add(body["data"]["subject"])
        elif type_.startswith("team."):
            named.add(f"team:{body['fqn']}")
        elif type_.startswith("application."):
            named.add(f"workspace:{body['fqn'].rpartition(':')[0]}")
    return {holder for holder in named if _is_holder(holder)}


def _is_holder(subject: str) -> bool:
    return subject.startswith(("team:", "workspace:"))


# --- rows ---------------------------------------------------------------------------------

_Key = tuple[str, str, str]  # (subject, via, repo)


class _Batch:
    """The temporal view's rows for one batch of events, in memory until `flush`: the rows
    begun in the batch and still open, the stored open rows ended in it, the rows ended (whole,
    with their end). A lookup of open rows reads the stored ones, less those ended in the batch,
    and the batch's own; a row begun and ended within the batch never reaches the open table."""

    def __init__(self, conn: Connection, events: Sequence[Published]) -> None:
        self.conn = conn
        # The holders' memberships, written at the end; their current members, read at the
        # start for every holder the batch names and kept here as the batch changes them.
        self.writes = Writes(conn)
        self._members: dict[str, set[str]] = {}
        named = sorted(_holders_named(events))
        for start in range(0, len(named), _CHUNK):
            chunk = named[start : start + _CHUNK]
            for holder in chunk:
                self._members[holder] = set()
            count = 1 << (len(chunk) - 1).bit_length()
            names = {f"w_{i}": chunk[min(i, len(chunk) - 1)] for i in range(count)}
            for holder, member in _members_of(count).run(conn, names):
                self._members[holder].add(member)
        self._opened: dict[_Key, dict[str, Any]] = {}
        # The batch's open rows by subject, by via and by repo.
        self._by: dict[str, dict[str, set[_Key]]] = {"subject": {}, "via": {}, "repo": {}}
        self._gone: set[_Key] = set()  # stored open rows ended in this batch
        self._ended: list[dict[str, Any]] = []  # direct rows ended, whole

    def members_of(self, holder: str) -> set[str]:
        """The current members of `holder` (a team or a workspace the batch names), as the
        batch has changed them so far."""
        return self._members[holder]

    def members(self, subject: str) -> list[str]:
        """Those who hold `subject`'s grants now: a team's members, a workspace's
        applications; none for another subject."""
        return sorted(self._members[subject]) if _is_holder(subject) else []

    def begin(
        self,
        change: _Change,
        grant: dict[str, Any],
        repo: str,
        subject: str,
        via: str,
        role: str,
        *,
        fresh: bool = False,
    ) -> bool:
        """A row for (repo, subject, via) from now; an open one is ended as `changed` (True if
        there was one). `fresh`: the caller knows there is none, not to be looked up."""
        key = (subject, via, repo)
        previous_role = None
        ending = change.ending("changed")
        if key in self._opened:  # begun earlier in this batch
            earlier = self._forget(key)
            previous_role = earlier["role"]
            self._keep(_closed(earlier, ending))
        elif not fresh and key not in self._gone:
            where = {"w_subject": subject, "w_via": via, "w_repo": repo}
            for values in _END_ROW.stored.run(self.conn, where):
                stored = dict(zip(_OPEN_COLUMNS, values, strict=True))
                previous_role = stored["role"]
                self._gone.add(key)
                self._keep(_closed(stored, ending))
        row = {
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
        }
        self._opened[key] = row
        for name, value in (("subject", subject), ("via", via), ("repo", repo)):
            self._by[name].setdefault(value, set()).add(key)
        return previous_role is not None

    def rows(self, which: _Ending, where: dict[str, Any]) -> list[dict[str, Any]]:
        """The open rows `which` selects: stored (less those ended in the batch), then the
        batch's own."""
        found = []
        for values in which.stored.run(self.conn, where):
            row = dict(zip(_OPEN_COLUMNS, values, strict=True))
            if (row["subject"], row["via"], row["repo"]) not in self._gone:
                found.append(row)
        return found + [self._opened[key] for key in self._own(which, where)]

    def end(
        self, which: _Ending, where: dict[str, Any], change: _Change, how: str = "revoked"
    ) -> None:
        """End the open rows `which` selects, as `how`."""
        ending = change.ending(how)
        own = self._own(which, where)
        for values in which.stored.run(self.conn, where):
            row = dict(zip(_OPEN_COLUMNS, values, strict=True))
            key = (row["subject"], row["via"], row["repo"])
            if key not in self._gone:
                self._gone.add(key)
                self._keep(_closed(row, ending))
        for key in own:
            self._keep(_closed(self._forget(key), ending))

    def _keep(self, ended: dict[str, Any]) -> None:
        """An ended row for the history table: direct ones only (a member's row through a team
        or a workspace is derived from the holder's row and the membership when asked)."""
        if ended["via"] == DIRECT:
            self._ended.append(ended)

    def _forget(self, key: _Key) -> dict[str, Any]:
        row = self._opened.pop(key)
        for name in ("subject", "via", "repo"):
            self._by[name][row[name]].discard(key)
        return row

    def _own(self, which: _Ending, where: dict[str, Any]) -> list[_Key]:
        values = which.values(where)
        column = next(name for name in ("subject", "via", "repo") if name in values)
        return [
            key
            for key in list(self._by[column].get(values[column], ()))
            if all(self._opened[key][name] == value for name, value in values.items())
        ]

    def flush(self) -> None:
        """Write the batch: stored rows ended are deleted first (a key may open again)."""
        _DELETE_ROW.run_many(
            self.conn,
            [{"w_subject": s, "w_via": v, "w_repo": r} for s, v, r in sorted(self._gone)],
        )
        _INSERT_ENDED.run_many(self.conn, self._ended)
        _INSERT_ROW.run_many(self.conn, list(self._opened.values()))
        self.writes.flush()
