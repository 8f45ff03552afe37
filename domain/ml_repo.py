"""ML repo: versioned models and artifacts in a storage location, and who may read or write it.

Grants are decided here: one role per subject, replaced by a new grant, ended by a revoke, by
the repo's deletion or by its deadline (`expires_at`), each change recording actor, time and
reason. A grant allows nothing from its deadline on, whether or not its expiry has been recorded
yet (`ml_repo.access_expired`, by the scheduler): every reader compares with the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate, now
from domain.errors import NotFound, PreconditionFailed, ValidationFailed
from domain.names import identity, parse_duration


@dataclass(frozen=True)
class Grant:
    role: str
    granted_by: str
    granted_at: datetime
    reason: str | None
    managed_by: str | None = None
    # The grant allows nothing from this moment on (None: until revoked).
    expires_at: datetime | None = None

    def in_force(self, at: datetime) -> bool:
        """Whether the grant allows anything at `at` (its interval is half-open)."""
        return self.expires_at is None or at < self.expires_at


@dataclass(frozen=True)
class AccessPolicy:
    """How access to a repo is given: `approvals` (0-3) an access request needs before it is
    granted (enforced by the request flow), `max_duration` the longest a grant may run (None:
    no cap, and grants without a deadline allowed)."""

    approvals: int = 0
    max_duration: timedelta | None = None


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
        self.access_policy = AccessPolicy()
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
        self,
        subject: str,
        role: str,
        reason: str | None,
        managed_by: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Give `subject` `role` until `expires_at` (None: until revoked), replacing any role it
        had; the same role, manager and deadline again changes nothing (a later deadline is how
        a grant is extended, a grant without one clears it). The last grant's `managed_by` owns
        the grant (None: nobody's, as a Kubernetes field's last writer owns it): `apply --prune`
        revokes only its own. The deadline must be in the future and within the repo's
        `access_policy.max_duration` (`validation_error`)."""
        self.require_live()
        if subject.startswith("workspace:") and role == "admin":
            raise PreconditionFailed(
                "a workspace can hold viewer or editor only", subject=subject, role=role
            )
        at = now()
        if expires_at is not None and expires_at <= at:
            raise ValidationFailed(
                "expires_at must be in the future", expires_at=expires_at.isoformat()
            )
        cap = self.access_policy.max_duration
        if cap is not None and (expires_at is None or expires_at - at > cap):
            raise ValidationFailed(
                f"ML repo {self.name!r} allows grants of at most {_text(cap)} "
                "(access_policy.max_duration): give a shorter expires_at or duration",
                repo=self.name,
                max_duration=_text(cap),
            )
        previous = self.grants.get(subject)
        if previous is not None and not previous.in_force(at):
            # Past its deadline, unrecorded yet: recorded now, so the new grant replaces nothing.
            self._expire(subject, previous)
            previous = None
        if (
            previous is not None
            and previous.role == role
            and previous.managed_by == managed_by
            and previous.expires_at == expires_at
        ):
            return
        if previous is not None and previous.role == "admin" and role != "admin":
            self._require_another_admin(subject)
        self._access_granted(
            subject=subject,
            role=role,
            previous_role=previous.role if previous else None,
            reason=reason,
            managed_by=managed_by,
            expires_at=expires_at,
        )

    # Spelled out for the defaults of `managed_by` and `expires_at`: events stored before they
    # existed read as None.
    class AccessGranted(Aggregate.Event):
        subject: str
        role: str
        previous_role: str | None
        reason: str | None
        managed_by: str | None = None
        expires_at: datetime | None = None

    @event(AccessGranted)
    def _access_granted(
        self,
        subject: str,
        role: str,
        previous_role: str | None,
        reason: str | None,
        managed_by: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        self.grants[subject] = Grant(
            role, self.last_event.actor, self.last_event.timestamp, reason, managed_by, expires_at
        )

    def grant_in_force(self, subject: str, at: datetime) -> Grant | None:
        """`subject`'s own grant if it allows anything at `at` (before its deadline)."""
        grant = self.grants.get(subject)
        return grant if grant is not None and grant.in_force(at) else None

    def expire(self, subject: str, expires_at: datetime) -> None:
        """Record that `subject`'s grant with deadline `expires_at` ended there (the scheduler,
        once the deadline has passed). Changes nothing if that grant is no longer there (revoked,
        replaced, already expired) or its deadline is still ahead: sent twice, or late, it is
        harmless."""
        grant = self.grants.get(subject)
        if grant is None or grant.expires_at != expires_at or grant.in_force(now()):
            return
        self._expire(subject, grant)

    def _expire(self, subject: str, grant: Grant) -> None:
        assert grant.expires_at is not None
        self._access_expired(subject=subject, previous_role=grant.role, expires_at=grant.expires_at)

    @event("AccessExpired")
    def _access_expired(self, subject: str, previous_role: str, expires_at: datetime) -> None:
        self.grants.pop(subject, None)

    def set_access_policy(self, approvals: int, max_duration: str | None) -> None:
        """How access to the repo is given from now on (grants already given keep their terms)."""
        self.require_live()
        policy = AccessPolicy(approvals, parse_duration(max_duration) if max_duration else None)
        if policy != self.access_policy:
            self._access_policy_set(approvals=approvals, max_duration=max_duration)

    @event("AccessPolicySet")
    def _access_policy_set(self, approvals: int, max_duration: str | None) -> None:
        self.access_policy = AccessPolicy(
            approvals, parse_duration(max_duration) if max_duration else None
        )

    def revoke(self, subject: str, reason: str | None) -> None:
        self.require_live()
        previous = self.grant_in_force(subject, now())
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
        at = now()
        admins = [
            s
            for s, g in self.grants.items()
            if g.role == "admin" and s != subject and g.in_force(at)
        ]
        if not admins:
            raise PreconditionFailed(
                f"{subject!r} is the last admin of ML repo {self.name!r}; grant admin to "
                "someone else first",
                repo=self.name,
                subject=subject,
            )

    def is_admin(self, subject: str, at: datetime) -> bool:
        """Whether `subject`'s own grant makes it an admin at `at`."""
        grant = self.grant_in_force(subject, at)
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


def _text(length: timedelta) -> str:
    """A duration as the wire writes it (`30d`, `12h`, `90m`), in its largest whole unit."""
    minutes = int(length.total_seconds()) // 60
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"
