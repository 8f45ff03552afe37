"""One handler per command: load what the command names, apply the rules, return the aggregate
the command is about. Every change goes through the aggregates loaded in the session, so the
service saves them all in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain import commands as c
from domain.application import Application
from domain.authorization import Authorization
from domain.base import Aggregate
from domain.cluster import Cluster
from domain.environment import Environment
from domain.errors import AlreadyExists, NotFound, PreconditionFailed
from domain.ml_repo import MlRepo
from domain.names import split_workspace_fqn
from domain.session import Session, check_version
from domain.storage_integration import StorageIntegration
from domain.team import Team
from domain.workspace import Workspace

Handler = Callable[[Session, Any, str, Authorization], Aggregate]
HANDLERS: dict[str, Handler] = {}


def _handles(command: type[c.Command]) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[command.wire_name] = handler
        return handler

    return register


def _exists(kind: str, name: str) -> AlreadyExists:
    return AlreadyExists(f"{kind} {name!r} already exists", kind=kind, name=name)


# --- environments -------------------------------------------------------------------------


@_handles(c.CreateEnvironment)
def create_environment(
    s: Session, cmd: c.CreateEnvironment, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    env = s.find(Environment, cmd.name)
    if env is None:
        return s.add(Environment(cmd.name, cmd.is_production, cmd.optimize_for, cmd.color))
    if env.live:
        raise _exists("environment", cmd.name)
    env.recreate(cmd.is_production, cmd.optimize_for, cmd.color)
    return env


@_handles(c.UpdateEnvironment)
def update_environment(
    s: Session, cmd: c.UpdateEnvironment, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    env = s.get(Environment, cmd.name, expected_version=cmd.expected_version)
    env.update(cmd.is_production, cmd.optimize_for, cmd.color)
    return env


@_handles(c.DeleteEnvironment)
def delete_environment(
    s: Session, cmd: c.DeleteEnvironment, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    env = s.get(Environment, cmd.name, expected_version=cmd.expected_version)
    env.delete()
    return env


# --- clusters -----------------------------------------------------------------------------


def _live_environment(s: Session, name: str) -> Environment:
    env = s.find(Environment, name)
    if env is None or not env.live:
        raise PreconditionFailed(f"environment {name!r} does not exist", environment=name)
    return env


@_handles(c.RegisterCluster)
def register_cluster(
    s: Session, cmd: c.RegisterCluster, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    environments = list(dict.fromkeys(cmd.environments))
    linked = [_live_environment(s, name) for name in environments]
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
def add_cluster_environment(
    s: Session, cmd: c.AddClusterEnvironment, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    cluster = s.get(Cluster, cmd.cluster, expected_version=cmd.expected_version)
    env = _live_environment(s, cmd.environment)
    cluster.add_environment(cmd.environment)
    env.link_cluster(cmd.cluster)
    return cluster


@_handles(c.RemoveClusterEnvironment)
def remove_cluster_environment(
    s: Session, cmd: c.RemoveClusterEnvironment, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    cluster = s.get(Cluster, cmd.cluster, expected_version=cmd.expected_version)
    cluster.remove_environment(cmd.environment)
    env = s.find(Environment, cmd.environment)
    if env is not None:
        env.unlink_cluster(cmd.cluster)
    return cluster


@_handles(c.DeregisterCluster)
def deregister_cluster(
    s: Session, cmd: c.DeregisterCluster, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
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
) -> None:
    """Grant on `repo`, keeping the subject's side consistent (teams and workspaces must exist)."""
    if subject.startswith("team:"):
        if s.find(Team, subject.removeprefix("team:")) is None:
            raise PreconditionFailed(f"team {subject[5:]!r} does not exist", subject=subject)
    elif subject.startswith("workspace:"):
        cluster, name = split_workspace_fqn(subject.removeprefix("workspace:"))
        workspace = s.find(Workspace, cluster, name)
        if workspace is None or not workspace.live:
            raise PreconditionFailed(f"workspace {cluster}:{name} does not exist", subject=subject)
        workspace.link_repo(repo.name)
    repo.grant(subject, role, reason, managed_by)


@_handles(c.CreateWorkspace)
def create_workspace(
    s: Session, cmd: c.CreateWorkspace, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    cluster = s.find(Cluster, cmd.cluster)
    if cluster is None or not cluster.live:
        raise PreconditionFailed(f"cluster {cmd.cluster!r} does not exist", cluster=cmd.cluster)
    workspace = s.find(Workspace, cmd.cluster, cmd.name)
    if workspace is not None and workspace.live:
        raise _exists("workspace", f"{cmd.cluster}:{cmd.name}")
    _live_environment(s, cmd.environment)  # told apart from one the cluster does not offer
    if workspace is None:
        workspace = s.add(
            Workspace(cmd.cluster, cmd.name, cmd.environment, cmd.labels, cmd.annotations)
        )
    else:
        workspace.recreate(cmd.environment, cmd.labels, cmd.annotations)
    cluster.attach_workspace(cmd.name, cmd.environment)
    for access in cmd.ml_repo_access:
        repo = _live_repo(s, access.repo)
        _grant(
            s,
            repo,
            workspace.subject,
            access.role,
            reason="granted on workspace creation",
            managed_by=access.managed_by,
        )
    return workspace


def _workspace(s: Session, fqn: str, expected_version: int | None = None) -> Workspace:
    cluster, name = split_workspace_fqn(fqn)
    return s.get(Workspace, cluster, name, expected_version=expected_version)


@_handles(c.SetWorkspaceEnvironment)
def set_workspace_environment(
    s: Session, cmd: c.SetWorkspaceEnvironment, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    workspace = _workspace(s, cmd.workspace, cmd.expected_version)
    _live_environment(s, cmd.environment)
    cluster = s.get(Cluster, workspace.cluster)
    cluster.attach_workspace(workspace.name, cmd.environment)
    workspace.set_environment(cmd.environment)
    return workspace


@_handles(c.UpdateWorkspace)
def update_workspace(
    s: Session, cmd: c.UpdateWorkspace, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    workspace = _workspace(s, cmd.workspace, cmd.expected_version)
    workspace.update(cmd.labels, cmd.annotations)
    return workspace


@_handles(c.DeleteWorkspace)
def delete_workspace(
    s: Session, cmd: c.DeleteWorkspace, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
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
def register_application(
    s: Session, cmd: c.RegisterApplication, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
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
def remove_application(
    s: Session, cmd: c.RemoveApplication, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    workspace = _workspace(s, cmd.workspace)
    app = s.get(Application, workspace.fqn(), cmd.name, expected_version=cmd.expected_version)
    app.remove()
    workspace.detach_application(cmd.name)
    return app


# --- storage integrations and ML repos ----------------------------------------------------


@_handles(c.RegisterStorageIntegration)
def register_storage_integration(
    s: Session, cmd: c.RegisterStorageIntegration, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    integration = s.find(StorageIntegration, cmd.name)
    if integration is None:
        return s.add(StorageIntegration(cmd.name, cmd.provider, cmd.storage_root, cmd.region))
    if integration.live:
        raise _exists("storage integration", cmd.name)
    integration.reregister(cmd.provider, cmd.storage_root, cmd.region)
    return integration


@_handles(c.RemoveStorageIntegration)
def remove_storage_integration(
    s: Session, cmd: c.RemoveStorageIntegration, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    integration = s.get(StorageIntegration, cmd.name, expected_version=cmd.expected_version)
    integration.remove()
    return integration


def _live_repo(s: Session, name: str) -> MlRepo:
    repo = s.find(MlRepo, name)
    if repo is None or not repo.live:
        raise PreconditionFailed(f"ML repo {name!r} does not exist", repo=name)
    return repo


@_handles(c.CreateMlRepo)
def create_ml_repo(s: Session, cmd: c.CreateMlRepo, actor: str, auth: Authorization) -> Aggregate:
    # Any user may create a repo: its creator becomes its admin. Taking over data already at
    # its location (adopt_storage) is a tenant admin's decision.
    if cmd.adopt_storage:
        auth.require_tenant_admin(actor, f"{cmd.wire_name} with adopt_storage")
    integration = s.find(StorageIntegration, cmd.storage_integration)
    if integration is None or not integration.live:
        raise PreconditionFailed(
            f"storage integration {cmd.storage_integration!r} does not exist",
            storage_integration=cmd.storage_integration,
        )
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


def _is_repo_admin(s: Session, repo: MlRepo, actor: str) -> bool:
    """A user's role is the highest of its own grant and its teams' grants (DESIGN §2, Team)."""
    if repo.is_admin(actor):
        return True
    user = actor.removeprefix("user:")
    for subject, grant in repo.grants.items():
        if grant.role == "admin" and subject.startswith("team:"):
            team = s.find(Team, subject.removeprefix("team:"))
            if team is not None and user in team.members:
                return True
    return False


def _managed_repo(
    s: Session, name: str, actor: str, auth: Authorization, command: str, version: int | None
) -> MlRepo:
    repo = s.get(MlRepo, name, expected_version=version)
    is_admin = auth.is_tenant_admin(actor) or _is_repo_admin(s, repo, actor)
    auth.require_repo_admin(actor, command, name, is_admin)
    return repo


@_handles(c.UpdateMlRepo)
def update_ml_repo(s: Session, cmd: c.UpdateMlRepo, actor: str, auth: Authorization) -> Aggregate:
    repo = _managed_repo(s, cmd.name, actor, auth, cmd.wire_name, cmd.expected_version)
    if cmd.storage_integration is not None and cmd.storage_integration != repo.storage_integration:
        raise PreconditionFailed(
            f"the storage integration of ML repo {cmd.name!r} cannot be changed",
            repo=cmd.name,
            storage_integration=repo.storage_integration,
        )
    repo.update(cmd.description)
    return repo


@_handles(c.GrantRepoAccess)
def grant_repo_access(
    s: Session, cmd: c.GrantRepoAccess, actor: str, auth: Authorization
) -> Aggregate:
    repo = _managed_repo(s, cmd.repo, actor, auth, cmd.wire_name, cmd.expected_version)
    _grant(s, repo, cmd.subject, cmd.role, cmd.reason, cmd.managed_by)
    return repo


@_handles(c.RevokeRepoAccess)
def revoke_repo_access(
    s: Session, cmd: c.RevokeRepoAccess, actor: str, auth: Authorization
) -> Aggregate:
    repo = _managed_repo(s, cmd.repo, actor, auth, cmd.wire_name, cmd.expected_version)
    repo.revoke(cmd.subject, cmd.reason)
    if cmd.subject.startswith("workspace:"):
        cluster, name = split_workspace_fqn(cmd.subject.removeprefix("workspace:"))
        workspace = s.find(Workspace, cluster, name)
        if workspace is not None:
            workspace.unlink_repo(cmd.repo)
    return repo


@_handles(c.DeleteMlRepo)
def delete_ml_repo(s: Session, cmd: c.DeleteMlRepo, actor: str, auth: Authorization) -> Aggregate:
    repo = _managed_repo(s, cmd.name, actor, auth, cmd.wire_name, cmd.expected_version)
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
def create_team(s: Session, cmd: c.CreateTeam, actor: str, auth: Authorization) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    if s.find(Team, cmd.name) is not None:
        raise _exists("team", cmd.name)
    return s.add(Team(cmd.name, list(cmd.members)))


@_handles(c.AddTeamMember)
def add_team_member(s: Session, cmd: c.AddTeamMember, actor: str, auth: Authorization) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    team = s.get(Team, cmd.team, expected_version=cmd.expected_version)
    team.add_member(cmd.user)
    return team


@_handles(c.RemoveTeamMember)
def remove_team_member(
    s: Session, cmd: c.RemoveTeamMember, actor: str, auth: Authorization
) -> Aggregate:
    auth.require_tenant_admin(actor, cmd.wire_name)
    team = s.get(Team, cmd.team, expected_version=cmd.expected_version)
    team.remove_member(cmd.user)
    return team


# --- what the workers report --------------------------------------------------------------


def _recorded_workspace(s: Session, cmd: c.RecordNamespace) -> Workspace:
    cluster, name = split_workspace_fqn(cmd.workspace)
    workspace = s.find(Workspace, cluster, name)
    if workspace is None:
        raise NotFound(f"workspace {cmd.workspace!r} does not exist", name=cmd.workspace)
    check_version(workspace, cmd.expected_version)
    return workspace


@_handles(c.RecordNamespaceProvisioned)
def record_namespace_provisioned(
    s: Session, cmd: c.RecordNamespaceProvisioned, actor: str, auth: Authorization
) -> Aggregate:
    workspace = _recorded_workspace(s, cmd)
    workspace.record_provisioned(cmd.namespace, cmd.detail)
    return workspace


@_handles(c.RecordNamespaceFailed)
def record_namespace_failed(
    s: Session, cmd: c.RecordNamespaceFailed, actor: str, auth: Authorization
) -> Aggregate:
    workspace = _recorded_workspace(s, cmd)
    workspace.record_failed(cmd.namespace, cmd.detail)
    return workspace


@_handles(c.RecordNamespaceDeleted)
def record_namespace_deleted(
    s: Session, cmd: c.RecordNamespaceDeleted, actor: str, auth: Authorization
) -> Aggregate:
    workspace = _recorded_workspace(s, cmd)
    workspace.record_deleted(cmd.namespace, cmd.detail)
    return workspace


def _recorded_repo(s: Session, cmd: c.RecordStorage) -> MlRepo:
    repo = s.find(MlRepo, cmd.repo)
    if repo is None:
        raise NotFound(f"ML repo {cmd.repo!r} does not exist", name=cmd.repo)
    check_version(repo, cmd.expected_version)
    return repo


@_handles(c.RecordStorageProvisioned)
def record_storage_provisioned(
    s: Session, cmd: c.RecordStorageProvisioned, actor: str, auth: Authorization
) -> Aggregate:
    repo = _recorded_repo(s, cmd)
    repo.record_provisioned(cmd.location, cmd.detail)
    return repo


@_handles(c.RecordStorageFailed)
def record_storage_failed(
    s: Session, cmd: c.RecordStorageFailed, actor: str, auth: Authorization
) -> Aggregate:
    repo = _recorded_repo(s, cmd)
    if cmd.removal:
        repo.record_removal_failed(cmd.location, cmd.detail)
    else:
        repo.record_failed(cmd.location, cmd.detail)
    return repo


@_handles(c.RecordStorageDeleted)
def record_storage_deleted(
    s: Session, cmd: c.RecordStorageDeleted, actor: str, auth: Authorization
) -> Aggregate:
    repo = _recorded_repo(s, cmd)
    repo.record_deleted(cmd.location, cmd.detail)
    return repo
