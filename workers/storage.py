"""Storage provisioner: each ML repo's location exists and its access policy equals its grants.

Acts on repo creation and recreation, on every grant and revoke (a policy change), and on
deletion (the location removed with `delete_storage`, else retained with no grants left in its
policy). Which locations it may take over or remove is `workers.ownership`'s decision. The
backend follows the location's scheme: `file://` the local one, `s3://` the S3 one. Reports
`record_storage_provisioned` / `_failed` / `_deleted` as `service:storage` (a removal refused
or failed for good is recorded as `_failed` too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

from workers.errors import PermanentError
from workers.events import Event, Report, Result
from workers.runtime import attempt, subjects

log = structlog.get_logger("workers.storage")

NAME = "storage"
_REPO_CHANGES = (
    "ml_repo.created",
    "ml_repo.recreated",
    "ml_repo.access_granted",
    "ml_repo.access_revoked",
    # A grant past its deadline comes out of the storage policy as a revoked one does.
    "ml_repo.access_expired",
)
_DELETION = "ml_repo.deletion_requested"
# Not acted on, only read: a location provisioned for this incarnation before markers existed
# is this repo's (see `workers.ownership`).
_PROVISIONED = "ml_repo.storage_provisioned"


@dataclass
class RepoView:
    name: str
    location: str
    grants: dict[str, str] = field(default_factory=dict)
    live: bool = True
    delete_storage: bool = False
    incarnation: int = 0  # the version of its created / recreated event
    adopt_storage: bool = False
    provisioned: bool = False

    @property
    def container(self) -> tuple[str, str]:
        """What repos share a policy in: an S3 bucket (a local folder has its own)."""
        parts = urlsplit(self.location)
        return parts.scheme, parts.netloc


class StorageBackend(Protocol):
    async def ensure(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str: ...

    async def remove(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str: ...

    async def close(self) -> None: ...


class RepoLedger:
    """ML repos, their locations and grants as the events read so far left them."""

    def __init__(self) -> None:
        self.repos: dict[str, RepoView] = {}

    def fold(self, seq: int, body: dict[str, Any]) -> None:
        type_, name, data = body.get("type"), str(body.get("fqn")), body.get("data") or {}
        if type_ in ("ml_repo.created", "ml_repo.recreated"):
            self.repos[name] = RepoView(
                name,
                str(data["location"]),
                incarnation=int(body.get("version") or 0),
                adopt_storage=bool(data.get("adopt_storage")),
            )
        elif (repo := self.repos.get(name)) is not None:
            if type_ == _PROVISIONED:
                repo.provisioned = True
            elif type_ == "ml_repo.access_granted":
                repo.grants[str(data["subject"])] = str(data["role"])
            elif type_ in ("ml_repo.access_revoked", "ml_repo.access_expired"):
                repo.grants.pop(str(data["subject"]), None)
            elif type_ == _DELETION:
                repo.live = False
                repo.delete_storage = bool(data.get("delete_storage"))

    def neighbours(self, repo: RepoView) -> list[RepoView]:
        """The live repos that share `repo`'s container (itself included while live)."""
        return sorted(
            (r for r in self.repos.values() if r.live and r.container == repo.container),
            key=lambda r: r.name,
        )


class StorageProvisioner:
    name = NAME
    action_subjects = subjects(*_REPO_CHANGES, _DELETION)
    state_subjects = (*action_subjects, *subjects(_PROVISIONED))

    def __init__(self, backends: dict[str, StorageBackend]) -> None:
        self._backends = backends  # by location scheme
        self.ledger = RepoLedger()

    def fold(self, seq: int, body: dict[str, Any]) -> None:
        self.ledger.fold(seq, body)

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()

    def _backend(self, repo: RepoView) -> StorageBackend:
        scheme = urlsplit(repo.location).scheme
        backend = self._backends.get(scheme)
        if backend is None:
            raise PermanentError(
                f"this storage worker has no backend for {scheme}:// locations "
                f"(it serves {', '.join(sorted(self._backends))})"
            )
        return backend

    async def act(self, event: Event, *, last_attempt: bool) -> Result:
        """Bring the repo the event is about to its latest state."""
        repo = self.ledger.repos.get(event.fqn)
        if repo is None:
            log.warning("storage.unknown_repo", repo=event.fqn, seq=event.seq)
            return Result()
        neighbours = self.ledger.neighbours(repo)
        if not repo.live:

            async def remove() -> str:
                return await self._backend(repo).remove(repo, neighbours)

            outcome = await attempt(remove(), last_attempt=last_attempt)
            if outcome.ok:
                report = self._report(event, "record_storage_deleted", repo, outcome.detail)
                return Result([report])
            failed = self._report(
                event, "record_storage_failed", repo, outcome.detail, removal=True
            )
            return Result([failed], failure=outcome.detail)

        async def ensure() -> str:
            return await self._backend(repo).ensure(repo, neighbours)

        outcome = await attempt(ensure(), last_attempt=last_attempt)
        command = "record_storage_provisioned" if outcome.ok else "record_storage_failed"
        report = self._report(event, command, repo, outcome.detail)
        return Result([report], failure=None if outcome.ok else outcome.detail)

    @staticmethod
    def _report(event: Event, command: str, repo: RepoView, detail: str, **extra: Any) -> Report:
        return Report.of(
            NAME,
            event,
            command,
            repo.name,
            repo=repo.name,
            location=repo.location,
            detail=detail,
            **extra,
        )
