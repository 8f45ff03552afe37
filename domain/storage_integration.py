"""Storage integration: a storage root (S3, GCS, Azure Blob, local) that ML repos live under."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import PreconditionFailed
from domain.names import identity


class StorageIntegration(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("storage_integration", name)

    @event("Registered")
    def __init__(self, name: str, provider: str, storage_root: str, region: str | None) -> None:
        self.name = name
        self._register(provider, storage_root, region)

    def _register(self, provider: str, storage_root: str, region: str | None) -> None:
        self.provider = provider
        self.storage_root = storage_root
        self.region = region
        self.repos: set[str] = set()
        self.live = True

    @event("Reregistered")
    def reregister(self, provider: str, storage_root: str, region: str | None) -> None:
        self._register(provider, storage_root, region)

    def location_of(self, repo: str) -> str:
        return f"{self.storage_root.rstrip('/')}/{repo}/"

    def attach_repo(self, repo: str) -> None:
        if not self.live:
            raise PreconditionFailed(
                f"storage integration {self.name!r} is removed", storage_integration=self.name
            )
        self._repo_attached(repo=repo)

    @event("RepoAttached")
    def _repo_attached(self, repo: str) -> None:
        self.repos.add(repo)

    def detach_repo(self, repo: str) -> None:
        if repo in self.repos:
            self._repo_detached(repo=repo)

    @event("RepoDetached")
    def _repo_detached(self, repo: str) -> None:
        self.repos.discard(repo)

    def remove(self) -> None:
        if self.repos:
            raise PreconditionFailed(
                f"storage integration {self.name!r} still holds ML repos",
                storage_integration=self.name,
                repos=sorted(self.repos),
            )
        self._removed()

    @event("Removed")
    def _removed(self) -> None:
        self.live = False
