"""ML repo: versioned models and artifacts in a storage location, and who may read or write it.

Grants are decided here: one role per subject, replaced by a new grant, ended by a revoke or
by the repo's deletion, each change recording actor, time and reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import NotFound, PreconditionFailed
from domain.names import identity


@dataclass(frozen=True)
class Grant:
    role: str
    granted_by: str
    granted_at: datetime
    reason: str | None


class MlRepo(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("ml_repo", name)

    @event("Created")
    def __init__(
        self, name: str, storage_integration: str, description: str, location: str
    ) -> None:
        self.name = name
        self._reset(storage_integration, description, location)

    def _reset(self, storage_integration: str, description: str, location: str) -> None:
        self.storage_integration = storage_integration
        self.description = description
        self.location = location
        self.status = "pending"
        self.grants: dict[str, Grant] = {}

    @event("Recreated")
    def recreate(self, storage_integration: str, description: str, location: str) -> None:
        self._reset(storage_integration, description, location)

    @property
    def live(self) -> bool:
        return self.status not in ("deleting", "deleted")

    def require_live(self) -> None:
        if not self.live:
            raise PreconditionFailed(f"ML repo {self.name!r} is {self.status}", repo=self.name)

    def update(self, description: str) -> None:
        self.require_live()
        if description != self.description:
            self._updated(description=description)

    @event("Updated")
    def _updated(self, description: str) -> None:
        self.description = description

    def grant(self, subject: str, role: str, reason: str | None) -> None:
        """Give `subject` `role`, replacing any role it had; the same role again changes nothing."""
        self.require_live()
        if subject.startswith("workspace:") and role == "admin":
            raise PreconditionFailed(
                "a workspace can hold viewer or editor only", subject=subject, role=role
            )
        previous = self.grants.get(subject)
        if previous is not None and previous.role == role:
            return
        if previous is not None and previous.role == "admin":
            self._require_another_admin(subject)
        self._access_granted(
            subject=subject,
            role=role,
            previous_role=previous.role if previous else None,
            reason=reason,
        )

    @event("AccessGranted")
    def _access_granted(
        self, subject: str, role: str, previous_role: str | None, reason: str | None
    ) -> None:
        self.grants[subject] = Grant(role, self.last_event.actor, self.last_event.timestamp, reason)

    def revoke(self, subject: str, reason: str | None) -> None:
        self.require_live()
        previous = self.grants.get(subject)
        if previous is None:
            raise NotFound(
                f"{subject!r} holds no grant on ML repo {self.name!r}",
                repo=self.name,
                subject=subject,
            )
        if previous.role == "admin":
            self._require_another_admin(subject)
        self._access_revoked(subject=subject, previous_role=previous.role, reason=reason)

    @event("AccessRevoked")
    def _access_revoked(self, subject: str, previous_role: str, reason: str | None) -> None:
        self.grants.pop(subject, None)

    def _require_another_admin(self, subject: str) -> None:
        admins = [s for s, g in self.grants.items() if g.role == "admin" and s != subject]
        if not admins:
            raise PreconditionFailed(
                f"{subject!r} is the last admin of ML repo {self.name!r}; grant admin to "
                "someone else first",
                repo=self.name,
                subject=subject,
            )

    def is_admin(self, subject: str) -> bool:
        grant = self.grants.get(subject)
        return grant is not None and grant.role == "admin"

    def request_deletion(self, delete_storage: bool) -> None:
        """Ends every grant (as events), then asks for the storage to be removed or retained."""
        self.require_live()
        for subject, grant in sorted(self.grants.items()):
            self._access_revoked(subject=subject, previous_role=grant.role, reason="repo deleted")
        self._deletion_requested(delete_storage=delete_storage)

    @event("DeletionRequested")
    def _deletion_requested(self, delete_storage: bool) -> None:
        self.status = "deleting"

    def end_grant(self, subject: str, reason: str) -> None:
        """End a grant because its subject is gone (a deleted workspace)."""
        grant = self.grants.get(subject)
        if grant is not None:
            self._access_revoked(subject=subject, previous_role=grant.role, reason=reason)

    def record_provisioned(self, location: str, detail: str) -> None:
        self.require_live()
        self._storage_provisioned(location=location, detail=detail)

    @event("StorageProvisioned")
    def _storage_provisioned(self, location: str, detail: str) -> None:
        self.status = "ready"

    def record_failed(self, location: str, detail: str) -> None:
        self.require_live()
        self._storage_failed(location=location, detail=detail)

    @event("StorageFailed")
    def _storage_failed(self, location: str, detail: str) -> None:
        self.status = "failed"

    def record_deleted(self, location: str, detail: str) -> None:
        if self.status != "deleting":
            raise PreconditionFailed(
                f"ML repo {self.name!r} is {self.status}, not deleting",
                repo=self.name,
                status=self.status,
            )
        self._storage_deleted(location=location, detail=detail)

    @event("StorageDeleted")
    def _storage_deleted(self, location: str, detail: str) -> None:
        self.status = "deleted"
