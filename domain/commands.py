"""Commands: strict, frozen pydantic models, one per `tenantry.cmd.<name>` subject."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.names import (
    Annotations,
    ClusterName,
    Color,
    Description,
    Detail,
    DnsLabel,
    Duration,
    Email,
    Labels,
    ManagedBy,
    MlRepoName,
    Moment,
    OptimizeFor,
    Provider,
    Reason,
    Region,
    Role,
    StorageProvider,
    Subject,
    WorkspaceFqn,
    WorkspaceName,
    check_storage_root,
    has_nul,
    parse_duration,
)
from domain.policies import (
    AnyUser,
    Policy,
    RepoAdmin,
    RequestApprover,
    ReviewerOf,
    System,
    TenantAdmin,
    Worker,
)

Version = Annotated[int, Field(ge=1, le=2**53)]
Namespace = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
Location = Annotated[str, Field(min_length=1, max_length=2048)]
StorageRoot = Annotated[str, Field(min_length=6, max_length=1024)]
# How many distinct approvers a grant needs (environments; repos' access policies).
AccessApprovals = Annotated[int, Field(ge=0, le=3)]


class Command(BaseModel):
    """A command: its subject's name (`wire_name`), its fields, and who may send it (`policy`:
    a tenant admin unless the command says otherwise)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    wire_name: ClassVar[str]
    policy: ClassVar[Policy] = TenantAdmin()

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        # Free text (descriptions, reasons, annotations, locations) takes anything else.
        if has_nul(self.__dict__):
            raise ValueError("strings must not contain NUL (U+0000)")
        return self


class ChangeCommand(Command):
    """A command on an existing aggregate: `expected_version` guards against lost updates."""

    expected_version: Version | None = None


class CreateEnvironment(Command):
    wire_name: ClassVar[str] = "create_environment"
    name: DnsLabel
    is_production: bool = False
    optimize_for: OptimizeFor = "cost"
    color: Color | None = None
    # Approvals a grant of editor or admin to a workspace here needs (0: granted directly).
    access_approvals: AccessApprovals = 0


class UpdateEnvironment(ChangeCommand):
    wire_name: ClassVar[str] = "update_environment"
    name: DnsLabel
    is_production: bool | None = None
    optimize_for: OptimizeFor | None = None
    color: Color | None = None
    access_approvals: AccessApprovals | None = None


class DeleteEnvironment(ChangeCommand):
    wire_name: ClassVar[str] = "delete_environment"
    name: DnsLabel


class RegisterCluster(Command):
    wire_name: ClassVar[str] = "register_cluster"
    name: ClusterName
    region: Region
    provider: Provider
    environments: Annotated[list[DnsLabel], Field(min_length=1, max_length=64)]
    labels: Labels = Field(default_factory=dict)


class AddClusterEnvironment(ChangeCommand):
    wire_name: ClassVar[str] = "add_cluster_environment"
    cluster: ClusterName
    environment: DnsLabel


class RemoveClusterEnvironment(ChangeCommand):
    wire_name: ClassVar[str] = "remove_cluster_environment"
    cluster: ClusterName
    environment: DnsLabel


class DeregisterCluster(ChangeCommand):
    wire_name: ClassVar[str] = "deregister_cluster"
    cluster: ClusterName


class Deadline(BaseModel):
    """When a grant ends: at `expires_at` (RFC 3339 with an offset, in the future by the
    command service's clock) or `duration` from when it is granted (`90m`, `12h`, `30d`);
    neither: until revoked. Giving both is a `validation_error`."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    expires_at: Moment | None = None
    duration: Duration | None = None

    @model_validator(mode="after")
    def _one_deadline(self) -> Self:
        if self.expires_at is not None and self.duration is not None:
            raise ValueError("give expires_at or duration, not both")
        return self


class RepoAccess(Deadline):
    """A grant a workspace is created with (until its deadline, if given)."""

    repo: MlRepoName
    role: Role
    managed_by: ManagedBy | None = None


class CreateWorkspace(Command):
    wire_name: ClassVar[str] = "create_workspace"
    cluster: ClusterName
    name: WorkspaceName
    environment: DnsLabel
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    ml_repo_access: Annotated[list[RepoAccess], Field(max_length=256)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_role_per_repo(self) -> CreateWorkspace:
        repos = [access.repo for access in self.ml_repo_access]
        if len(repos) != len(set(repos)):
            raise ValueError("ml_repo_access names a repo more than once")
        return self


class SetWorkspaceEnvironment(ChangeCommand):
    wire_name: ClassVar[str] = "set_workspace_environment"
    workspace: WorkspaceFqn
    environment: DnsLabel


class UpdateWorkspace(ChangeCommand):
    wire_name: ClassVar[str] = "update_workspace"
    workspace: WorkspaceFqn
    labels: Labels | None = None
    annotations: Annotations | None = None


class DeleteWorkspace(ChangeCommand):
    wire_name: ClassVar[str] = "delete_workspace"
    workspace: WorkspaceFqn
    force: bool = False


class RegisterApplication(ChangeCommand):
    wire_name: ClassVar[str] = "register_application"
    workspace: WorkspaceFqn
    name: DnsLabel


class RemoveApplication(ChangeCommand):
    wire_name: ClassVar[str] = "remove_application"
    workspace: WorkspaceFqn
    name: DnsLabel


class RegisterStorageIntegration(Command):
    wire_name: ClassVar[str] = "register_storage_integration"
    name: DnsLabel
    provider: StorageProvider
    storage_root: StorageRoot
    region: Region | None = None

    @model_validator(mode="after")
    def _root_matches_provider(self) -> RegisterStorageIntegration:
        check_storage_root(self.provider, self.storage_root)
        return self


class RemoveStorageIntegration(ChangeCommand):
    wire_name: ClassVar[str] = "remove_storage_integration"
    name: DnsLabel


class CreateMlRepo(Command):
    """Any user may create a repo (its creator becomes its admin); taking over data already at
    its location (`adopt_storage`) is a tenant admin's decision."""

    wire_name: ClassVar[str] = "create_ml_repo"
    policy: ClassVar[Policy] = AnyUser(admin_when="adopt_storage")
    name: MlRepoName
    storage_integration: DnsLabel
    description: Description = ""
    # A tenant admin's explicit take-over of what the location already holds.
    adopt_storage: bool = False


class UpdateMlRepo(ChangeCommand):
    wire_name: ClassVar[str] = "update_ml_repo"
    policy: ClassVar[Policy] = RepoAdmin("name")
    name: MlRepoName
    description: Description
    # Accepted only to refuse it clearly: the storage integration of a repo is immutable.
    storage_integration: DnsLabel | None = None


class GrantRepoAccess(ChangeCommand, Deadline):
    wire_name: ClassVar[str] = "grant_repo_access"
    policy: ClassVar[Policy] = RepoAdmin("repo")
    repo: MlRepoName
    subject: Subject
    role: Role
    reason: Reason | None = None
    # Who owns the grant from now on (`apply`); a grant without it is unmanaged.
    managed_by: ManagedBy | None = None


class AccessPolicyFields(BaseModel):
    """A repo's access policy as commands and manifests give it."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    approvals: Annotated[int, Field(ge=0, le=3)] = 0
    max_duration: Duration | None = None


class SetRepoAccessPolicy(ChangeCommand, AccessPolicyFields):
    """How access to a repo is given: `approvals` (0-3) an access request needs, and the
    longest a grant may run (`max_duration`; null: no cap)."""

    wire_name: ClassVar[str] = "set_repo_access_policy"
    policy: ClassVar[Policy] = RepoAdmin("repo")
    repo: MlRepoName


class ExpireRepoAccess(Command):
    """The scheduler's record that a grant reached its deadline (`ml_repo.access_expired`).
    Tenantry's own: not on the bus."""

    wire_name: ClassVar[str] = "expire_repo_access"
    policy: ClassVar[Policy] = System()
    repo: MlRepoName
    subject: Subject
    expires_at: datetime


class RevokeRepoAccess(ChangeCommand):
    wire_name: ClassVar[str] = "revoke_repo_access"
    policy: ClassVar[Policy] = RepoAdmin("repo")
    repo: MlRepoName
    subject: Subject
    reason: Reason | None = None


class DeleteMlRepo(ChangeCommand):
    wire_name: ClassVar[str] = "delete_ml_repo"
    policy: ClassVar[Policy] = RepoAdmin("name")
    name: MlRepoName
    delete_storage: bool = False


class CreateTeam(Command):
    wire_name: ClassVar[str] = "create_team"
    name: DnsLabel
    members: Annotated[list[Email], Field(max_length=1000)] = Field(default_factory=list)


class AddTeamMember(ChangeCommand):
    wire_name: ClassVar[str] = "add_team_member"
    team: DnsLabel
    user: Email


class RemoveTeamMember(ChangeCommand):
    wire_name: ClassVar[str] = "remove_team_member"
    team: DnsLabel
    user: Email


class RecordNamespace(ChangeCommand):
    policy: ClassVar[Policy] = Worker()
    workspace: WorkspaceFqn
    namespace: Namespace
    detail: Detail = ""


class RecordNamespaceProvisioned(RecordNamespace):
    wire_name: ClassVar[str] = "record_namespace_provisioned"


class RecordNamespaceFailed(RecordNamespace):
    wire_name: ClassVar[str] = "record_namespace_failed"


class RecordNamespaceDeleted(RecordNamespace):
    wire_name: ClassVar[str] = "record_namespace_deleted"


class RecordStorage(ChangeCommand):
    policy: ClassVar[Policy] = Worker()
    repo: MlRepoName
    location: Location
    detail: Detail = ""


class RecordStorageProvisioned(RecordStorage):
    wire_name: ClassVar[str] = "record_storage_provisioned"


class RecordStorageFailed(RecordStorage):
    wire_name: ClassVar[str] = "record_storage_failed"
    # The removal asked by delete_ml_repo failed (or was refused): accepted only then, so a
    # late report about provisioning is not taken for one.
    removal: bool = False


class RecordStorageDeleted(RecordStorage):
    wire_name: ClassVar[str] = "record_storage_deleted"


# --- access requests and approvals, break-glass grants (issue 15) -------------------------

# A reason that says something: a request, a denial and a break-glass grant must give one.
RequiredReason = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"\S")]
# The longest break-glass grant.
BREAK_GLASS_MAX = timedelta(hours=24)
# An access request's id, as `request_repo_access` answered it (its reply's `fqn`).
RequestId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]


class RequestRepoAccess(Command):
    """Ask for a grant that approvers then decide; the subject defaults to the requester."""

    wire_name: ClassVar[str] = "request_repo_access"
    policy: ClassVar[Policy] = AnyUser()
    repo: MlRepoName
    subject: Subject | None = None
    role: Role
    reason: RequiredReason
    duration: Duration | None = None


class ApproveAccessRequest(ChangeCommand):
    wire_name: ClassVar[str] = "approve_access_request"
    policy: ClassVar[Policy] = RequestApprover("request")
    request: RequestId
    comment: Reason | None = None


class DenyAccessRequest(ChangeCommand):
    wire_name: ClassVar[str] = "deny_access_request"
    policy: ClassVar[Policy] = RequestApprover("request")
    request: RequestId
    reason: RequiredReason


class CancelAccessRequest(ChangeCommand):
    """By its requester only (the request decides: any user may send it)."""

    wire_name: ClassVar[str] = "cancel_access_request"
    policy: ClassVar[Policy] = AnyUser()
    request: RequestId
    reason: Reason | None = None


class BreakGlassRepoAccess(ChangeCommand):
    """A tenant admin's emergency grant past the approvals, for at most 24 hours."""

    wire_name: ClassVar[str] = "break_glass_repo_access"
    repo: MlRepoName
    subject: Subject
    role: Role
    reason: RequiredReason
    duration: Duration

    @model_validator(mode="after")
    def _at_most_a_day(self) -> BreakGlassRepoAccess:
        if parse_duration(self.duration) > BREAK_GLASS_MAX:
            raise ValueError("a break-glass grant lasts at most 24h")
        return self


class ExpireAccessRequest(Command):
    """The scheduler's record that a pending request went unanswered past its deadline
    (`access_request.expired`). Tenantry's own: not on the bus."""

    wire_name: ClassVar[str] = "expire_access_request"
    policy: ClassVar[Policy] = System()
    request: RequestId


ACCESS_REQUEST_COMMANDS: tuple[type[Command], ...] = (
    RequestRepoAccess,
    ApproveAccessRequest,
    DenyAccessRequest,
    CancelAccessRequest,
    BreakGlassRepoAccess,
)


COMMANDS: dict[str, type[Command]] = {
    cls.wire_name: cls
    for cls in (
        CreateEnvironment,
        UpdateEnvironment,
        DeleteEnvironment,
        RegisterCluster,
        AddClusterEnvironment,
        RemoveClusterEnvironment,
        DeregisterCluster,
        CreateWorkspace,
        SetWorkspaceEnvironment,
        UpdateWorkspace,
        DeleteWorkspace,
        RegisterApplication,
        RemoveApplication,
        RegisterStorageIntegration,
        RemoveStorageIntegration,
        CreateMlRepo,
        UpdateMlRepo,
        GrantRepoAccess,
        SetRepoAccessPolicy,
        RevokeRepoAccess,
        DeleteMlRepo,
        CreateTeam,
        AddTeamMember,
        RemoveTeamMember,
        RecordNamespaceProvisioned,
        RecordNamespaceFailed,
        RecordNamespaceDeleted,
        RecordStorageProvisioned,
        RecordStorageFailed,
        RecordStorageDeleted,
    )
}

# Tenantry's own commands (policy `System`), sent by the scheduler (domain.due), never on the bus.
SYSTEM_COMMANDS: dict[str, type[Command]] = {cls.wire_name: cls for cls in (ExpireRepoAccess,)}
COMMANDS.update({cls.wire_name: cls for cls in ACCESS_REQUEST_COMMANDS})
SYSTEM_COMMANDS[ExpireAccessRequest.wire_name] = ExpireAccessRequest

# --- access reviews (issue 15) ------------------------------------------------------------

ReviewName = DnsLabel
ReviewItemId = Annotated[str, Field(pattern=r"^i[1-9][0-9]{0,5}$")]
# Short enough that `review <name>: <reason>` fits a revoke's reason (at most 1000).
ReviewReason = Annotated[str, Field(min_length=1, max_length=900)]


class ReviewScope(BaseModel):
    """What a review covers: the grants on the `repos` listed, on the repos a workspace of
    `environment` holds a grant on, or on every repo (`all`). Exactly one of the three."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    repos: Annotated[list[MlRepoName], Field(min_length=1, max_length=1000)] | None = None
    environment: DnsLabel | None = None
    all: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = (self.repos is not None) + (self.environment is not None) + self.all
        if given != 1:
            raise ValueError("a scope is exactly one of repos, environment, all (true)")
        return self

    @property
    def kind(self) -> str:
        return "repos" if self.repos is not None else "environment" if self.environment else "all"


class OpenAccessReview(Command):
    wire_name: ClassVar[str] = "open_access_review"
    name: ReviewName
    scope: ReviewScope
    # RFC 3339 with an offset, in the future by the command service's clock.
    due: Moment
    on_undecided: Literal["keep", "revoke"] = "keep"


class DecideAccessReviewItem(ChangeCommand):
    """A reviewer's decision on one item: a tenant admin, or an admin of the item's repo (of
    every repo a membership item gives access to), never about their own access."""

    wire_name: ClassVar[str] = "decide_access_review_item"
    policy: ClassVar[Policy] = ReviewerOf("review", "item")
    review: ReviewName
    item: ReviewItemId
    decision: Literal["keep", "revoke"]
    reason: ReviewReason


class CloseAccessReview(ChangeCommand):
    """Close now: the undecided items get the review's `on_undecided`."""

    wire_name: ClassVar[str] = "close_access_review"
    review: ReviewName


REVIEW_COMMANDS: tuple[type[Command], ...] = (
    OpenAccessReview,
    DecideAccessReviewItem,
    CloseAccessReview,
)
COMMANDS.update({cls.wire_name: cls for cls in REVIEW_COMMANDS})


class CloseDueAccessReview(Command):
    """The scheduler's close of a review at its `due` (`domain.access_review_due`): the
    undecided items get `on_undecided`. Tenantry's own: not on the bus; a review already
    closed, or not yet due, is left as it is."""

    wire_name: ClassVar[str] = "close_due_access_review"
    policy: ClassVar[Policy] = System()
    review: ReviewName


SYSTEM_COMMANDS[CloseDueAccessReview.wire_name] = CloseDueAccessReview
