"""Work that falls due: deadlines kept in the log, acted on by the scheduler.

A kind of due work (a class registered with `@due_work`) declares the event classes it folds
(`observes`), folds those published events of the log, in order (`observe(body)`, the body of
DESIGN §4: `type`, `fqn`, `id`, `occurred_at`, `data`…), and answers the commands due at a
moment (`due(at)`), each as a `DueCommand` with a deterministic command id (`due_command_id`).
The scheduler (`tenantry.server.scheduler`, run by every command service) keeps one instance of
each kind, asks the event store for the declared events only (by topic: the other events of
the log cost it nothing, at its start either, when it folds the whole log), feeds each kind the
events it declared, and every TENANTRY_EXPIRY_INTERVAL seconds sends what is due as
`service:tenantry`. An event type whose body `observe` reads beyond its `type` must be declared
(tests/unit/test_due_work.py holds every kind to it).

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
from typing import Any, ClassVar, Protocol, TypeVar

from eventsourcing.utils import get_topic

from domain.commands import Command
from domain.event_log import event_type_of_topic


@dataclass(frozen=True)
class DueCommand:
    """A command due now, under the id that makes sending it twice harmless."""

    command: Command
    command_id: str


class DueWork(Protocol):
    # The event classes `observe` folds (`MlRepo.AccessGranted`, …): the scheduler reads only
    # those from the store, and hands this kind nothing else.
    observes: ClassVar[tuple[type[Any], ...]]

    def observe(self, body: Mapping[str, Any]) -> None:
        """Fold one published event of a declared class (each comes here, in log order)."""

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


def events_of(aggregate: type[Any], *names: str) -> tuple[type[Any], ...]:
    """The event classes `names` of `aggregate` (`events_of(MlRepo, "AccessRevoked")`), those
    its `@event("…")` methods define too (invisible to a type checker as attributes); a name it
    does not define fails at import."""
    found = tuple(getattr(aggregate, name) for name in names)
    for name, cls in zip(names, found, strict=True):
        if not (isinstance(cls, type) and issubclass(cls, aggregate.Event)):
            raise TypeError(f"{aggregate.__name__}.{name} is not an event class")
    return found


def event_type(event_class: type[Any]) -> str:
    """The published type of an event class: `MlRepo.AccessGranted` -> `ml_repo.access_granted`
    (by its stored topic, as the published log names it)."""
    return event_type_of_topic(get_topic(event_class))[1]


def due_command_id(kind: str, key: str) -> str:
    """The command id of the due item `key` of `kind`: `due#<kind>#<key>`. `#` is outside
    what the bus accepts in a command id, so no client can take an id the scheduler will use."""
    return f"due#{kind}#{key}"


def parse_time(value: str) -> datetime:
    """A time as published (`2026-11-29T11:27:36.027293Z`) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
