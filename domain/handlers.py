"""One handler per command: load what the command names, apply the rules, return the aggregate
the command is about. Every change goes through the aggregates loaded in the session, so the
service saves them all in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from domain import (
    access_request_expiry,  # noqa: F401  (registers its due work, domain.due)
    access_review_due,  # noqa: F401  (registers its due work, domain.due)
    grant_expiry,  # noqa: F401  (registers its due work, domain.due)
    review_snapshot,
)
from domain import commands as c
from domain.access_request import AccessRequest, request_id
from domain.access_review import AccessReview, ReviewItem
from domain.application import Application
from domain.base import Aggregate, current_command_id, now
from domain.cluster import Cluster
from domain.environment import Environment
from domain.errors import AlreadyExists, NotFound, PreconditionFailed, ValidationFailed
from domain.ml_repo import MlRepo
from domain.names import parse_duration, split_workspace_fqn
from domain.session import Session, check_version
from domain.storage_integration import StorageIntegration
from domain.team import Team
from domain.workspace import Workspace

C = TypeVar("C", bound=c.Command)
# A handler gets the session, its command and the actor; who may send the command was checked
# before, by the command's declared policy (domain.authorization).
Handler = Callable[[Session, C, str], Aggregate]
_HANDLERS: dict[type[c.Command], Handler[Any]] = {}


def _handles(command: type[C]) -> Callable[[Handler[C]], Handler[C]]:
    def register(handler: Handler[C]) -> Handler[C]:
        _HANDLERS[command] = handler
        return handler

    return register


def handler_for(command: C) -> Handler[C]:
    return cast("Handler[C]", _HANDLERS[type(command)])


def handled() -> frozenset[type[c.Command]]:
    """The command types that have a handler."""
    return frozenset(_HANDLERS)


def _exists(kind: str, name: str) -> AlreadyExists:
    return AlreadyExists(f"{kind} {name!r} already exists", kind=kind, name=name)


# --- environments -------------------------------------------------------------------------


@_handles(c.CreateEnvironment)
def create_environment(s: Session, cmd: c.CreateEnvironment, actor: str) -> Aggregate:
    env = s.find(Environment, cmd.name)
    if env is None:
        return s.add(
            Environment(
                cmd.name, cmd.is_production, cmd.optimize_for, cmd.color, cmd.access_approvals
            )
        )
    if env.live:
        raise _exists("environment", cmd.name)
    env.recreate(cmd.is_production, cmd.optimize_for, cmd.color, cmd.access_approvals)
    return env


@_handles(c.UpdateEnvironment)
def update_environment(s: Session, cmd: c.UpdateEnvironment, actor: str) -> Aggregate:
    env = s.get(Environment, cmd.name, expected_version=cmd.expected_version)
    env.update(cmd.is_production, cmd.optimize_for, cmd.color, cmd.access_approvals)
    return env


@_handles(c.DeleteEnvironment)
def delete_environment(s: Session, cmd: c.DeleteEnvironment, actor: str) -> Aggregate:
    env = s.get(Environment, cmd.name, expected_version=cmd.expected_version)
    env.delete()
    return env


# --- clusters -----------------------------------------------------------------------------


@_handles(c.RegisterCluster)
def register_cluster(s: Session, cmd: c.RegisterCluster, actor: str) -> Aggregate:
    environments = list(dict.fromkeys(cmd.environments))
    linked = [s.referred(Environment, name, "environment") for name in environments]
    cluster = s.find(Cluster, cmd.name)
    if cluster is None:
        cluster = s.add(Cluster(cmd.name, cmd.region, cmd.provider, environments, cmd.labels))
    elif cluster.live:
        raise _exists("cluster", cmd.name)
    else:
        cluster.reregister(cmd.region, cmd.provider, environments, cmd.labels)
    for env in linked:
        env.link_cluster(cmd.name)
    return cluster


@_handles(c.AddClusterEnvironment)
def add_cluster_environment(s: Session, cmd: c.AddClusterEnvironment, actor: str) -> Aggregate:
    cluster = s.get(Cluster, cmd.cluster, expected_version=cmd.expected_version)
    env = s.referred(Environment, cmd.environment, "environment")
    cluster.add_environment(cmd.environment)
    env.link_cluster(cmd.cluster)
    return cluster


@_handles(c.RemoveClusterEnvironment)
def remove_cluster_environment(
    s: Session, cmd: c.RemoveClusterEnvironment, actor: str
) -> Aggregate:
    cluster = s.get(Cluster, cmd.cluster, expected_version=cmd.expected_version)
    cluster.remove_environment(cmd.environment)
    env = s.find(Environment, cmd.environment)
    if env is not None:
        env.unlink_cluster(cmd.cluster)
    return cluster


@_handles(c.DeregisterCluster)
def deregister_cluster(s: Session, cmd: c.DeregisterCluster, actor: str) -> Aggregate:
    cluster = s.get(Cluster, cmd.cluster, expected_version=cmd.expected_version)
    cluster.deregister()
    for name in cluster.environments:
        env = s.find(Environment, name)
        if env is not None:
            env.unlink_cluster(cmd.cluster)
    return cluster


# --- workspaces and applications ----------------------------------------------------------


def _grant(
    s: Session,
    repo: MlRepo,
    subject: str,
    role: str,
    reason: str | None,
    managed_by: str | None = None,
    deadline: c.Deadline | None = None,
    *,
    approved: bool = False,
    expires_at: datetime | None = None,
) -> None:
    """Grant on `repo`, keeping the subject's side consistent (teams and workspaces must exist),
    until `deadline` if given (or `expires_at`, a moment decided already).

    A grant that needs approvals is given only `approved` (by an access request's last
    approval, or a tenant admin's break-glass grant); directly, it is refused."""
    workspace = _grant_subject(s, subject)
    if not approved:
        _require_no_approvals(s, repo, subject, role)
    if workspace is not None:
        workspace.link_repo(repo.name)
    until = expires_at if expires_at is not None else expires_at_of(deadline)
    repo.grant(subject, role, reason, managed_by, until)


def expires_at_of(deadline: c.Deadline | None) -> datetime | None:
    """The moment a grant given now with `deadline` ends (None: never)."""
    if deadline is None or deadline.duration is None:
        return None if deadline is None else deadline.expires_at
    return now() + parse_duration(deadline.duration)


@_handles(c.CreateWorkspace)
def create_workspace(s: Session, cmd: c.CreateWorkspace, actor: str) -> Aggregate:
    cluster = s.referred(Cluster, cmd.cluster, "cluster")
    workspace = s.find(Workspace, cmd.cluster, cmd.name)
    if workspace is not None and workspace.live:
        raise _exists("workspace", f"{cmd.cluster}:{cmd.name}")
    s.referred(Environment, cmd.environment, "environment")  # not the same as not offered
    if workspace is None:
        workspace = s.add(
            Workspace(cmd.cluster, cmd.name, cmd.environment, cmd.labels, cmd.annotations)
        )
    else:
        workspace.recreate(cmd.environment, cmd.labels, cmd.annotations)
    cluster.attach_workspace(cmd.name, cmd.environment)
    for access in cmd.ml_repo_access:
        repo = s.referred(MlRepo, access.repo, "repo")
        _grant(
            s,
            repo,
            workspace.subject,
            access.role,
            reason="granted on workspace creation",
            managed_by=access.managed_by,
            deadline=access,
        )
    return workspace


def _workspace(s: Session, fqn: str, expected_version: int | None = None) -> Workspace:
    cluster, name = split_workspace_fqn(fqn)
    return s.get(Workspace, cluster, name, expected_version=expected_version)


@_handles(c.SetWorkspaceEnvironment)
def set_workspace_environment(s: Session, cmd: c.SetWorkspaceEnvironment, actor: str) -> Aggregate:
    workspace = _workspace(s, cmd.workspace, cmd.expected_version)
    s.referred(Environment, cmd.environment, "environment")
    cluster = s.get(Cluster, workspace.cluster)
    cluster.attach_workspace(workspace.name, cmd.environment)
    workspace.set_environment(cmd.environment)
    return workspace


@_handles(c.UpdateWorkspace)
def update_workspace(s: Session, cmd: c.UpdateWorkspace, actor: str) -> Aggregate:
    workspace = _workspace(s, cmd.workspace, cmd.expected_version)
    workspace.update(cmd.labels, cmd.annotations)
    return workspace


@_handles(c.DeleteWorkspace)
def delete_workspace(s: Session, cmd: c.DeleteWorkspace, actor: str) -> Aggregate:
    workspace = _workspace(s, cmd.workspace, cmd.expected_version)
    workspace.request_deletion(cmd.force)
    for name in sorted(workspace.applications):
        app = s.find(Application, workspace.fqn(), name)
        if app is not None and app.live:
            app.remove()
        workspace.detach_application(name)
    for repo_name in sorted(workspace.repos):
        repo = s.find(MlRepo, repo_name)
        if repo is not None:
            repo.end_grant(workspace.subject, reason=f"workspace {workspace.fqn()} deleted")
        workspace.unlink_repo(repo_name)
    s.get(Cluster, workspace.cluster).detach_workspace(workspace.name)
    return workspace


@_handles(c.RegisterApplication)
def register_application(s: Session, cmd: c.RegisterApplication, actor: str) -> Aggregate:
    workspace = _workspace(s, cmd.workspace, cmd.expected_version)
    app = s.find(Application, workspace.fqn(), cmd.name)
    if app is None:
        app = s.add(Application(workspace.fqn(), cmd.name))
    elif app.live:
        raise _exists("application", f"{workspace.fqn()}:{cmd.name}")
    else:
        app.reregister()
    workspace.attach_application(cmd.name)
    return app


@_handles(c.RemoveApplication)
def remove_application(s: Session, cmd: c.RemoveApplication, actor: str) -> Aggregate:
    workspace = _workspace(s, cmd.workspace)
    app = s.get(Application, workspace.fqn(), cmd.name, expected_version=cmd.expected_version)
    app.remove()
    workspace.detach_application(cmd.name)
    return app


# --- storage integrations and ML repos ----------------------------------------------------


@_handles(c.RegisterStorageIntegration)
def register_storage_integration(
    s: Session, cmd: c.RegisterStorageIntegration, actor: str
) -> Aggregate:
    integration = s.find(StorageIntegration, cmd.name)
    if integration is None:
        return s.add(StorageIntegration(cmd.name, cmd.provider, cmd.storage_root, cmd.region))
    if integration.live:
        raise _exists("storage integration", cmd.name)
    integration.reregister(cmd.provider, cmd.storage_root, cmd.region)
    return integration


@_handles(c.RemoveStorageIntegration)
def remove_storage_integration(
    s: Session, cmd: c.RemoveStorageIntegration, actor: str
) -> Aggregate:
    integration = s.get(StorageIntegration, cmd.name, expected_version=cmd.expected_version)
    integration.remove()
    return integration


@_handles(c.CreateMlRepo)
def create_ml_repo(s: Session, cmd: c.CreateMlRepo, actor: str) -> Aggregate:
    integration = s.referred(StorageIntegration, cmd.storage_integration, "storage_integration")
    location = integration.location_of(cmd.name)
    repo = s.find(MlRepo, cmd.name)
    if repo is None:
        repo = s.add(
            MlRepo(cmd.name, cmd.storage_integration, cmd.description, location, cmd.adopt_storage)
        )
    elif repo.live:
        raise _exists("ML repo", cmd.name)
    else:
        left_behind = repo.storage_left_behind()
        if left_behind is not None and not cmd.adopt_storage:
            raise PreconditionFailed(
                f"the storage of the deleted ML repo {cmd.name!r} at {repo.location} "
                f"{left_behind}: re-creating the name would hand its data over, so only a "
                "tenant admin may, with adopt_storage=true",
                repo=cmd.name,
                location=repo.location,
                status=repo.status,
                delete_storage=repo.delete_storage,
            )
        repo.recreate(cmd.storage_integration, cmd.description, location, cmd.adopt_storage)
    integration.attach_repo(cmd.name)
    repo.grant(actor, "admin", reason="creator of the repo")
    return repo


@_handles(c.UpdateMlRepo)
def update_ml_repo(s: Session, cmd: c.UpdateMlRepo, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.name, expected_version=cmd.expected_version)
    if cmd.storage_integration is not None and cmd.storage_integration != repo.storage_integration:
        raise PreconditionFailed(
            f"the storage integration of ML repo {cmd.name!r} cannot be changed",
            repo=cmd.name,
            storage_integration=repo.storage_integration,
        )
    repo.update(cmd.description)
    return repo


@_handles(c.GrantRepoAccess)
def grant_repo_access(s: Session, cmd: c.GrantRepoAccess, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.repo, expected_version=cmd.expected_version)
    _grant(s, repo, cmd.subject, cmd.role, cmd.reason, cmd.managed_by, cmd)
    return repo


@_handles(c.SetRepoAccessPolicy)
def set_repo_access_policy(s: Session, cmd: c.SetRepoAccessPolicy, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.repo, expected_version=cmd.expected_version)
    repo.set_access_policy(cmd.approvals, cmd.max_duration)
    return repo


@_handles(c.ExpireRepoAccess)
def expire_repo_access(s: Session, cmd: c.ExpireRepoAccess, actor: str) -> Aggregate:
    repo = s.find(MlRepo, cmd.repo)
    if repo is None:
        raise NotFound(f"ML repo {cmd.repo!r} does not exist", name=cmd.repo)
    repo.expire(cmd.subject, cmd.expires_at)
    return repo


@_handles(c.RevokeRepoAccess)
def revoke_repo_access(s: Session, cmd: c.RevokeRepoAccess, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.repo, expected_version=cmd.expected_version)
    repo.revoke(cmd.subject, cmd.reason)
    if cmd.subject.startswith("workspace:"):
        cluster, name = split_workspace_fqn(cmd.subject.removeprefix("workspace:"))
        workspace = s.find(Workspace, cluster, name)
        if workspace is not None:
            workspace.unlink_repo(cmd.repo)
    return repo


@_handles(c.DeleteMlRepo)
def delete_ml_repo(s: Session, cmd: c.DeleteMlRepo, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.name, expected_version=cmd.expected_version)
    for subject in sorted(repo.grants):
        if subject.startswith("workspace:"):
            cluster, name = split_workspace_fqn(subject.removeprefix("workspace:"))
            workspace = s.find(Workspace, cluster, name)
            if workspace is not None:
                workspace.unlink_repo(repo.name)
    repo.request_deletion(cmd.delete_storage)
    integration = s.find(StorageIntegration, repo.storage_integration)
    if integration is not None:
        integration.detach_repo(repo.name)
    return repo


# --- teams --------------------------------------------------------------------------------


@_handles(c.CreateTeam)
def create_team(s: Session, cmd: c.CreateTeam, actor: str) -> Aggregate:
    if s.find(Team, cmd.name) is not None:
        raise _exists("team", cmd.name)
    return s.add(Team(cmd.name, list(cmd.members)))


@_handles(c.AddTeamMember)
def add_team_member(s: Session, cmd: c.AddTeamMember, actor: str) -> Aggregate:
    team = s.get(Team, cmd.team, expected_version=cmd.expected_version)
    team.add_member(cmd.user)
    return team


@_handles(c.RemoveTeamMember)
def remove_team_member(s: Session, cmd: c.RemoveTeamMember, actor: str) -> Aggregate:
    team = s.get(Team, cmd.team, expected_version=cmd.expected_version)
    team.remove_member(cmd.user)
    return team


# --- what the workers report --------------------------------------------------------------


# What each report does to its workspace or repo; one handler per kind of report.
_NAMESPACE_REPORTS: dict[type[c.RecordNamespace], Callable[[Workspace, str, str], None]] = {
    c.RecordNamespaceProvisioned: lambda w, ns, detail: w.record_provisioned(ns, detail),
    c.RecordNamespaceFailed: lambda w, ns, detail: w.record_failed(ns, detail),
    c.RecordNamespaceDeleted: lambda w, ns, detail: w.record_deleted(ns, detail),
}
_STORAGE_REPORTS: dict[type[c.RecordStorage], Callable[[MlRepo, str, str], None]] = {
    c.RecordStorageProvisioned: lambda r, location, detail: r.record_provisioned(location, detail),
    c.RecordStorageFailed: lambda r, location, detail: r.record_failed(location, detail),
    c.RecordStorageDeleted: lambda r, location, detail: r.record_deleted(location, detail),
}


def record_namespace(s: Session, cmd: c.RecordNamespace, actor: str) -> Aggregate:
    cluster, name = split_workspace_fqn(cmd.workspace)
    workspace = s.find(Workspace, cluster, name)
    if workspace is None:
        raise NotFound(f"workspace {cmd.workspace!r} does not exist", name=cmd.workspace)
    check_version(workspace, cmd.expected_version)
    _NAMESPACE_REPORTS[type(cmd)](workspace, cmd.namespace, cmd.detail)
    return workspace


def record_storage(s: Session, cmd: c.RecordStorage, actor: str) -> Aggregate:
    repo = s.find(MlRepo, cmd.repo)
    if repo is None:
        raise NotFound(f"ML repo {cmd.repo!r} does not exist", name=cmd.repo)
    check_version(repo, cmd.expected_version)
    if isinstance(cmd, c.RecordStorageFailed) and cmd.removal:
        repo.record_removal_failed(cmd.location, cmd.detail)
    else:
        _STORAGE_REPORTS[type(cmd)](repo, cmd.location, cmd.detail)
    return repo


for _namespace_report in _NAMESPACE_REPORTS:
    _handles(_namespace_report)(record_namespace)
for _storage_report in _STORAGE_REPORTS:
    _handles(_storage_report)(record_storage)


# --- access requests and approvals, break-glass grants (issue 15) -------------------------


def _grant_subject(s: Session, subject: str) -> Workspace | None:
    """The subject's side of a grant, which must exist: its team, or its live workspace
    (returned, to be linked to the repo)."""
    if subject.startswith("team:"):
        if s.find(Team, subject.removeprefix("team:")) is None:
            raise PreconditionFailed(f"team {subject[5:]!r} does not exist", subject=subject)
    elif subject.startswith("workspace:"):
        cluster, name = split_workspace_fqn(subject.removeprefix("workspace:"))
        workspace = s.find(Workspace, cluster, name)
        if workspace is None or not workspace.live:
            raise PreconditionFailed(f"workspace {cluster}:{name} does not exist", subject=subject)
        return workspace
    return None


def _subject_environment(s: Session, subject: str) -> Environment | None:
    """The environment of a workspace subject (None for users and teams)."""
    if not subject.startswith("workspace:"):
        return None
    cluster, name = split_workspace_fqn(subject.removeprefix("workspace:"))
    workspace = s.find(Workspace, cluster, name)
    if workspace is None:
        return None
    return s.find(Environment, workspace.environment)


def _repo_approvals(repo: MlRepo) -> int:
    """How many approvals the repo's access policy asks for any grant on it."""
    return repo.access_policy.approvals


def _repo_max_seconds(repo: MlRepo) -> int | None:
    """The longest grant the repo's access policy allows (seconds; None: no cap)."""
    cap = repo.access_policy.max_duration
    return None if cap is None else int(cap.total_seconds())


def approvals_needed(s: Session, repo: MlRepo, subject: str, role: str) -> int:
    """How many distinct approvers a grant of `role` to `subject` on `repo` needs: the repo's
    policy for any grant; the environment's `access_approvals` for editor or admin to one of its
    workspaces. The higher wins."""
    needed = _repo_approvals(repo)
    environment = _subject_environment(s, subject)
    if environment is not None and role in ("editor", "admin"):
        needed = max(needed, environment.access_approvals)
    return needed


def _require_no_approvals(s: Session, repo: MlRepo, subject: str, role: str) -> None:
    needed = approvals_needed(s, repo, subject, role)
    if needed:
        raise PreconditionFailed(
            f"a grant of {role} to {subject} on ML repo {repo.name!r} needs {needed} "
            "approval(s): ask for it with request_repo_access (`tenantry access request`), "
            "or, in an emergency, a tenant admin's break_glass_repo_access",
            repo=repo.name,
            subject=subject,
            role=role,
            approvals=needed,
            flow="request_repo_access",
        )


def _max_grant_seconds(s: Session, repo: MlRepo, subject: str) -> int | None:
    """The longest grant a request may give: the repo policy's cap; without one, a production
    workspace's grants last at most the governance's production default (30 days)."""
    cap = _repo_max_seconds(repo)
    if cap is not None:
        return cap
    environment = _subject_environment(s, subject)
    if environment is not None and environment.is_production:
        return int(s.governance.production_max_duration.total_seconds())
    return None


@_handles(c.RequestRepoAccess)
def request_repo_access(s: Session, cmd: c.RequestRepoAccess, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.repo)
    repo.require_live()
    subject = cmd.subject or actor
    _grant_subject(s, subject)
    MlRepo.check_role(subject, cmd.role)
    asked = None if cmd.duration is None else int(parse_duration(cmd.duration).total_seconds())
    policy_cap = _repo_max_seconds(repo)
    if asked is not None and policy_cap is not None and asked > policy_cap:
        raise ValidationFailed(
            f"ML repo {repo.name!r} allows grants of at most {policy_cap} seconds",
            duration=cmd.duration,
            max_duration_seconds=policy_cap,
        )
    request = AccessRequest(
        request_id(current_command_id(), s.requests_opened),
        actor,
        repo.name,
        subject,
        cmd.role,
        cmd.reason,
        asked,
        max(1, approvals_needed(s, repo, subject, cmd.role)),
        _max_grant_seconds(s, repo, subject),
        int(s.governance.request_ttl.total_seconds()),
    )
    s.requests_opened += 1
    return s.add(request)


def _team_member(s: Session, subject: str, actor: str) -> bool:
    """Whether `actor` is a member of the team `subject` (a team's grant is its members')."""
    if not subject.startswith("team:"):
        return False
    team = s.find(Team, subject.removeprefix("team:"))
    return team is not None and actor.removeprefix("user:") in team.members


@_handles(c.ApproveAccessRequest)
def approve_access_request(s: Session, cmd: c.ApproveAccessRequest, actor: str) -> Aggregate:
    request = s.get(AccessRequest, cmd.request, expected_version=cmd.expected_version)
    excluded = _team_member(s, request.subject, actor)
    seconds = request.grant_seconds()
    at = now()
    expires_at = None if seconds is None else at + timedelta(seconds=seconds)
    if request.approve(actor, cmd.comment, at, excluded, expires_at):
        # The last approval grants, in the same transaction, for the time asked (capped).
        repo = s.referred(MlRepo, request.repo, "repo")
        _grant(
            s,
            repo,
            request.subject,
            request.role,
            f"access request {request.request}: {request.reason}",
            approved=True,
            expires_at=expires_at,
        )
    return request


@_handles(c.DenyAccessRequest)
def deny_access_request(s: Session, cmd: c.DenyAccessRequest, actor: str) -> Aggregate:
    request = s.get(AccessRequest, cmd.request, expected_version=cmd.expected_version)
    request.deny(cmd.reason, now())
    return request


@_handles(c.CancelAccessRequest)
def cancel_access_request(s: Session, cmd: c.CancelAccessRequest, actor: str) -> Aggregate:
    request = s.get(AccessRequest, cmd.request, expected_version=cmd.expected_version)
    request.cancel(actor, cmd.reason, now())
    return request


@_handles(c.ExpireAccessRequest)
def expire_access_request(s: Session, cmd: c.ExpireAccessRequest, actor: str) -> Aggregate:
    request = s.get(AccessRequest, cmd.request)
    request.expire(now())  # nothing when it closed meanwhile, or is not due yet
    return request


@_handles(c.BreakGlassRepoAccess)
def break_glass_repo_access(s: Session, cmd: c.BreakGlassRepoAccess, actor: str) -> Aggregate:
    repo = s.get(MlRepo, cmd.repo, expected_version=cmd.expected_version)
    seconds = int(parse_duration(cmd.duration).total_seconds())
    expires_at = now() + timedelta(seconds=seconds)
    # Its own event first, for whoever alerts on break-glass grants; then the grant itself,
    # with its deadline, as any other (the views and the replay read that one).
    repo.break_glass(cmd.subject, cmd.role, cmd.reason, seconds, expires_at)
    _grant(
        s,
        repo,
        cmd.subject,
        cmd.role,
        f"break glass: {cmd.reason}",
        approved=True,
        expires_at=expires_at,
    )
    return repo


# --- access reviews (issue 15) ------------------------------------------------------------


@_handles(c.OpenAccessReview)
def open_access_review(s: Session, cmd: c.OpenAccessReview, actor: str) -> Aggregate:
    if s.find(AccessReview, cmd.name) is not None:
        raise _exists("access review", cmd.name)
    scope = cmd.scope
    repos = review_snapshot.repos_in_scope(s, scope.repos, scope.environment, scope.all)
    snapshot = review_snapshot.take(s, repos)
    review = AccessReview.open(
        cmd.name,
        scope.kind,
        scope.environment,
        snapshot.repos,
        cmd.due,
        cmd.on_undecided,
        snapshot.items,
        snapshot.read_versions,
    )
    return s.add(review)


@_handles(c.DecideAccessReviewItem)
def decide_access_review_item(s: Session, cmd: c.DecideAccessReviewItem, actor: str) -> Aggregate:
    review = s.get(AccessReview, cmd.review, expected_version=cmd.expected_version)
    item = review.require_decidable(cmd.item)
    _decide_item(s, review, item, cmd.decision, cmd.reason, actor, automatic=False)
    return review


@_handles(c.CloseAccessReview)
def close_access_review(s: Session, cmd: c.CloseAccessReview, actor: str) -> Aggregate:
    review = s.get(AccessReview, cmd.review, expected_version=cmd.expected_version)
    close_review(s, review, actor, at_due=False)
    return review


def close_review(s: Session, review: AccessReview, actor: str, *, at_due: bool) -> None:
    """Give every undecided item the review's `on_undecided` (the system's decision), then
    close it."""
    review.require_open()
    why = "undecided at the review's due time" if at_due else f"undecided when {actor} closed it"
    for item in review.undecided():
        _decide_item(s, review, item, review.on_undecided, why, actor, automatic=True)
    review.close(at_due)


def _decide_item(
    s: Session,
    review: AccessReview,
    item: ReviewItem,
    decision: str,
    reason: str,
    actor: str,
    *,
    automatic: bool,
) -> None:
    """Record the decision, applying a revoke at once (its events before the decision's, in
    the same transaction). A person's revoke that the repo refuses (its last admin) refuses the
    decision; the system's is recorded as not applied, so that the review can close."""
    outcome = "kept"
    if decision == "revoke":
        try:
            outcome = _revoke_item(s, review, item, f"review {review.name}: {reason}", actor)
        except PreconditionFailed as refused:
            if not automatic:
                raise
            outcome = f"not revoked: {refused.message}"
    review.decide(item.id, decision, reason, outcome, automatic=automatic)


def _revoke_item(s: Session, review: AccessReview, item: ReviewItem, why: str, actor: str) -> str:
    """End the access the item is about, if it still exists; what was done."""
    if item.kind == "membership":
        assert item.team is not None
        team = s.find(Team, item.team)
        user = item.subject.removeprefix("user:")
        if team is None or user not in team.members:
            return "already gone"
        team.remove_member(user)
        return "removed from team"
    assert item.repo is not None
    repo = s.find(MlRepo, item.repo)
    if repo is None or not repo.live or repo.grant_in_force(item.subject, now()) is None:
        return "already gone"
    revoke_repo_access(
        s, c.RevokeRepoAccess(repo=item.repo, subject=item.subject, reason=why), actor
    )
    return "revoked"


@_handles(c.CloseDueAccessReview)
def close_due_access_review(s: Session, cmd: c.CloseDueAccessReview, actor: str) -> Aggregate:
    """The scheduler's: changes nothing for a review already closed (sent twice, or closed by
    a person meanwhile) or not yet due (a scheduler whose clock is ahead)."""
    review = s.find(AccessReview, cmd.review)
    if review is None:
        raise NotFound(f"access review {cmd.review!r} does not exist", name=cmd.review)
    if not review.closed and review.is_due(now()):
        close_review(s, review, actor, at_due=True)
    return review
