"""Workspace: a Kubernetes namespace on a cluster, tagged with one environment."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import PreconditionFailed
from domain.names import identity


class Workspace(Aggregate):
    @staticmethod
    def create_id(cluster: str, name: str) -> UUID:
        return identity("workspace", f"{cluster}:{name}")

    @event("Created")
    def __init__(
        self,
        cluster: str,
        name: str,
        environment: str,
        labels: dict[str, str],
        annotations: dict[str, str],
    ) -> None:
        self.cluster = cluster
        self.name = name
        self._reset(environment, labels, annotations)

    def _reset(self, environment: str, labels: dict[str, str], annotations: dict[str, str]) -> None:
        self.environment = environment
        self.labels = dict(labels)
        self.annotations = dict(annotations)
        self.status = "pending"
        self.applications: set[str] = set()
        # Repos this workspace holds a grant on, so that deleting it can end them.
        self.repos: set[str] = set()

    def recreate(
        self, environment: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> None:
        """Create a deleted workspace again; not while its namespace is still being removed (the
        worker's report of that removal would then be refused, and the new namespace would be
        made over the old one), as an ML repo waits for its storage (`storage_left_behind`)."""
        if self.status == "deleting":
            raise PreconditionFailed(
                f"workspace {self.fqn()!r} is still being deleted (its namespace is being "
                "removed): create it again once it is deleted",
                workspace=self.fqn(),
                status=self.status,
            )
        self._recreated(environment=environment, labels=labels, annotations=annotations)

    @event("Recreated")
    def _recreated(
        self, environment: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> None:
        self._reset(environment, labels, annotations)

    @property
    def subject(self) -> str:
        return f"workspace:{self.fqn()}"

    @property
    def live(self) -> bool:
        return self.status not in ("deleting", "deleted")

    def require_live(self) -> None:
        if not self.live:
            raise PreconditionFailed(
                f"workspace {self.fqn()!r} is {self.status}", workspace=self.fqn()
            )

    def set_environment(self, environment: str) -> None:
        self.require_live()
        if environment != self.environment:
            self._environment_set(environment=environment, previous=self.environment)

    @event("EnvironmentSet")
    def _environment_set(self, environment: str, previous: str) -> None:
        self.environment = environment

    def update(self, labels: dict[str, str] | None, annotations: dict[str, str] | None) -> None:
        self.require_live()
        new_labels = self.labels if labels is None else labels
        new_annotations = self.annotations if annotations is None else annotations
        if new_labels != self.labels or new_annotations != self.annotations:
            self._updated(labels=new_labels, annotations=new_annotations)

    @event("Updated")
    def _updated(self, labels: dict[str, str], annotations: dict[str, str]) -> None:
        self.labels = dict(labels)
        self.annotations = dict(annotations)

    def attach_application(self, name: str) -> None:
        self.require_live()
        self._application_attached(application=name)

    @event("ApplicationAttached")
    def _application_attached(self, application: str) -> None:
        self.applications.add(application)

    def detach_application(self, name: str) -> None:
        if name in self.applications:
            self._application_detached(application=name)

    @event("ApplicationDetached")
    def _application_detached(self, application: str) -> None:
        self.applications.discard(application)

    def link_repo(self, repo: str) -> None:
        self.require_live()
        if repo not in self.repos:
            self._repo_linked(repo=repo)

    @event("RepoLinked")
    def _repo_linked(self, repo: str) -> None:
        self.repos.add(repo)

    def unlink_repo(self, repo: str) -> None:
        if repo in self.repos:
            self._repo_unlinked(repo=repo)

    @event("RepoUnlinked")
    def _repo_unlinked(self, repo: str) -> None:
        self.repos.discard(repo)

    def request_deletion(self, force: bool) -> None:
        """Refuses while applications remain, unless forced (the caller removes them)."""
        self.require_live()
        if self.applications and not force:
            raise PreconditionFailed(
                f"workspace {self.fqn()!r} still has applications; pass force to delete them too",
                workspace=self.fqn(),
                applications=sorted(self.applications),
            )
        self._deletion_requested(force=force)

    @event("DeletionRequested")
    def _deletion_requested(self, force: bool) -> None:
        self.status = "deleting"

    def record_provisioned(self, namespace: str, detail: str) -> None:
        self.require_live()
        self._namespace_provisioned(namespace=namespace, detail=detail)

    @event("NamespaceProvisioned")
    def _namespace_provisioned(self, namespace: str, detail: str) -> None:
        self.status = "ready"

    def record_failed(self, namespace: str, detail: str) -> None:
        self.require_live()
        self._namespace_failed(namespace=namespace, detail=detail)

    @event("NamespaceFailed")
    def _namespace_failed(self, namespace: str, detail: str) -> None:
        self.status = "failed"

    def record_deleted(self, namespace: str, detail: str) -> None:
        if self.status != "deleting":
            raise PreconditionFailed(
                f"workspace {self.fqn()!r} is {self.status}, not deleting",
                workspace=self.fqn(),
                status=self.status,
            )
        self._namespace_deleted(namespace=namespace, detail=detail)

    @event("NamespaceDeleted")
    def _namespace_deleted(self, namespace: str, detail: str) -> None:
        self.status = "deleted"
