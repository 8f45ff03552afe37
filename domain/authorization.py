"""Who may send which command: tenant admins, repo admins, and workers' service actors."""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import Forbidden

RECORD_COMMAND_PREFIX = "record_"


@dataclass(frozen=True)
class Authorization:
    """`admins` is None when authorization is off (TENANTRY_ADMINS unset): anyone may do anything
    a user may do. Service actors may only ever send `record_*` commands."""

    admins: frozenset[str] | None = None

    @property
    def enabled(self) -> bool:
        return self.admins is not None

    def is_tenant_admin(self, actor: str) -> bool:
        return self.admins is None or actor in self.admins

    def check_command(self, actor: str, command: str) -> None:
        """The rules that depend only on who is asking: checked before anything is loaded."""
        is_record = command.startswith(RECORD_COMMAND_PREFIX)
        if actor.startswith("service:"):
            if not is_record:
                raise Forbidden(
                    f"{actor} may only send record_* commands: service: actors are reserved for "
                    "Tenantry's own workers, even with authorization off; automation should act "
                    "as user:<email> (for example user:ci@example.com)",
                    actor=actor,
                    command=command,
                )
            return
        if is_record and not self.is_tenant_admin(actor):
            raise Forbidden(
                f"{command} is for workers; {actor} may not send it", actor=actor, command=command
            )

    def require_tenant_admin(self, actor: str, command: str) -> None:
        if actor.startswith("service:"):
            return  # record_* commands, already allowed by check_command
        if not self.is_tenant_admin(actor):
            raise Forbidden(
                f"{command} needs a tenant admin; {actor} is not one",
                actor=actor,
                command=command,
            )

    def require_repo_admin(self, actor: str, command: str, repo: str, is_repo_admin: bool) -> None:
        if not (self.is_tenant_admin(actor) or is_repo_admin):
            raise Forbidden(
                f"{command} on ML repo {repo!r} needs a tenant admin or an admin of the repo; "
                f"{actor} is neither",
                actor=actor,
                command=command,
                repo=repo,
            )
