"""The scheduler's due work for expiring grants: `ml_repo.access_expired` for every grant whose
deadline passed (`domain.due`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from domain.commands import ExpireRepoAccess
from domain.due import DueCommand, due_command_id, due_work, event_type, events_of, parse_time
from domain.ml_repo import MlRepo


@due_work
class GrantExpiry:
    """The deadlines of the grants in force: (repo, subject) -> (expires_at, the id of the
    granting event). A grant's expiry is named by its granting event, so a later grant of the
    same subject (an extension) is a new item with its own command id."""

    # A grant, and what ends one (a grant without deadline replaces it).
    observes: ClassVar[tuple[type[Any], ...]] = events_of(
        MlRepo, "AccessGranted", "AccessRevoked", "AccessExpired"
    )

    def __init__(self) -> None:
        self._deadlines: dict[tuple[str, str], tuple[datetime, str]] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        kind = body["type"]
        if kind not in _OBSERVED:
            return
        key = (str(body["fqn"]), str(body["data"]["subject"]))
        expires_at = body["data"].get("expires_at")
        if kind == "ml_repo.access_granted" and expires_at:
            self._deadlines[key] = (parse_time(expires_at), str(body["id"]))
        else:
            self._deadlines.pop(key, None)

    def due(self, at: datetime) -> list[DueCommand]:
        return [
            DueCommand(
                ExpireRepoAccess(repo=repo, subject=subject, expires_at=expires_at),
                due_command_id("ml_repo.access_expired", grant_id),
            )
            for (repo, subject), (expires_at, grant_id) in sorted(
                self._deadlines.items(), key=lambda item: item[1]
            )
            if expires_at <= at
        ]


_OBSERVED = frozenset(event_type(observed) for observed in GrantExpiry.observes)
