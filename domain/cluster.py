"""Cluster: a Kubernetes cluster in one region, offering one or more environments."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import PreconditionFailed
from domain.names import identity


class Cluster(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("cluster", name)

    @event("Registered")
    def __init__(
        self,
        name: str,
        region: str,
        provider: str,
        environments: list[str],
        labels: dict[str, str],
    ) -> None:
        self.name = name
        self._register(region, provider, environments, labels)

    def _register(
        self, region: str, provider: str, environments: list[str], labels: dict[str, str]
    ) -> None:
        self.region = region
        self.provider = provider
        self.environments = list(environments)
        self.labels = dict(labels)
        # Live workspaces on this cluster and their environment: kept here so that removing an
        # environment and tagging a workspace with it can't both succeed under concurrency.
        self.workspaces: dict[str, str] = {}
        self.live = True

    @event("Reregistered")
    def reregister(
        self, region: str, provider: str, environments: list[str], labels: dict[str, str]
    ) -> None:
        self._register(region, provider, environments, labels)

    def add_environment(self, environment: str) -> None:
        if environment not in self.environments:
            self._environment_added(environment=environment)

    @event("EnvironmentAdded")
    def _environment_added(self, environment: str) -> None:
        self.environments.append(environment)

    def remove_environment(self, environment: str) -> None:
        if environment not in self.environments:
            raise PreconditionFailed(
                f"cluster {self.name!r} does not offer environment {environment!r}",
                cluster=self.name,
                environments=self.environments,
            )
        users = sorted(ws for ws, env in self.workspaces.items() if env == environment)
        if users:
            raise PreconditionFailed(
                f"environment {environment!r} is used by workspaces {users} on {self.name!r}",
                cluster=self.name,
                environment=environment,
                workspaces=[f"{self.name}:{ws}" for ws in users],
            )
        if len(self.environments) == 1:
            raise PreconditionFailed(
                f"cluster {self.name!r} must keep at least one environment",
                cluster=self.name,
            )
        self._environment_removed(environment=environment)

    @event("EnvironmentRemoved")
    def _environment_removed(self, environment: str) -> None:
        self.environments.remove(environment)

    def require_environment(self, environment: str) -> None:
        if environment not in self.environments:
            raise PreconditionFailed(
                f"environment {environment!r} is not one of cluster {self.name!r}'s "
                f"environments {self.environments}",
                cluster=self.name,
                environment=environment,
                environments=self.environments,
            )

    def attach_workspace(self, workspace: str, environment: str) -> None:
        """Record a live workspace (or its new environment) on this cluster."""
        self.require_environment(environment)
        if self.workspaces.get(workspace) != environment:
            self._workspace_attached(workspace=workspace, environment=environment)

    @event("WorkspaceAttached")
    def _workspace_attached(self, workspace: str, environment: str) -> None:
        self.workspaces[workspace] = environment

    def detach_workspace(self, workspace: str) -> None:
        if workspace in self.workspaces:
            self._workspace_detached(workspace=workspace)

    @event("WorkspaceDetached")
    def _workspace_detached(self, workspace: str) -> None:
        self.workspaces.pop(workspace, None)

    def deregister(self) -> None:
        if self.workspaces:
            raise PreconditionFailed(
                f"cluster {self.name!r} still has live workspaces",
                cluster=self.name,
                workspaces=[f"{self.name}:{ws}" for ws in sorted(self.workspaces)],
            )
        self._deregistered()

    @event("Deregistered")
    def _deregistered(self) -> None:
        self.live = False
