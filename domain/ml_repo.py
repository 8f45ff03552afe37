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
    managed_by: str | None = None


class MlRepo(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("ml_repo", name)

    # `adopt_storage` (a tenant admin's explicit choice) lets the storage worker take over
    # what the location already holds: the retained data of an earlier incarnation, or a folder
    # Tenantry did not create. The event classes are spelled out for its default: events
    # stored before it existed read as False.
    class Created(Aggregate.Created):
        name: str
        storage_integration: str
        description: str
        location: str
        adopt_storage: bool = False

    class Recreated(Aggregate.Event):
        storage_integration: str
        description: str
        location: str
        adopt_storage: bool = False

    @event(Created)
    def __init__(
        self,
        name: str,
        storage_integration: str,
        description: str,
        location: str,
        adopt_storage: bool = False,
    ) -> None:
        self.name = name
        self._reset(storage_integration, description, location, adopt_storage)

    def _reset(
        self, storage_integration: str, description: str, location: str, adopt_storage: bool
    ) -> None:
        self.storage_integration = storage_integration
        self.description = description
        self.location = location
        self.adopt_storage = adopt_storage
        self.status = "pending"
        self.grants: dict[str, Grant] = {}
        self.deletion_asked = False
        self.delete_storage = False

    @event(Recreated)
    def recreate(
        self,
        storage_integration: str,
        description: str,
        location: str,
        adopt_storage: bool = False,
    ) -> None:
        self._reset(storage_integration, description, location, adopt_storage)

    @property
    def live(self) -> bool:
        return not self.deletion_asked

    def storage_left_behind(self) -> str | None:
        """Why this deleted repo's location may still hold its data (None once removed): whoever
        re-creates the name would be handed it, so only a tenant admin may, adopting it."""
        if self.live:
            return None
        if not self.delete_storage:
            return "was retained when it was deleted"
        if self.status == "deleting":
            return "is still being removed"
        if self.status == "deletion_failed":
            return "could not be removed"
        return None

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

    def grant(
        self, subject: str, role: str, reason: str | None, managed_by: str | None = None
    ) -> None:
        """Give `subject` `role`, replacing any role it had; the same role again by the same
        manager changes nothing. The last grant's `managed_by` owns the grant (None: nobody's,
        as a Kubernetes field's last writer owns it): `apply --prune` revokes only its own."""
        self.require_live()
        self.check_role(subject, role)
        previous = self.grants.get(subject)
        if previous is not None and previous.role == role and previous.managed_by == managed_by:
            return
        if previous is not None and previous.role == "admin" and role != "admin":
            self._require_another_admin(subject)
        self._access_granted(
            subject=subject,
            role=role,
            previous_role=previous.role if previous else None,
            reason=reason,
            managed_by=managed_by,
        )

    # Spelled out for `managed_by`'s default: events stored before it existed read as None.
    class AccessGranted(Aggregate.Event):
        subject: str
        role: str
        previous_role: str | None
        reason: str | None
        managed_by: str | None = None

    @event(AccessGranted)
    def _access_granted(
        self,
        subject: str,
        role: str,
        previous_role: str | None,
        reason: str | None,
        managed_by: str | None = None,
    ) -> None:
        self.grants[subject] = Grant(
            role, self.last_event.actor, self.last_event.timestamp, reason, managed_by
        )

    @staticmethod
    def check_role(subject: str, role: str) -> None:
        """Whether `subject` may hold `role` at all (a workspace: viewer or editor only)."""
        if subject.startswith("workspace:") and role == "admin":
            raise PreconditionFailed(
                "a workspace can hold viewer or editor only", subject=subject, role=role
            )

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
        self.deletion_asked = True
        self.delete_storage = delete_storage

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

    def record_removal_failed(self, location: str, detail: str) -> None:
        """The storage worker refused to remove what Tenantry did not create, or could not: the
        repo stays deleted (not live), its status `deletion_failed`, the reason in the event."""
        if self.status != "deleting":
            raise PreconditionFailed(
                f"ML repo {self.name!r} is {self.status}, not deleting",
                repo=self.name,
                status=self.status,
            )
        self._storage_failed(location=location, detail=detail, removal=True)

    # Spelled out for the default of `removal`: events stored before it read as False.
    class StorageFailed(Aggregate.Event):
        location: str
        detail: str
        removal: bool = False

    @event(StorageFailed)
    def _storage_failed(self, location: str, detail: str, removal: bool = False) -> None:
        self.status = "deletion_failed" if removal else "failed"

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

    # --- break-glass grants (issue 15) ------------------------------------------------------

    def break_glass(
        self, subject: str, role: str, reason: str, duration_seconds: int, expires_at: datetime
    ) -> None:
        """A tenant admin's emergency grant past the approvals, recorded as its own event (so
        that alerting can subscribe to it) before the grant itself, which carries its deadline."""
        self.require_live()
        self._break_glass_granted(
            subject=subject,
            role=role,
            reason=reason,
            duration_seconds=duration_seconds,
            expires_at=expires_at,
        )

    @event("BreakGlassGranted")
    def _break_glass_granted(
        self, subject: str, role: str, reason: str, duration_seconds: int, expires_at: datetime
    ) -> None:
        pass
