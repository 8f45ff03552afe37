"""The unit tests' service: in memory, commands sent by wire name, refusals that write nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

import pytest

from domain.authorization import Authorization
from domain.base import Aggregate, CommandContext, snake_case
from domain.commands import COMMANDS
from domain.errors import DomainError
from domain.service import TenancyService
from tenantry.protocol import CommandReply

ADMIN = "user:ana@example.com"
ALICE = "user:alice@example.com"
BOB = "user:bob@example.com"

STORES: dict[str, dict[str, str]] = {
    "popo": {"PERSISTENCE_MODULE": "eventsourcing.popo"},
    "sqlite": {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"},
}

A = TypeVar("A", bound=Aggregate)
E = TypeVar("E", bound=DomainError)


class Tenancy:
    """A command service plus the few moves every test makes: send, expect a refusal, look."""

    def __init__(self, svc: TenancyService) -> None:
        self.svc = svc

    def run(
        self,
        name: str,
        body: dict[str, Any],
        actor: str = ADMIN,
        command_id: str | None = None,
        correlation_id: str | None = None,
    ) -> CommandReply:
        command = COMMANDS[name].model_validate(body)
        context = CommandContext(
            actor, command_id or str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
        )
        return self.svc.handle(command, context)

    def allow(self, name: str, body: dict[str, Any], actor: str = ADMIN) -> CommandReply:
        """Send a command that must be accepted: it writes events, each recorded with `actor`,
        and its answer names exactly the domain events it wrote."""
        before = self.position()
        result = self.run(name, body, actor=actor)
        written = [e for e in self.events(before) if e["type"] != "command_record.handled"]
        assert written, f"{name} by {actor} wrote no event"
        assert {e["actor"] for e in written} == {actor}
        assert [e["type"] for e in written] == result.events
        return result

    def refuse(
        self,
        name: str,
        body: dict[str, Any],
        error: type[E],
        code: str,
        actor: str = ADMIN,
        command_id: str | None = None,
    ) -> E:
        """Send a command that must be refused with `error` (and wire `code`), writing nothing."""
        before = self.position()
        with pytest.raises(DomainError) as info:
            self.run(name, body, actor=actor, command_id=command_id)
        assert type(info.value) is error, f"{name} raised {info.value!r}, not {error.__name__}"
        assert info.value.code == code
        assert self.position() == before, f"refused {name} wrote events"
        return info.value  # type: ignore[return-value]

    def position(self) -> int:
        return self.svc.recorder.max_notification_id() or 0

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """Stored events after position `after`, decoded, with their wire `type`."""
        decoded = []
        for n in self.svc.recorder.select_notifications(None, 100_000):
            if n.id <= after:
                continue
            owner, _, name = n.topic.partition(":")[2].partition(".")
            decoded.append(
                {
                    "position": n.id,
                    "type": f"{snake_case(owner)}.{snake_case(name)}",
                    "originator_id": n.originator_id,
                    "originator_version": n.originator_version,
                    **json.loads(n.state),
                }
            )
        return decoded

    def types(self, after: int = 0) -> list[str]:
        """The domain event types after `after` (the command records left out)."""
        return [e["type"] for e in self.events(after) if e["type"] != "command_record.handled"]

    def aggregate(self, cls: type[A], *key: str) -> A:
        found: A = self.svc.repository.get(cls.create_id(*key))  # type: ignore[attr-defined]
        return found

    # A small world to act in: the names the tests share.

    def cluster(
        self, name: str = "prod-eu", environments: tuple[str, ...] = ("dev", "prod")
    ) -> str:
        self.run(
            "register_cluster",
            {
                "name": name,
                "region": "eu-west-1",
                "provider": "aws-eks",
                "environments": list(environments),
            },
        )
        return name

    def workspace(
        self,
        cluster: str = "prod-eu",
        name: str = "fraud",
        environment: str = "prod",
        **fields: Any,
    ) -> str:
        self.run(
            "create_workspace",
            {"cluster": cluster, "name": name, "environment": environment, **fields},
        )
        return f"{cluster}:{name}"

    def integration(self, name: str = "s3-main", root: str = "s3://ml-bucket/repos") -> str:
        self.run(
            "register_storage_integration", {"name": name, "provider": "s3", "storage_root": root}
        )
        return name

    def repo(
        self, name: str = "fraud-models", integration: str = "s3-main", actor: str = ADMIN
    ) -> str:
        self.run("create_ml_repo", {"name": name, "storage_integration": integration}, actor=actor)
        return name

    def team(self, name: str = "risk", members: tuple[str, ...] = ()) -> str:
        self.run("create_team", {"name": name, "members": list(members)})
        return name


def make_tenancy(
    store: str = "popo", authorization: Authorization | None = None, seed: bool = True
) -> Tenancy:
    svc = TenancyService(STORES[store], authorization=authorization)
    if seed:
        assert svc.seed_default_environments()
    return Tenancy(svc)
