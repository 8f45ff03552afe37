"""`tenantry.cmd.apply` on a real bus over a real store, SQLite and PostgreSQL alike: a plan
refused at its third command writes nothing (one transaction), a dry run answers the same
refusal, the same apply id replays the first reply, and an apply over 64 KiB is refused whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from domain.service import TenancyService
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer
from tenantry.server.wire import MAX_BODY_BYTES
from tests.integration.backends import OnPostgres, OnSQLite

ADMIN = "user:root@example.com"
CHAIN: list[dict[str, Any]] = [
    {"command": "create_environment", "body": {"name": "gpu"}},
    {"command": "register_storage_integration",
     "body": {"name": "s3-main", "provider": "s3", "storage_root": "s3://ml-bucket/repos"}},
    {"command": "register_cluster",
     "body": {"name": "gpu-eu", "region": "eu-west-1", "provider": "generic",
              "environments": ["gpu"]}},
    {"command": "create_workspace",
     "body": {"cluster": "gpu-eu", "name": "train", "environment": "gpu"}},
]  # fmt: skip
# The third command names an environment nobody has.
REFUSED = [*CHAIN[:2], {**CHAIN[2], "body": {**CHAIN[2]["body"], "environments": ["nowhere"]}}]


class ApplyOnTheBus:
    """Subclasses provide `store_env` (the `service` on it is the conftest's)."""

    @pytest.fixture
    async def client(
        self, nats_server: NatsServer, service: TenancyService
    ) -> AsyncIterator[Client]:
        service_nc = await nats.connect(nats_server.url)
        endpoint = CommandEndpoint(service_nc, service)
        await endpoint.start()
        client = await nats.connect(nats_server.url)
        yield client
        await client.close()
        await endpoint.stop()
        await service_nc.drain()

    async def _apply(
        self,
        client: Client,
        commands: list[dict[str, Any]] | bytes,
        apply_id: str,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        body = (
            commands
            if isinstance(commands, bytes)
            else json.dumps({"commands": commands, "dry_run": dry_run}).encode()
        )
        headers = {"Tenantry-Command-Id": apply_id, "Tenantry-Actor": ADMIN}
        reply = await client.request("tenantry.cmd.apply", body, timeout=20, headers=headers)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    def _stored(self, service: TenancyService) -> list[tuple[int, str]]:
        return [(n.id, n.topic) for n in service.recorder.select_notifications(None, 100_000)]

    async def test_refused_at_the_third_command_nothing_is_written(
        self, client: Client, service: TenancyService
    ) -> None:
        before = self._stored(service)
        dry = await self._apply(client, REFUSED, "dry-1", dry_run=True)
        refused = await self._apply(client, REFUSED, "apply-1")
        assert self._stored(service) == before
        for answer in (dry, refused):
            assert answer["ok"] is False
            assert answer["error"]["code"] == "precondition_failed"
            assert answer["error"]["details"]["index"] == 2
            assert answer["error"]["details"]["command"] == "register_cluster"
        assert dry["error"] == refused["error"]

    async def test_one_transaction_and_the_same_id_replays_the_first_reply(
        self, client: Client, service: TenancyService
    ) -> None:
        before = service.recorder.max_notification_id() or 0
        dry = await self._apply(client, CHAIN, "apply-2", dry_run=True)
        assert dry["ok"] and dry["dry_run"] and dry["position"] is None
        assert (service.recorder.max_notification_id() or 0) == before
        first = await self._apply(client, CHAIN, "apply-2")
        assert first["ok"], first
        assert [c["command"] for c in first["commands"]] == [c["command"] for c in CHAIN]
        assert [c["events"] for c in first["commands"]] == [c["events"] for c in dry["commands"]]
        written = [n for n in self._stored(service) if n[0] > before]
        # Every event of the four commands and the apply's record, at consecutive positions,
        # the record last: one transaction.
        assert [p for p, _ in written] == list(range(before + 1, before + 1 + len(written)))
        assert len(written) == 1 + sum(len(c["events"]) for c in first["commands"])
        assert written[-1][1].endswith("ApplyRecord.Handled")
        assert first["position"] == written[-1][0]
        again = await self._apply(client, CHAIN, "apply-2")
        assert again == {**first, "replayed": True}
        other = await self._apply(client, CHAIN[:1], "apply-2")
        assert other["ok"] is False and other["error"]["code"] == "conflict"
        assert [n for n in self._stored(service) if n[0] > before] == written

    async def test_an_apply_over_the_limit_is_refused_whole(
        self, client: Client, service: TenancyService
    ) -> None:
        many = [
            {"command": "create_team", "body": {"name": f"team-{i:04d}", "members": []}}
            for i in range(2000)
        ]
        body = json.dumps({"commands": many}).encode()
        assert len(body) > MAX_BODY_BYTES
        before = self._stored(service)
        answer = await self._apply(client, body, "big-1")
        assert answer["ok"] is False
        assert answer["error"]["code"] == "validation_error"
        assert answer["error"]["details"] == {"bytes": len(body), "max_bytes": MAX_BODY_BYTES}
        assert "not split" in answer["error"]["message"]
        assert self._stored(service) == before

    async def test_the_client_sends_an_apply_and_refuses_one_over_the_limit_before_sending(
        self, nats_server: NatsServer, client: Client, service: TenancyService
    ) -> None:
        from domain.commands import COMMANDS, CreateEnvironment, CreateTeam
        from tenantry.sdk.client import Client as TenantryClient
        from tenantry.sdk.errors import AlreadyExists, InvalidRequest

        async with await TenantryClient.connect(nats_server.url, actor=ADMIN) as sdk:
            commands = [COMMANDS[c["command"]].model_validate(c["body"]) for c in CHAIN]
            reply = await sdk.apply(commands, command_id="sdk-1")
            assert reply.position is not None and sdk.position == reply.position
            assert [c.command for c in reply.commands] == [c["command"] for c in CHAIN]
            before = self._stored(service)
            with pytest.raises(AlreadyExists) as refused:
                await sdk.apply([CreateEnvironment(name="qa"), CreateEnvironment(name="qa")])
            assert refused.value.details["index"] == 1
            many = [CreateTeam(name=f"team-{i:04d}", members=[]) for i in range(2000)]
            with pytest.raises(InvalidRequest, match="not split"):
                await sdk.apply(many)
            assert self._stored(service) == before


class TestApplyOnSQLite(OnSQLite, ApplyOnTheBus):
    pass


@pytest.mark.postgres
class TestApplyOnPostgres(OnPostgres, ApplyOnTheBus):
    pass
