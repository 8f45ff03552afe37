"""Work that falls due: deadlines kept in the log, acted on by the scheduler.

A kind of due work (a class registered with `@due_work`) folds the published events of the log,
in order (`observe(body)`, the body of DESIGN §4: `type`, `fqn`, `id`, `occurred_at`, `data`…),
and answers the commands due at a moment (`due(at)`), each as a `DueCommand` with a
deterministic command id (`due_command_id`). The scheduler (`tenantry.server.scheduler`, run by
every command service) keeps one instance of each kind, feeds it the log, and every
TENANTRY_EXPIRY_INTERVAL seconds sends what is due as `service:tenantry`.

Exactly once, across restarts and across several command services, comes from two things, not
from the scheduler: the command id (the same item always gets the same id, and a command id
is handled once: a second sender gets the first answer), and the aggregate, which changes nothing
when the work is already done or no longer applies (revoked, replaced, closed). So `due` may
answer an item again until the event that settles it is folded, and a stale or restarted
scheduler does no harm.

Such commands declare `policy = System()` and stay out of `COMMANDS` (not on the bus). Register
a kind in a module `domain.handlers` imports (the scheduler imports it, so every kind is
registered before it starts); `GrantExpiry` (domain.grant_expiry) is the example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from domain.commands import Command


@dataclass(frozen=True)
class DueCommand:
    """A command due now, under the id that makes sending it twice harmless."""

    command: Command
    command_id: str


class DueWork(Protocol):
    def observe(self, body: Mapping[str, Any]) -> None:
        """Fold one published event (every event of the log comes here, in log order)."""

    def due(self, at: datetime) -> list[DueCommand]:
        """The commands due at `at` (deadline <= at), by what was observed so far."""


W = TypeVar("W", bound=Callable[[], DueWork])
_KINDS: list[Callable[[], DueWork]] = []


def due_work(kind: W) -> W:
    """Register a kind of due work (a class, or any callable making a fresh instance)."""
    _KINDS.append(kind)
    return kind


def registered() -> tuple[Callable[[], DueWork], ...]:
    """Every registered kind (import `domain.handlers` first)."""
    return tuple(_KINDS)


def due_command_id(kind: str, key: str) -> str:
    """The command id of the due item `key` of `kind`: `due#<kind>#<key>`. `#` is outside
    what the bus accepts in a command id, so no client can take an id the scheduler will use."""
    return f"due#{kind}#{key}"


def parse_time(value: str) -> datetime:
    """A time as published (`2026-11-29T11:27:36.027293Z`) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
