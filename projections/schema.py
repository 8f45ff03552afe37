"""The read models' tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Every table is named `view_…` so that the views can share a database with the event store.
Rows are keyed by natural names (FQNs), which is what every query asks by."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

# A log position. SQLite's INTEGER is 64 bits already; only `INTEGER PRIMARY KEY` (not
# BIGINT) makes a column the table's rowid.
_POSITION = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData()

# Where the views stand in the event log: the last position applied (internal notifications
# included) and the hash of the last published event, so the audit chain continues exactly.
tracking = Table(
    "view_tracking",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

environments = Table(
    "view_environments",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("is_production", Boolean, nullable=False),
    Column("optimize_for", String(32), nullable=False),
    Column("color", String(7), nullable=True),
)

clusters = Table(
    "view_clusters",
    metadata,
    Column("name", String(35), primary_key=True),
    Column("region", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("labels", JSON, nullable=False),
)

# The environments a cluster offers, in the order they were given or added.
cluster_environments = Table(
    "view_cluster_environments",
    metadata,
    Column("cluster", String(35), primary_key=True),
    Column("environment", String(63), primary_key=True),
    Column("ordinal", Integer, nullable=False),
    Index("ix_view_cluster_environments_environment", "environment"),
)

# Workspaces stay after deletion (status `deleting`, then `deleted`) so a client can watch the
# namespace go; a recreation overwrites the row.
workspaces = Table(
    "view_workspaces",
    metadata,
    Column("fqn", String(80), primary_key=True),
    Column("cluster", String(35), nullable=False),
    Column("name", String(32), nullable=False),
    Column("environment", String(63), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Index("ix_view_workspaces_cluster", "cluster"),
    Index("ix_view_workspaces_environment", "environment"),
)

# Live applications only.
applications = Table(
    "view_applications",
    metadata,
    Column("fqn", String(150), primary_key=True),
    Column("workspace", String(80), nullable=False),
    Column("name", String(63), nullable=False),
    Index("ix_view_applications_workspace", "workspace"),
)

storage_integrations = Table(
    "view_storage_integrations",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("storage_root", String(1024), nullable=False),
    Column("region", String(64), nullable=True),
)

ml_repos = Table(
    "view_ml_repos",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("storage_integration", String(63), nullable=False),
    Column("location", String(2048), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
)

# Why a workspace's namespace or a repo's storage failed, while it is failed (the worker's
# report). A table of its own, so that a view store made before it gains it on start.
failures = Table(
    "view_failures",
    metadata,
    Column("kind", String(16), primary_key=True),  # "workspace" or "ml_repo"
    Column("name", String(100), primary_key=True),
    Column("detail", Text, nullable=False),
)

teams = Table(
    "view_teams",
    metadata,
    Column("name", String(63), primary_key=True),
)

team_members = Table(
    "view_team_members",
    metadata,
    Column("team", String(63), primary_key=True),
    Column("user", String(254), primary_key=True),
    Index("ix_view_team_members_user", "user"),
)

# Direct grants in force: one role per (repo, subject).
grants = Table(
    "view_grants",
    metadata,
    Column("repo", String(100), primary_key=True),
    Column("subject", String(300), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("granted_by", String(300), nullable=False),
    Column("granted_at", String(40), nullable=False),
    Column("reason", Text, nullable=True),
    Index("ix_view_grants_subject", "subject"),
)

# The deadlines of direct grants in force that have one (issue 15): a table of its own, so that
# a view store made before it gains it on start (the events before it had none).
grant_deadlines = Table(
    "view_grant_deadlines",
    metadata,
    Column("repo", String(100), primary_key=True),
    Column("subject", String(300), primary_key=True),
    Column("expires_at", String(32), nullable=False),
)

# A repo's access policy, once set (issue 15); a repo without a row has the default one.
repo_access_policies = Table(
    "view_repo_access_policies",
    metadata,
    Column("repo", String(100), primary_key=True),
    Column("approvals", Integer, nullable=False),
    Column("max_duration", String(16), nullable=True),
)

# Who manages a direct grant in force (`apply`), for grants that have a manager. A table of its
# own, so that a view store made before it gains it on start: the events before it had none.
grant_managers = Table(
    "view_grant_managers",
    metadata,
    Column("repo", String(100), primary_key=True),
    Column("subject", String(300), primary_key=True),
    Column("managed_by", String(63), nullable=False),
)

# --- access governance (issue 15) ---------------------------------------------------------

# How many approvals each environment asks for a grant of editor or admin to its workspaces.
# A table of its own, so that a view store made before it gains it on start (no row: 0).
environment_approvals = Table(
    "view_environment_approvals",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("access_approvals", Integer, nullable=False),
)

# Access requests, each as it stands (`list_access_requests`, `get_access_request`): times are
# fixed-width UTC text; `approvals` the list of {approver, at, comment} in order.
access_requests = Table(
    "view_access_requests",
    metadata,
    Column("request", String(36), primary_key=True),
    Column("repo", String(100), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("role", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("requester", String(300), nullable=False),
    Column("status", String(16), nullable=False),
    Column("opened_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    Column("duration_seconds", BigInteger, nullable=True),
    Column("max_duration_seconds", BigInteger, nullable=True),
    Column("approvals_needed", Integer, nullable=False),
    Column("approvals", JSON, nullable=False),
    # Who closed it (the last approver, the denier, the requester; the system when expired),
    # when and why; and the deadline of the grant its last approval gave.
    Column("decided_by", String(300), nullable=True),
    Column("decided_at", String(32), nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("grant_expires_at", String(32), nullable=True),
    Column("position", BigInteger, nullable=False),
    Index("ix_view_access_requests_status", "status", "request"),
    Index("ix_view_access_requests_repo", "repo", "request"),
)

# Every published event body (DESIGN §4) with its place in the hash chain.
audit_events = Table(
    "view_audit_events",
    metadata,
    # On SQLite an INTEGER primary key is the rowid itself: no second index to write.
    Column("position", _POSITION, primary_key=True, autoincrement=False),
    # UTC, fixed width (`2026-11-29T11:27:36.027293Z`): compares as text in both dialects.
    Column("occurred_at", String(32), nullable=False),
    Column("actor", String(300), nullable=False),
    Column("fqn", String(300), nullable=False),
    Column("type", String(100), nullable=False),
    # The body as the relay publishes it (the canonical JSON of the other fields, then
    # `prev_hash` and `hash`) less its end, `chain_suffix`, rebuilt from the two hashes below
    # (`projections.audit.body_of`): 32 bytes each here, not 64 hex characters twice over
    # (in the body and as columns of their own), which was a fifth of the view.
    Column("body", Text, nullable=False),
    Column("prev_digest", LargeBinary(32), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Index("ix_view_audit_events_occurred_at", "occurred_at"),
    Index("ix_view_audit_events_actor", "actor", "position"),
    Index("ix_view_audit_events_fqn", "fqn", "position"),
    Index("ix_view_audit_events_type", "type", "position"),
)

# --- the temporal access view (projections.temporal_access) --------------------------------
# Times are the log clock of the event that began or ended a row (fixed-width UTC text, like
# `occurred_at` above); an interval is in force at T when from_at <= T < to_at (an open row:
# still in force).

# Every way a subject held a role on a repo, as an interval: `via` is `direct`, `team:<name>`
# (a member of a team with a grant) or `workspace:<cluster>:<name>` (a live application of a
# workspace with a grant). A role change ends one row and begins the next at the same position.
# The holders' open rows have a partial index of their own, as the statements say it.
OPEN = "to_position IS NULL"
DIRECT = "direct"  # the `via` of a subject's own grant
ENDED = "to_at IS NOT NULL"  # implied by any `to_at > ?`, which is how ended rows are searched


def _columns(*, ended: bool) -> list[Column[Any]]:
    """The columns of an interval; `ended`: those of its end too."""
    columns: list[Column[Any]] = [
        Column("repo", String(100), nullable=False),
        Column("subject", String(300), nullable=False),
        Column("via", String(300), nullable=False),
        Column("from_position", BigInteger, nullable=False),
        Column("role", String(16), nullable=False),
        Column("from_at", String(32), nullable=False),
        # The grant on the repo this access comes from (to the team or workspace, when not
        # direct).
        Column("granted_at", String(32), nullable=False),
        Column("granted_by", String(300), nullable=False),
        Column("reason", Text, nullable=True),
        # What began the row: `granted` or `changed` (a new role replacing `previous_role`).
        Column("start_change", String(16), nullable=False),
        Column("start_event", String(100), nullable=False),
        Column("start_actor", String(300), nullable=False),
        Column("start_reason", Text, nullable=True),
        Column("previous_role", String(16), nullable=True),
        # The grant's deadline (issue 15): the row is in force until the earlier of its end and
        # this moment, whether or not the expiry event has come (an ended row's `to_at` is
        # never past it).
        Column("expires_at", String(32), nullable=True),
    ]
    if ended:
        columns += [
            Column("to_at", String(32), nullable=False),
            Column("to_position", BigInteger, nullable=False),
            # What ended it: `revoked`, or `changed` (the next row, at the same position,
            # says how).
            Column("end_change", String(16), nullable=False),
            Column("end_event", String(100), nullable=False),
            Column("end_actor", String(300), nullable=False),
            Column("end_reason", Text, nullable=True),
        ]
    return columns


# Rows in force and rows ended are two tables (issue 17): what is in force (a key's current
# row; a subject's, a holder's or a repo's current rows) is looked up in a table of current rows
# only, small and hot, whatever the history holds; an ended row is written once, whole, at
# the end of the history table (never updated in place: ending rows in a table of every row
# ever rewrote pages all over it, and each lookup of current rows walked its key's history).

# Open rows: at most one per (subject, via, repo).
access_open = Table(
    "view_access_open",
    metadata,
    *_columns(ended=False),
    PrimaryKeyConstraint("subject", "via", "repo", name="pk_view_access_open"),
    Index("ix_view_access_open_via", "via", "repo"),
    Index("ix_view_access_open_repo", "repo", "from_at"),
    Index("ix_view_access_open_from", "from_at"),
    # On SQLite the rows are stored in their key's B-tree: every row is inserted and deleted
    # once (a member joining a team with 25 grants begins 25), one B-tree fewer to write.
    sqlite_with_rowid=False,
)

# Ended *direct* rows (`via` = `direct`), in the order they ended; searched by when they ended,
# from a lower bound, by repo, by subject or over all. (No index by when they began: a row begun
# after T ended after T, so "begun in a window" is searched as "ended since its start" too.)
# The ended rows of a team's members and a workspace's applications are not stored: each is
# the overlap of a direct row of the team or workspace with a membership in
# `view_access_holders`, and is computed so when asked (`projections.access_history`). Stored,
# they were nine rows in ten of this table and most of the views' bytes (a member joining a
# team with 25 grants wrote 25 rows).
# No primary key: rows are only ever appended and searched by the indexes below; a unique
# index of (to_position, repo, subject, via) was a fifth of the table's bytes, read by nothing.
access_ended = Table(
    "view_access_ended",
    metadata,
    *_columns(ended=True),
    Index("ix_view_access_ended_repo_to", "repo", "to_at"),
    Index("ix_view_access_ended_subject_to", "subject", "to_at"),
    Index("ix_view_access_ended_to", "to_at"),
)

# Who held a team's or a workspace's grants, when: team members (`user:<email>`) and
# applications (`app:<cluster>:<workspace>:<name>`) as intervals.
access_holders = Table(
    "view_access_holders",
    metadata,
    # Led by the position, as above: members are looked up through the open rows' index.
    Column("from_position", BigInteger, primary_key=True, autoincrement=False),
    Column("holder", String(300), primary_key=True),
    Column("member", String(300), primary_key=True),
    Column("from_at", String(32), nullable=False),
    Column("added_by", String(300), nullable=False),
    # The event that added it and its reason, and those of the one that removed it: the
    # members' rows through a holder's ended grants are derived from these intervals.
    Column("added_event", String(100), nullable=False),
    Column("added_reason", Text, nullable=True),
    Column("to_at", String(32), nullable=True),
    Column("to_position", BigInteger, nullable=True),
    Column("removed_by", String(300), nullable=True),
    Column("removed_event", String(100), nullable=True),
    Column("removed_reason", Text, nullable=True),
    # Current members of a holder, through open rows only (at most one per pair).
    Index(
        "ix_view_access_holders_open",
        "holder",
        "member",
        unique=True,
        sqlite_where=text(OPEN),
        postgresql_where=text(OPEN),
    ),
    # A member's current holders (open rows only).
    Index(
        "ix_view_access_holders_member_open",
        "member",
        sqlite_where=text(OPEN),
        postgresql_where=text(OPEN),
    ),
    # Ended memberships, by when they ended, from a lower bound: by holder and by member.
    # Partial (ended rows only), so that a lookup of open rows can only take the index above.
    Index(
        "ix_view_access_holders_holder_to",
        "holder",
        "to_at",
        sqlite_where=text(ENDED),
        postgresql_where=text(ENDED),
    ),
    Index(
        "ix_view_access_holders_member_to",
        "member",
        "to_at",
        sqlite_where=text(ENDED),
        postgresql_where=text(ENDED),
    ),
)

# The temporal view's log clock: the latest `occurred_at` of the events applied so far (one
# row). Its own, so that the view depends on no other view's tables.
access_clock = Table(
    "view_access_clock",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("at", String(32), nullable=False),
)


# Indexes that only queries read, never the views as they apply events: those of the audit view,
# of ended rows, of ended memberships and of open rows by when they began. A rebuild into a fresh
# store makes its tables without them and builds each once at the end
# (`projections.runner.rebuild`): one sort instead of an insert at a random place per row, so
# that a rebuild's cost per event does not grow with the history already written.
def _read_by_queries_only(table: Table, index: Index) -> bool:
    if table is access_holders:
        return str(index.name).endswith("_to")
    if table is access_open:
        return str(index.name) == "ix_view_access_open_from"
    return True


HISTORY_INDEXES: tuple[Index, ...] = tuple(
    index
    for table in (audit_events, access_ended, access_holders, access_open)
    for index in sorted(table.indexes, key=lambda index: str(index.name))
    if _read_by_queries_only(table, index)
)


# --- access reviews (projections.access_reviews, issue 15) --------------------------------

# One row per review; times are UTC text as in the audit view.
access_reviews = Table(
    "view_access_reviews",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("environment", String(63), nullable=True),
    Column("repos", JSON, nullable=False),
    Column("due", String(32), nullable=False),
    Column("on_undecided", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # open, closed
    Column("opened_at", String(32), nullable=False),
    Column("opened_by", String(300), nullable=False),
    Column("opened_position", BigInteger, nullable=False),
    Column("opened_hash", String(64), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("closed_at", String(32), nullable=True),
    Column("closed_by", String(300), nullable=True),
    Column("closed_position", BigInteger, nullable=True),
    Column("closed_hash", String(64), nullable=True),
    Column("closed_at_due", Boolean, nullable=True),
)

# Every item of every review as snapshotted, with its decision once taken (the decision's
# event: position and chain hash, to find it in an export).
access_review_items = Table(
    "view_access_review_items",
    metadata,
    Column("review", String(63), primary_key=True),
    Column("ordinal", Integer, primary_key=True),
    Column("item", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("repo", String(100), nullable=True),
    Column("role", String(16), nullable=True),
    Column("granted_by", String(300), nullable=True),
    Column("granted_at", String(32), nullable=True),
    Column("grant_reason", Text, nullable=True),
    Column("expires_at", String(32), nullable=True),
    Column("team", String(63), nullable=True),
    Column("repos", JSON, nullable=False),
    Column("decision", String(16), nullable=True),
    Column("decided_by", String(300), nullable=True),
    Column("decided_at", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Column("automatic", Boolean, nullable=True),
    Column("outcome", Text, nullable=True),
    Column("decided_position", BigInteger, nullable=True),
    Column("decided_hash", String(64), nullable=True),
    Index("ix_view_access_review_items_item", "review", "item", unique=True),
)
