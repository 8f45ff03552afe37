"""Who may send which command: each command's declared policy (`domain.policies`), checked here
once, before its handler runs, against TENANTRY_ADMINS, the repo's admins and the actor's kind."""

from __future__ import annotations

from dataclasses import dataclass

from domain.access_request import AccessRequest
from domain.access_review import AccessReview, ReviewItem
from domain.base import now
from domain.commands import Command
from domain.errors import Forbidden
from domain.ml_repo import MlRepo
from domain.policies import AnyUser, RequestApprover, ReviewerOf, System, TenantAdmin, Worker
from domain.session import Session
from domain.team import Team

# The actor of what Tenantry does by itself: seeding, the scheduler's due work.
SYSTEM_ACTOR = "service:tenantry"


@dataclass(frozen=True)
class Authorization:
    """`admins` is None when authorization is off (TENANTRY_ADMINS unset): anyone may do anything
    a user may do. Service actors may only ever send the workers' commands."""

    admins: frozenset[str] | None = None

    @property
    def enabled(self) -> bool:
        return self.admins is not None

    def is_tenant_admin(self, actor: str) -> bool:
        return self.admins is None or actor in self.admins

    def authorize(self, command: Command, actor: str, session: Session) -> None:
        """Refuse (`Forbidden`) unless `actor` may send `command`. A repo admin's command loads
        its repo into `session` first (so a repo that does not exist answers `not_found`, and
        a stale `expected_version` `conflict`, as the handler would)."""
        name, policy = command.wire_name, command.policy
        if isinstance(policy, System):
            if actor != SYSTEM_ACTOR:
                raise Forbidden(
                    f"{name} is Tenantry's own (its scheduler's); {actor} may not send it",
                    actor=actor,
                    command=name,
                )
            return
        if actor.startswith("service:"):
            if not isinstance(policy, Worker):
                raise Forbidden(
                    f"{actor} may only send record_* commands: service: actors are reserved for "
                    "Tenantry's own workers, even with authorization off; automation should act "
                    "as user:<email> (for example user:ci@example.com)",
                    actor=actor,
                    command=name,
                )
            return
        if isinstance(policy, ReviewerOf):
            self._authorize_reviewer(command, policy, actor, session)
            return
        if self.is_tenant_admin(actor):
            return
        if isinstance(policy, Worker):
            raise Forbidden(
                f"{name} is for workers; {actor} may not send it", actor=actor, command=name
            )
        if isinstance(policy, TenantAdmin):
            raise _needs_tenant_admin(name, actor)
        if isinstance(policy, AnyUser):
            if policy.admin_when is not None and getattr(command, policy.admin_when):
                raise _needs_tenant_admin(f"{name} with {policy.admin_when}", actor)
            return
        if isinstance(policy, RequestApprover):
            self._authorize_approver(command, policy, actor, session)
            return
        repo = session.get(
            MlRepo,
            getattr(command, policy.repo_field),
            expected_version=getattr(command, "expected_version", None),
        )
        if not is_repo_admin(session, repo, actor):
            raise Forbidden(
                f"{name} on ML repo {repo.name!r} needs a tenant admin or an admin of the repo; "
                f"{actor} is neither",
                actor=actor,
                command=name,
                repo=repo.name,
            )

    def _authorize_approver(
        self, command: Command, policy: RequestApprover, actor: str, session: Session
    ) -> None:
        request = session.get(
            AccessRequest,
            getattr(command, policy.request_field),
            expected_version=getattr(command, "expected_version", None),
        )
        repo = session.find(MlRepo, request.repo)
        if repo is None or not repo.live or not is_repo_admin(session, repo, actor):
            raise Forbidden(
                f"{command.wire_name} on a request for ML repo {request.repo!r} needs a tenant "
                f"admin or an admin of the repo; {actor} is neither",
                actor=actor,
                command=command.wire_name,
                repo=request.repo,
            )

    def _authorize_reviewer(
        self, command: Command, policy: ReviewerOf, actor: str, session: Session
    ) -> None:
        """Separation of duties for access reviews: nobody decides an item about their own
        access (not even a tenant admin); a tenant admin may decide any other, a repo admin
        those of repos they administer (all of them, for a membership item)."""
        review = session.get(AccessReview, getattr(command, policy.review_field))
        item = review.item(getattr(command, policy.item_field))
        if _own_access(session, review, item, actor):
            raise Forbidden(
                f"item {item.id!r} of access review {review.name!r} is about {actor}'s own "
                "access: someone else must decide it",
                actor=actor,
                command=command.wire_name,
                review=review.name,
                item=item.id,
            )
        if self.is_tenant_admin(actor):
            return
        for name in item.repos_affected():
            repo = session.find(MlRepo, name)
            if repo is None or not is_repo_admin(session, repo, actor):
                raise Forbidden(
                    f"item {item.id!r} of access review {review.name!r} changes access to ML "
                    f"repo {name!r}: it needs a tenant admin or an admin of the repo; {actor} "
                    "is neither",
                    actor=actor,
                    command=command.wire_name,
                    review=review.name,
                    item=item.id,
                    repo=name,
                )


def _own_access(session: Session, review: AccessReview, item: ReviewItem, actor: str) -> bool:
    """The item is `actor`'s grant or membership, or a grant to a team `actor` is a member of
    (now, or when the review opened: a member who left is still deciding on their past)."""
    if item.about(actor):
        return True
    if item.subject.startswith("team:"):
        name = item.subject.removeprefix("team:")
        team = session.find(Team, name)
        if team is not None and actor.removeprefix("user:") in team.members:
            return True
        return any(other.team == name and other.about(actor) for other in review.items.values())
    return False


def _needs_tenant_admin(what: str, actor: str) -> Forbidden:
    return Forbidden(f"{what} needs a tenant admin; {actor} is not one", actor=actor, command=what)


def is_repo_admin(session: Session, repo: MlRepo, actor: str) -> bool:
    """A user's role is the highest of its own grant and its teams' grants (DESIGN §2, Team),
    grants past their deadline counting for nothing."""
    at = now()
    if repo.is_admin(actor, at):
        return True
    user = actor.removeprefix("user:")
    for subject, grant in repo.grants.items():
        if grant.role == "admin" and subject.startswith("team:") and grant.in_force(at):
            team = session.find(Team, subject.removeprefix("team:"))
            if team is not None and user in team.members:
                return True
    return False
