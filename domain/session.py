"""One attempt at handling a command: the aggregates it loaded or created, saved together."""

from __future__ import annotations

import json
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.utils import get_topic

from domain.access_request import Governance
from domain.base import Aggregate
from domain.errors import Conflict, NotFound, PreconditionFailed

A = TypeVar("A", bound=Aggregate)

_LABELS = {
    "Environment": "environment",
    "Cluster": "cluster",
    "Workspace": "workspace",
    "Application": "application",
    "StorageIntegration": "storage integration",
    "MlRepo": "ML repo",
    "Team": "team",
    "AccessRequest": "access request",
    "AccessReview": "access review",
}


class Session:
    def __init__(self, repository: Repository[UUID], governance: Governance | None = None) -> None:
        self._repository = repository
        # The deployment's settings for access requests (their TTL, production's longest grant).
        self.governance = governance or Governance()
        # Access requests opened in this session so far: the next one's ordinal (its id).
        self.requests_opened = 0
        self._aggregates: dict[UUID, Aggregate] = {}
        self._looked_up: set[UUID] = set()

    def find(self, cls: type[A], *key: str) -> A | None:
        """The aggregate named `key`, live or not, or None if it never existed."""
        aggregate_id = cls.create_id(*key)
        self._looked_up.add(aggregate_id)
        if aggregate_id in self._aggregates:
            return self._aggregates[aggregate_id]  # type: ignore[return-value]
        try:
            aggregate: Aggregate = self._repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, cls):
            raise TypeError(f"{aggregate_id} is a {type(aggregate).__name__}, not a {cls.__name__}")
        self._aggregates[aggregate_id] = aggregate
        return aggregate

    def get(self, cls: type[A], *key: str, expected_version: int | None = None) -> A:
        """The live aggregate named `key`, or NotFound; Conflict if `expected_version` differs."""
        aggregate = self.find(cls, *key)
        if aggregate is None or not getattr(aggregate, "live", True):
            label = _LABELS.get(cls.__name__, cls.__name__)
            name = ":".join(key)
            raise NotFound(f"{label} {name!r} does not exist", kind=cls.kind(), name=name)
        check_version(aggregate, expected_version)
        return aggregate

    def referred(self, cls: type[A], name: str, field: str) -> A:
        """The live aggregate named `name` that a command refers to (not the one it is about):
        one that does not exist is a broken precondition, reported under the command's `field`."""
        aggregate = self.find(cls, name)
        if aggregate is None or not getattr(aggregate, "live", True):
            label = _LABELS.get(cls.__name__, cls.__name__)
            raise PreconditionFailed(f"{label} {name!r} does not exist", **{field: name})
        return aggregate

    def names_of(self, cls: type[A]) -> list[str]:
        """The natural keys (FQNs) of every aggregate of `cls` ever created, sorted: read from
        the store's log of `cls.Created` events (there is no other list of them). A full read
        of the log's index by topic: for rare commands (opening an access review of `all`)."""
        recorder = self._repository.event_store.recorder
        assert isinstance(recorder, ApplicationRecorder)
        topic = get_topic(cls.Created)
        names: set[str] = set()
        start = 0
        while True:
            rows = recorder.select_notifications(
                start, 1000, topics=[topic], inclusive_of_start=False
            )
            for row in rows:
                names.add(str(json.loads(row.state)["fqn"]))
                start = row.id
            if len(rows) < 1000:
                return sorted(names)

    def add(self, aggregate: A) -> A:
        self._aggregates[aggregate.id] = aggregate
        return aggregate

    def touched(self) -> frozenset[UUID]:
        """Every aggregate this attempt read (found or not) or wrote."""
        return frozenset(self._looked_up | set(self._aggregates))

    def changed(self) -> list[Any]:
        """Aggregates with pending events, in the order they were first touched."""
        return [a for a in self._aggregates.values() if a.pending_events]


def check_version(aggregate: Aggregate, expected_version: int | None) -> None:
    if expected_version is not None and aggregate.version != expected_version:
        raise Conflict(
            f"{aggregate.kind()} {aggregate.fqn()!r} is at version {aggregate.version}, "
            f"not {expected_version}",
            fqn=aggregate.fqn(),
            expected_version=expected_version,
            actual_version=aggregate.version,
        )
