"""An event as the workers read it from the stream, and a report they send back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid5


@dataclass(frozen=True)
class Event:
    """One message of TENANTRY_EVENTS: its stream sequence and its body (DESIGN §4)."""

    seq: int
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def fqn(self) -> str:
        return str(self.body["fqn"])

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.body.get("data") or {}
        return data

    @property
    def position(self) -> int:
        return int(self.body["position"])

    @property
    def actor(self) -> str:
        return str(self.body.get("actor", ""))

    @property
    def correlation_id(self) -> str:
        return str(self.body.get("correlation_id", ""))

    def describe(self) -> str:
        return f"{self.type} of {self.fqn} at position {self.position} by {self.actor}"


@dataclass(frozen=True)
class Report:
    """A `record_*` command about the outcome of an action.

    Its command id is derived from the event, the outcome and the thing reported on, so a
    redelivered event's report is answered from the command service's idempotency record
    instead of recording the outcome twice."""

    command: str
    body: dict[str, Any]
    command_id: str

    @classmethod
    def of(cls, worker: str, event: Event, command: str, about: str, **body: Any) -> Report:
        outcome = command.rsplit("_", 1)[-1]  # provisioned, failed, deleted
        key = uuid5(UUID(event.id), f"{about}\n{outcome}")
        return cls(command, body, f"{worker}:{key}")


@dataclass(frozen=True)
class Result:
    """What handling one event came to: the reports to send and, if the action failed for
    good, why (the message is then terminated instead of acknowledged)."""

    reports: list[Report] = field(default_factory=list)
    failure: str | None = None
