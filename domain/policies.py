"""Who may send a command, as a declaration its model carries (`Command.policy`); checked once,
before the command's handler, by `domain.authorization.Authorization.authorize`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TenantAdmin:
    """Only a tenant admin (anyone while authorization is off)."""


@dataclass(frozen=True)
class RepoAdmin:
    """A tenant admin or an admin of the ML repo named by the command's field `repo_field`
    (through a direct grant or a team's)."""

    repo_field: str


@dataclass(frozen=True)
class RequestApprover:
    """A tenant admin or an admin of the ML repo that the access request named by the
    command's field `request_field` is about (who else may not approve: the request decides)."""

    request_field: str


@dataclass(frozen=True)
class AnyUser:
    """Any user; a tenant admin's decision when the command's bool field `admin_when` is set."""

    admin_when: str | None = None


@dataclass(frozen=True)
class Worker:
    """Tenantry's own workers (`service:` actors) reporting what they did, or a tenant admin."""


@dataclass(frozen=True)
class System:
    """Tenantry itself (`service:tenantry`, its scheduler's due work, `domain.due`) and no one
    else. Such commands are not on the bus (not in `COMMANDS`): the command service runs them."""


@dataclass(frozen=True)
class ReviewerOf:
    """A reviewer of the access review item named by the command's fields `review_field` and
    `item_field`: a tenant admin, or an admin of the item's repo (of every repo a membership
    item gives access to); never someone whose own access the item is about."""

    review_field: str
    item_field: str


Policy = TenantAdmin | RepoAdmin | RequestApprover | AnyUser | Worker | System | ReviewerOf
