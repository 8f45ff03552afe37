"""What each query answers (DESIGN §5), one model per shape, shared by the query service (its
answers are these shapes: tests/integration/test_query_results.py) and the client (which reads
the answers into them). Light to import: pydantic and domain.names only.

They ignore fields they do not know, so that a client keeps working when the server learns to
say more."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.names import OptimizeFor, Role

# The statuses of a workspace or ML repo that is being deleted or is deleted: it grants nothing,
# is not listed among the live ones, and `tenantry apply` plans it as created again.
GONE = ("deleting", "deleted", "deletion_failed")


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Environment(_Result):
    name: str
    is_production: bool
    optimize_for: OptimizeFor
    color: str | None = None
    # Approvals a grant of editor or admin to a workspace here needs (0: granted directly).
    access_approvals: int = 0


class Cluster(_Result):
    name: str
    region: str
    provider: str
    environments: list[str]
    labels: dict[str, str] = Field(default_factory=dict)


class Workspace(_Result):
    fqn: str
    cluster: str
    name: str
    environment: str
    is_production: bool
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    status: str
    # Why the namespace failed, as the worker reported it, while `status` is `failed`.
    failure: str | None = None
    applications: list[str] = Field(default_factory=list)


class Grant(_Result):
    """A direct grant in force on a repo."""

    subject: str
    role: Role
    granted_by: str
    granted_at: datetime
    reason: str | None = None
    # Who manages it (`apply`: `apply --prune` may revoke it); None: nobody's.
    managed_by: str | None = None
    # From this moment on the grant allows nothing (None: until revoked).
    expires_at: datetime | None = None


class RepoAccessPolicy(_Result):
    """How access to a repo is given: approvals an access request needs, the longest grant."""

    approvals: int = 0
    max_duration: str | None = None


class MlRepo(_Result):
    name: str
    storage_integration: str
    location: str
    description: str
    status: str
    # Why the storage failed, as the worker reported it, while `status` is `failed`.
    failure: str | None = None
    grants: list[Grant] = Field(default_factory=list)
    access_policy: RepoAccessPolicy = Field(default_factory=RepoAccessPolicy)


class StorageIntegration(_Result):
    name: str
    provider: str
    storage_root: str
    region: str | None = None


class Team(_Result):
    name: str
    members: list[str] = Field(default_factory=list)


class Access(_Result):
    """A repo a subject may use, with the grant that decided (`direct`, `team:…`,
    `workspace:…`)."""

    repo: str
    role: Role
    via: str


class AccessCheck(_Result):
    allowed: bool
    role: Role | None = None
    via: str | None = None


class EnvironmentTags(_Result):
    environment: str
    is_production: bool
    optimize_for: OptimizeFor
    clusters: list[str]
    workspaces: list[str]
    applications: list[str]


class AuditPage(_Result):
    """Event bodies as on the stream (DESIGN §4); `next` is the `after` of the next page."""

    events: list[dict[str, Any]]
    next: int | None = None


class AccessInForce(_Result):
    """A role a subject held on a repo at the `as_of` of an access report; `via` names the
    grant it held it through (`direct`, `team:…`, `workspace:…`) where the server says."""

    repo: str
    subject: str
    role: Role
    granted_at: datetime
    granted_by: str
    reason: str | None = None
    via: str | None = None


class AccessChange(_Result):
    """A grant, a change of role or an end of access; `event` and `position` find it in the
    audit log where the server says."""

    at: datetime
    change: str
    repo: str
    subject: str
    role: Role | None = None
    previous_role: Role | None = None
    actor: str
    reason: str | None = None
    via: str | None = None
    event: str | None = None
    position: int | None = None


# --- access governance (issue 15) ---------------------------------------------------------


class AccessApproval(_Result):
    approver: str
    at: datetime
    comment: str | None = None


class AccessRequest(_Result):
    """A request for a grant and where it stands: `pending` until enough distinct approvers
    approve (`approved`: granted, until `grant_expires_at` if it has a deadline), someone
    denies it, its requester cancels it, or `expires_at` passes (`expired`)."""

    request: str
    repo: str
    subject: str
    role: Role
    reason: str
    requester: str
    status: str
    opened_at: datetime
    expires_at: datetime
    duration_seconds: int | None = None
    max_duration_seconds: int | None = None
    approvals_needed: int
    approvals: list[AccessApproval] = Field(default_factory=list)
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    grant_expires_at: datetime | None = None
    # The position of the last event about it.
    position: int


# --- access reviews (issue 15) ------------------------------------------------------------


class AccessReviewProgress(_Result):
    items: int
    decided: int
    undecided: int
    kept: int
    revoked: int


class AccessReview(_Result):
    """A review: its scope, when it is due, what undecided items get, its progress, and the
    positions and chain hashes of its opening and closing events (what an export covers)."""

    name: str
    scope: str
    environment: str | None = None
    repos: list[str] = Field(default_factory=list)
    due: datetime
    on_undecided: str
    status: str
    opened_at: datetime
    opened_by: str
    opened_position: int
    opened_hash: str
    closed_at: datetime | None = None
    closed_by: str | None = None
    closed_position: int | None = None
    closed_hash: str | None = None
    closed_at_due: bool | None = None
    progress: AccessReviewProgress


class AccessReviewItem(_Result):
    """An item of a review as snapshotted (a grant, or a team membership), and its decision
    once taken: who, when, why, whether the system took it (`automatic`), what it did
    (`outcome`), and the decision event's position and chain hash."""

    review: str
    item: str
    ordinal: int
    kind: str
    subject: str
    repo: str | None = None
    role: Role | None = None
    granted_by: str | None = None
    granted_at: datetime | None = None
    grant_reason: str | None = None
    expires_at: datetime | None = None
    team: str | None = None
    repos: list[str] = Field(default_factory=list)
    decision: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    automatic: bool | None = None
    outcome: str | None = None
    decided_position: int | None = None
    decided_hash: str | None = None
