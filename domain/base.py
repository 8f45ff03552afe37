"""The base event and aggregate classes, and the command context every event records."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
)
from pydantic import BaseModel, ConfigDict, Field

from domain.clock import Clock, system_clock


@dataclass(frozen=True)
class CommandContext:
    """Who asked for the change now being made, and under which ids."""

    actor: str
    command_id: str
    correlation_id: str


_current: ContextVar[CommandContext | None] = ContextVar("tenantry_command", default=None)
_clock: ContextVar[Clock] = ContextVar("tenantry_clock", default=system_clock)
# The moment the current `acting_as` decides at (`now`), read once, and whether an event has
# taken it as its time yet.
_decision: ContextVar[_Decision | None] = ContextVar("tenantry_decision", default=None)
# The events triggered inside the current `acting_as`, in the order they were triggered.
_triggered: ContextVar[list[Any] | None] = ContextVar("tenantry_triggered", default=None)


@contextmanager
def acting_as(context: CommandContext, clock: Clock = system_clock) -> Iterator[CommandContext]:
    """Every event triggered inside records this context's actor and ids, and the time `clock`
    answers when the event is triggered."""
    token = _current.set(context)
    clock_token = _clock.set(clock)
    triggered = _triggered.set([])
    decision = _decision.set(_Decision())
    try:
        yield context
    finally:
        _decision.reset(decision)
        _triggered.reset(triggered)
        _clock.reset(clock_token)
        _current.reset(token)


@dataclass
class _Decision:
    at: datetime | None = None
    taken: bool = False


def _now() -> datetime:
    decision = _decision.get()
    if decision is not None and decision.at is not None and not decision.taken:
        decision.taken = True  # the next event bears the moment the command decided at
        return decision.at
    return _clock.get()()


def now() -> datetime:
    """The moment the command being decided decides at, by its clock: read once per command
    (the same answer every time it is asked), and the time its next event bears, so that a
    deadline counted from it is counted from that event (a grant's `granted_at` + duration)."""
    decision = _decision.get()
    if decision is None:
        return _clock.get()()
    if decision.at is None:
        decision.at = _clock.get()()
    return decision.at


def current_command_id() -> str:
    """The id of the command (or apply) being decided."""
    return _context().command_id


def _note_triggered(event: Any) -> None:
    triggered = _triggered.get()
    if triggered is not None:
        triggered.append(event)


def in_trigger_order(events: Iterable[Any]) -> list[Any]:
    """Events triggered inside the current `acting_as`, in the order they were triggered.

    Not by timestamp: a wall clock that steps back during a command (or two events in the same
    microsecond) would reorder them, even an aggregate's own versions."""
    order = {id(event): index for index, event in enumerate(_triggered.get() or [])}
    return sorted(events, key=lambda event: order[id(event)])


def _context() -> CommandContext:
    context = _current.get()
    if context is None:
        raise RuntimeError("events can only be triggered inside acting_as(...)")
    return context


class DomainEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    originator_id: UUID
    originator_version: int
    timestamp: datetime = Field(default_factory=_now)
    actor: str = Field(default_factory=lambda: _context().actor)
    command_id: str = Field(default_factory=lambda: _context().command_id)
    correlation_id: str = Field(default_factory=lambda: _context().correlation_id)
    # The FQN of the aggregate the event belongs to: published with every event.
    fqn: str


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Aggregate(BaseAggregate[UUID]):
    """Base of Tenantry's aggregates: pydantic events, ids derived from natural keys.

    The natural key (the arguments of `create_id`) joined with ':' is the aggregate's FQN, and
    every event carries it."""

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        @staticmethod
        def create_timestamp() -> datetime:
            # eventsourcing stamps events through this hook: the command's clock, not its own.
            return _now()

        def mutate(self, aggregate: Any) -> Any:
            # Lets an @event method see who made the change and when (a grant records both).
            if aggregate is not None:
                aggregate.last_event = self
            result: Any = super().mutate(aggregate)
            result.last_event = self
            result._fqn = self.fqn
            return result

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str

    last_event: DomainEvent
    _fqn: str

    @classmethod
    def _create(cls, event_class: Any, *, id: UUID | None = None, **kwargs: Any) -> Any:
        kwargs["fqn"] = ":".join(str(kwargs[name]) for name in _natural_key(cls))
        aggregate = super()._create(event_class, id=id, **kwargs)
        _note_triggered(aggregate.pending_events[-1])
        return aggregate

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        super().trigger_event(event_class, fqn=self._fqn, **kwargs)
        _note_triggered(self.pending_events[-1])

    @classmethod
    def kind(cls) -> str:
        """The aggregate's name on the wire: `workspace`, `ml_repo`, …"""
        return snake_case(cls.__name__)

    def fqn(self) -> str:
        return self._fqn

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """The copy a command gets of a cached aggregate (eventsourcing's repository hands out
        deep copies, so that a refused command's changes never reach the cache).

        An aggregate's state is immutable values (text, numbers, times, frozen dataclasses,
        the frozen last event) and flat containers of them: copying the containers is a deep
        copy, without walking every value (`copy.deepcopy` spent most of its time in pydantic's
        events). `tests/unit/test_aggregate_copies.py` holds every aggregate to that shape."""
        clone = object.__new__(type(self))
        state = clone.__dict__
        for name, value in self.__dict__.items():
            state[name] = value.copy() if type(value) in _CONTAINERS else value
        memo[id(self)] = clone
        return clone


_CONTAINERS = (dict, set, list)


@functools.cache
def _natural_key(cls: type) -> tuple[str, ...]:
    """The parameters of `cls.create_id`, which name an aggregate (read once per class)."""
    return tuple(inspect.signature(cls.create_id).parameters)  # type: ignore[attr-defined]


def event_type(event: Any) -> str:
    """`workspace.created`, `ml_repo.access_granted`: the wire name of a domain event."""
    cls = type(event)
    name = _TYPE_NAMES.get(cls)
    if name is None:  # worked out once per class
        owner = cls.__qualname__.split(".")[0]
        name = _TYPE_NAMES[cls] = f"{snake_case(owner)}.{snake_case(cls.__name__)}"
    return name


_TYPE_NAMES: dict[type, str] = {}
