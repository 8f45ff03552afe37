"""Replay: the read models as they stood at a moment, rebuilt from the event log into a scratch
store, and the access then in force read from them. It answers `access_report` the slow way,
independently of the temporal access view, which must agree with it.

"As of T" is the log up to (not including) its first published event that occurred after T: the
state the store was really in. Events bearing a time earlier than an event stored before them
(clocks that disagree) count from that earlier-stored event's time, as in the temporal view."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from domain.event_log import NotificationLog, read_batch
from projections import access, audit, directory
from projections import schema as t
from projections.audit import utc_text
from projections.results import GONE
from projections.runner import Projector
from projections.store import Tracking, ViewStore, read_tracking, write_tracking

# The views a replay rebuilds: all but the temporal one, which is what it checks.
REPLAY_PROJECTORS: tuple[Projector, ...] = (
    directory.apply_batch,
    access.apply_batch,
    audit.apply_batch,
)


class Replay:
    """Feeds `store` (empty) from the log, moment by moment: `until(T)` applies every event up
    to the first one after T; a later `until` goes on from there."""

    def __init__(
        self,
        recorder: NotificationLog,
        store: ViewStore,
        *,
        batch_size: int = 1000,
        projectors: Sequence[Projector] = REPLAY_PROJECTORS,
    ) -> None:
        store.create_tables()
        if store.position() != 0:
            raise ValueError("a replay needs an empty view store")
        self._recorder = recorder
        self._store = store
        self._batch_size = batch_size
        self._projectors = tuple(projectors)
        self._moment = ""
        self.position = 0  # the last position applied
        self.events = 0  # published events applied
        self.last_occurred_at: str | None = None

    def until(self, moment: datetime, progress: Callable[[int], None] | None = None) -> int:
        """Apply the log up to its first event after `moment`; return the position reached.
        `progress` is told each position reached, batch by batch."""
        limit = utc_text(moment)
        if limit < self._moment:
            raise ValueError("a replay only goes forward in time")
        self._moment = limit
        while True:
            applied, stopped = self._batch(limit)
            if progress is not None:
                progress(self.position)
            if stopped or applied == 0:
                return self.position

    def _batch(self, limit: str) -> tuple[int, bool]:
        """(notifications applied, whether an event after `limit` was met)."""
        with self._store.write() as conn:
            before = read_tracking(conn, lock=True)
            batch = read_batch(
                self._recorder,
                before.position,
                before.hash,
                self._batch_size,
                until=lambda body: bool(body["occurred_at"] > limit),
            )
            for project in self._projectors:
                project(conn, batch.events)
            after = Tracking(batch.position, batch.hash)
            if after != before:
                write_tracking(conn, before, after)
        if batch.events:
            self.events += len(batch.events)
            self.last_occurred_at = batch.events[-1].body["occurred_at"]
        self.position = after.position
        return batch.read, batch.stopped


def access_in_force(
    conn: Connection,
    repo: str | None = None,
    subject: str | None = None,
    at: datetime | None = None,
) -> list[dict[str, Any]]:
    """`access_report`'s rows from the views as they stand, at `at` (the moment they were
    replayed to; None: now), by the rules of access stated independently of the temporal view
    (which keeps them over time, and whose open rows answer `check_access`; the tests hold the
    two to each other):

    - a subject (user, team, live workspace) holds its own grant (`via` `direct`);
    - a member of a team holds the team's grant (`via` `team:<name>`);
    - a live application `app:<cluster>:<workspace>:<name>` holds its live workspace's grant
      (`via` `workspace:<cluster>:<name>`);
    - a repo being deleted, or deleted, grants nothing, nor does a workspace being deleted;
    - a grant allows nothing from its deadline on (`expires_at`), recorded as expired or not."""
    moment = utc_text(at or datetime.now(UTC))
    deadlines = {
        (row.repo, row.subject): row.expires_at for row in conn.execute(select(t.grant_deadlines))
    }
    live_workspaces = set(
        conn.execute(select(t.workspaces.c.fqn).where(t.workspaces.c.status.not_in(GONE))).scalars()
    )
    members: dict[str, list[str]] = defaultdict(list)
    for team, user in conn.execute(select(t.team_members.c.team, t.team_members.c.user)):
        members[f"team:{team}"].append(f"user:{user}")
    for workspace, fqn in conn.execute(select(t.applications.c.workspace, t.applications.c.fqn)):
        members[f"workspace:{workspace}"].append(f"app:{fqn}")
    statement = select(t.grants).join(t.ml_repos, t.ml_repos.c.name == t.grants.c.repo)
    statement = statement.where(t.ml_repos.c.status.not_in(GONE))
    if repo is not None:
        statement = statement.where(t.grants.c.repo == repo)
    rows = []
    for grant in conn.execute(statement):
        holder = grant.subject
        deadline = deadlines.get((grant.repo, holder))
        if deadline is not None and deadline <= moment:
            continue  # past its deadline
        if holder.startswith("workspace:") and holder.partition(":")[2] not in live_workspaces:
            continue  # a workspace being deleted grants nothing
        given = {
            "role": grant.role,
            "granted_at": grant.granted_at,
            "granted_by": grant.granted_by,
            "reason": grant.reason,
        }
        rows.append({"repo": grant.repo, "subject": holder, **given, "via": t.DIRECT})
        rows += [
            {"repo": grant.repo, "subject": member, **given, "via": holder}
            for member in members[holder]
        ]
    if subject is not None:
        rows = [row for row in rows if row["subject"] == subject]
    rows.sort(key=lambda row: (row["repo"], row["subject"], row["via"]))
    return rows
