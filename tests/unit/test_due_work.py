"""Every kind of due work declares the events it folds (`DueWork.observes`): the scheduler asks
the store for those only, so an event type a kind reacted to without declaring it would never
reach it. Held here for every registered kind against every event class of the domain."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from eventsourcing.utils import get_topic

from domain import handlers  # noqa: F401  (every kind of due work and every aggregate loaded)
from domain.base import Aggregate
from domain.due import DueWork, event_type, events_of, registered
from domain.event_log import INTERNAL_TOPICS, event_type_of_topic
from domain.ml_repo import MlRepo


def _published_types() -> set[str]:
    """The type of every event class of every aggregate of the domain, as published."""

    def walk(cls: type[Aggregate]) -> list[type[Aggregate]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *walk(sub))]

    topics = {
        get_topic(attr)
        for aggregate in walk(Aggregate)
        if aggregate.__module__.startswith("domain.")
        for _, attr in inspect.getmembers(aggregate, inspect.isclass)
        if issubclass(attr, Aggregate.Event)
    }
    return {event_type_of_topic(topic)[1] for topic in topics - INTERNAL_TOPICS}


class _Read(Exception):
    """`observe` looked at the event beyond its type."""


class _Body(Mapping[str, Any]):
    """A body that answers its `type` and stops `observe` at any other key."""

    def __init__(self, type_: str) -> None:
        self.type = type_

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            return self.type
        raise _Read(key)

    def __iter__(self) -> Iterator[str]:
        raise _Read("iteration")

    def __len__(self) -> int:
        raise _Read("len")


def _reads(work: DueWork, type_: str) -> bool:
    try:
        work.observe(_Body(type_))
    except _Read:
        return True
    return False


KINDS = registered()


def test_the_catalog_and_the_kinds_are_there() -> None:
    types = _published_types()
    assert {"ml_repo.access_granted", "team.created", "access_review.closed"} <= types
    assert "command_record.handled" not in types
    assert len(KINDS) >= 3


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: getattr(kind, "__name__", str(kind)))
def test_a_kind_reads_exactly_the_events_it_declared(kind: Any) -> None:
    """An undeclared type is dismissed on its `type` alone; a declared one is looked at (a
    declaration that nothing reads would be a stale one)."""
    declared = {event_type(observed) for observed in kind().observes}
    types = _published_types()
    assert declared <= types
    read = {type_ for type_ in types if _reads(kind(), type_)}
    assert read == declared


def test_events_of_names_only_event_classes() -> None:
    assert event_type(events_of(MlRepo, "AccessRevoked")[0]) == "ml_repo.access_revoked"
    with pytest.raises(AttributeError):
        events_of(MlRepo, "AccessRevokd")
    with pytest.raises(TypeError):
        events_of(MlRepo, "grant")
