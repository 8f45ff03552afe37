"""Access request: a grant asked for, approved by people other than the requester and the
subject (separation of duties), then granted; or denied, cancelled, or expired unanswered.

The rules of a request's life are decided here; what it needs (how many approvals, the longest
grant) is decided when it opens, by the handler, from the repo's policy and the environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid5

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import Forbidden, PreconditionFailed
from domain.names import TENANTRY_NAMESPACE, identity

PENDING = "pending"
# A request's statuses once decided; none of them changes again.
CLOSED = ("approved", "denied", "cancelled", "expired")


@dataclass(frozen=True)
class Governance:
    """The deployment's settings for access requests: how long one stays pending before it
    expires, and the longest grant to a production workspace when the repo's policy sets none."""

    request_ttl: timedelta = timedelta(days=7)
    production_max_duration: timedelta = timedelta(days=30)


def request_id(command_id: str, ordinal: int) -> str:
    """The id of the `ordinal`-th request (from 0) opened by the command or apply `command_id`:
    derived, so that deciding a command again (a retry after a clash) names the same request."""
    return str(uuid5(TENANTRY_NAMESPACE, f"access_request:{command_id}:{ordinal}"))


@dataclass(frozen=True)
class Approval:
    approver: str
    at: datetime
    comment: str | None


class AccessRequest(Aggregate):
    @staticmethod
    def create_id(request: str) -> UUID:
        return identity("access_request", request)

    class Opened(Aggregate.Created):
        request: str
        requester: str
        repo: str
        subject: str
        role: str
        reason: str
        # What the requester asked for (seconds; None: no deadline asked).
        duration_seconds: int | None
        # Fixed when it opens: how many distinct approvers it needs, the longest grant it may
        # give (seconds; None: no cap), and how long it stays pending before it expires
        # (seconds from the event's own time: `expires_at`).
        approvals_needed: int
        max_duration_seconds: int | None
        ttl_seconds: int

    @event(Opened)
    def __init__(
        self,
        request: str,
        requester: str,
        repo: str,
        subject: str,
        role: str,
        reason: str,
        duration_seconds: int | None,
        approvals_needed: int,
        max_duration_seconds: int | None,
        ttl_seconds: int,
    ) -> None:
        self.request = request
        self.repo = repo
        self.subject = subject
        self.role = role
        self.reason = reason
        self.duration_seconds = duration_seconds
        self.approvals_needed = approvals_needed
        self.max_duration_seconds = max_duration_seconds
        self.requester = requester
        self.opened_at = self.created_on
        self.expires_at = self.created_on + timedelta(seconds=ttl_seconds)
        self.status = PENDING
        self.approvals: list[Approval] = []

    def grant_seconds(self) -> int | None:
        """How long the grant lasts once approved: what was asked, capped by the policy."""
        asked, cap = self.duration_seconds, self.max_duration_seconds
        if asked is None:
            return cap
        return asked if cap is None else min(asked, cap)

    def _require_pending(self, now: datetime) -> None:
        if self.status != PENDING:
            raise PreconditionFailed(
                f"access request {self.request} is {self.status}",
                request=self.request,
                status=self.status,
            )
        if now >= self.expires_at:
            raise PreconditionFailed(
                f"access request {self.request} expired at {self.expires_at.isoformat()}",
                request=self.request,
                status="expired",
                expires_at=self.expires_at.isoformat(),
            )

    def approve(
        self,
        approver: str,
        comment: str | None,
        now: datetime,
        excluded: bool,
        grant_expires_at: datetime | None,
    ) -> bool:
        """Record `approver`'s approval; True when it is the last one needed (the grant, until
        `grant_expires_at`, is then the caller's to make, in the same transaction). `excluded`:
        the approver is the subject of the grant (or a member of its team). Nobody approves
        their own request or their own access, and each approval comes from a different
        person."""
        self._require_pending(now)
        if approver == self.requester:
            raise Forbidden(
                "the requester of an access request may not approve it",
                request=self.request,
                actor=approver,
            )
        if approver == self.subject or excluded:
            raise Forbidden(
                "the subject of an access request may not approve it",
                request=self.request,
                actor=approver,
                subject=self.subject,
            )
        if any(a.approver == approver for a in self.approvals):
            raise Forbidden(
                f"{approver} has approved this request already: its approvals come from "
                f"{self.approvals_needed} different people",
                request=self.request,
                actor=approver,
            )
        given = len(self.approvals) + 1
        granted = given >= self.approvals_needed
        self._approved(
            comment=comment,
            approvals=given,
            granted=granted,
            grant_expires_at=grant_expires_at if granted else None,
        )
        return granted

    # `granted`: this approval was the last one needed, and the grant (until
    # `grant_expires_at`, None: no deadline) is in the same transaction.
    class Approved(Aggregate.Event):
        comment: str | None
        approvals: int
        granted: bool
        grant_expires_at: datetime | None = None

    @event(Approved)
    def _approved(
        self,
        comment: str | None,
        approvals: int,
        granted: bool,
        grant_expires_at: datetime | None = None,
    ) -> None:
        self.approvals.append(Approval(self.last_event.actor, self.last_event.timestamp, comment))
        if granted:
            self.status = "approved"

    def deny(self, reason: str, now: datetime) -> None:
        self._require_pending(now)
        self._denied(reason=reason)

    @event("Denied")
    def _denied(self, reason: str) -> None:
        self.status = "denied"

    def cancel(self, actor: str, reason: str | None, now: datetime) -> None:
        if actor != self.requester:
            raise Forbidden(
                "only the requester may cancel an access request",
                request=self.request,
                actor=actor,
                requester=self.requester,
            )
        self._require_pending(now)
        self._cancelled(reason=reason)

    @event("Cancelled")
    def _cancelled(self, reason: str | None) -> None:
        self.status = "cancelled"

    def expire(self, now: datetime) -> bool:
        """Record that the request went unanswered past its deadline; False (nothing recorded)
        when it is not pending or not due yet, so that the scheduler may ask more than once."""
        if self.status != PENDING or now < self.expires_at:
            return False
        self._expired()
        return True

    @event("Expired")
    def _expired(self) -> None:
        self.status = "expired"
