"""`tenantry.Client` over a real nats-server, command service and query service: every typed
method, refusals as exceptions carrying the wire code, retries that reuse the command id and
so write once, and `wait_for`."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest

import tenantry
from domain.authorization import Authorization
from domain.commands import CreateTeam
from domain.service import TenancyService
from projections.query_params import GetTeam, ListTeams
from tenantry.sdk.client import Client
from tenantry.sdk.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    QueryTimeout,
    TenantryError,
    Unavailable,
)
from tenantry.sdk.results import (
    AccessCheck,
    AccessInForce,
    AuditPage,
    CommandReply,
    MlRepo,
    QueryAnswer,
    StorageIntegration,
    Team,
    Workspace,
)
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer
from tests.integration.conftest import Bus
from tests.integration.test_bus_commands import (
    ACTORS,
    EVERY_COMMAND,
    EXPECTED_REFUSALS,
    LAST_REQUEST,
)
from tests.integration.views import Views

ADMIN = "user:root@example.com"


@pytest.fixture
async def client(nats_server: NatsServer, views: Views) -> AsyncIterator[Client]:
    async with await Client.connect(nats_server.url, actor=ADMIN) as connected:
        yield connected


def stored(bus: Bus) -> int:
    return bus.stored_positions()


# --- typed methods ------------------------------------------------------------------------


async def test_every_command_has_a_typed_method_that_the_service_accepts(
    bus: Bus, client: Client, nats_server: NatsServer
) -> None:
    # The steps another user sends (asking for access), each through a client of their own.
    others = {
        actor: await Client.connect(nats_server.url, actor=actor) for actor in ACTORS.values()
    }
    last_request = None
    try:
        for name, body in EVERY_COMMAND:
            sender = others.get(ACTORS.get(name, ""), client)
            method = getattr(sender, name)
            if body.get("request") == LAST_REQUEST:
                body = {**body, "request": last_request}
            if name in EXPECTED_REFUSALS:
                with pytest.raises(TenantryError) as refused:
                    await method(**body)
                assert refused.value.code == EXPECTED_REFUSALS[name]
                continue
            reply = await method(**body)
            assert isinstance(reply, CommandReply), name
            assert reply.events and not reply.replayed, name
            assert reply.position == stored(bus) == sender.position, name
            if name == "request_repo_access":
                last_request = reply.fqn
    finally:
        for other in others.values():
            await other.close()


async def test_models_are_sent_and_queries_answer_their_result_model(client: Client) -> None:
    reply = await client.send(CreateTeam(name="risk", members=["bo@example.com"]))
    assert isinstance(reply, CommandReply) and reply.events == ["team.created"]
    await client.send(CreateTeam(name="ops"))

    team = await client.query(GetTeam(name="risk"))
    assert team == Team(name="risk", members=["bo@example.com"])
    # A list comes whole, page after page, into the query's own result model.
    teams = await client.query(ListTeams(limit=1))
    assert teams == [Team(name="ops"), Team(name="risk", members=["bo@example.com"])]
    # By name: one raw page.
    raw = await client.query("list_teams", limit=1)
    assert isinstance(raw, QueryAnswer) and raw.data == [{"name": "ops", "members": []}]
    assert raw.next is not None and raw.position >= reply.position


async def test_queries_answer_models_and_read_the_clients_own_writes(client: Client) -> None:
    await client.register_cluster(
        name="prod-eu", region="eu-west-1", provider="aws-eks", environments=["prod", "dev"]
    )
    await client.register_storage_integration(
        name="s3-main", provider="s3", storage_root="s3://ml-bucket/repos", region="eu-west-1"
    )
    await client.create_ml_repo(name="fraud-models", storage_integration="s3-main")
    await client.create_team(name="risk", members=["bo@example.com"])
    await client.grant_repo_access(repo="fraud-models", subject="team:risk", role="viewer")
    created = await client.create_workspace(
        cluster="prod-eu",
        name="fraud",
        environment="prod",
        labels={"team": "risk"},
        ml_repo_access=[{"repo": "fraud-models", "role": "editor"}],
    )
    assert created.fqn == "prod-eu:fraud"
    assert created.events[0] == "workspace.created"

    # No explicit wait: a client's queries wait for its own last write by default.
    workspace = await client.get_workspace(fqn="prod-eu:fraud")
    assert isinstance(workspace, Workspace)
    assert (workspace.environment, workspace.is_production, workspace.labels) == (
        "prod",
        True,
        {"team": "risk"},
    )
    assert [w.fqn for w in await client.list_workspaces(production=True)] == ["prod-eu:fraud"]
    assert [c.name for c in await client.list_clusters(environment="dev")] == ["prod-eu"]
    assert [e.name for e in await client.list_environments()] == ["dev", "prod", "staging"]
    repo = await client.get_ml_repo(name="fraud-models")
    assert isinstance(repo, MlRepo)
    assert repo.location == "s3://ml-bucket/repos/fraud-models/"
    assert {g.subject: g.role for g in repo.grants} == {
        ADMIN: "admin",
        "team:risk": "viewer",
        "workspace:prod-eu:fraud": "editor",
    }
    assert await client.repo_access(repo="fraud-models") == repo.grants
    assert [r.name for r in await client.list_ml_repos(subject="user:bo@example.com")] == [
        "fraud-models"
    ]
    [via_team] = await client.subject_access(subject="user:bo@example.com")
    assert (via_team.repo, via_team.role, via_team.via) == ("fraud-models", "viewer", "team:risk")
    assert await client.check_access(
        subject="workspace:prod-eu:fraud", repo="fraud-models", action="write"
    ) == AccessCheck(allowed=True, role="editor", via="direct")
    [prod] = await client.environment_tags(environment="prod")
    assert (prod.clusters, prod.workspaces) == (["prod-eu"], ["prod-eu:fraud"])
    assert await client.list_teams() == [Team(name="risk", members=["bo@example.com"])]
    assert await client.get_team(name="risk") == Team(name="risk", members=["bo@example.com"])
    assert await client.list_storage_integrations() == [
        StorageIntegration(
            name="s3-main",
            provider="s3",
            storage_root="s3://ml-bucket/repos",
            region="eu-west-1",
        )
    ]
    page = await client.audit_log(fqn="prod-eu:fraud", limit=1)
    assert isinstance(page, AuditPage)
    assert page.events[0]["type"] == "workspace.created"
    assert page.next is not None


async def test_access_report_and_changes_over_time(client: Client) -> None:
    start = datetime.now(UTC)
    await client.register_storage_integration(
        name="s3-main", provider="s3", storage_root="s3://ml-bucket/repos"
    )
    await client.create_ml_repo(name="fraud-models", storage_integration="s3-main")
    await client.grant_repo_access(
        repo="fraud-models", subject="user:bo@example.com", role="viewer", reason="on call"
    )
    granted = datetime.now(UTC)
    await client.grant_repo_access(
        repo="fraud-models", subject="user:bo@example.com", role="editor"
    )
    report = await client.access_report(as_of=granted, repo="fraud-models")
    assert {(r.subject, r.role) for r in report} == {
        (ADMIN, "admin"),
        ("user:bo@example.com", "viewer"),
    }
    assert all(isinstance(r, AccessInForce) for r in report)
    changes = await client.access_changes(
        from_=start, to=datetime.now(UTC).isoformat(), subject="user:bo@example.com"
    )
    assert [(c.role, c.previous_role, c.actor) for c in changes] == [
        ("viewer", None, ADMIN),
        ("editor", "viewer", ADMIN),
    ]
    assert changes[0].reason == "on call"
    with pytest.raises(InvalidRequest):
        await client.access_changes(from_=granted, to=start)


# --- refusals as exceptions ---------------------------------------------------------------


async def test_refusals_raise_the_exception_of_their_wire_code(bus: Bus, client: Client) -> None:
    with pytest.raises(AlreadyExists) as exists:
        await client.create_environment(name="dev")
    assert exists.value.code == "already_exists"
    assert exists.value.details == {"kind": "environment", "name": "dev"}
    assert isinstance(exists.value, tenantry.TenantryError)

    await client.register_cluster(
        name="prod-eu", region="eu-west-1", provider="aws-eks", environments=["prod"]
    )
    with pytest.raises(PreconditionFailed) as rule:
        await client.create_workspace(cluster="prod-eu", name="fraud", environment="dev")
    assert rule.value.code == "precondition_failed"
    assert "prod" in rule.value.message

    with pytest.raises(Conflict) as conflict:
        await client.add_cluster_environment(
            cluster="prod-eu", environment="dev", expected_version=7
        )
    assert conflict.value.code == "conflict"

    with pytest.raises(NotFound) as missing:
        await client.get_workspace(fqn="prod-eu:ghost")
    assert (missing.value.code, missing.value.details["name"]) == ("not_found", "prod-eu:ghost")

    # A command the model refuses is never sent: nothing reaches the store.
    before = stored(bus)
    with pytest.raises(InvalidRequest) as invalid:
        await client.create_environment(name="Not A Label")
    assert invalid.value.details["errors"][0]["loc"] == ["name"]
    with pytest.raises(InvalidRequest):
        await client.command("create_environment", {"name": "qa", "colour": "#fff"})
    with pytest.raises(InvalidRequest):
        await client.create_environment(name="qa", command_id="not an id!")
    assert stored(bus) == before
    # The server's own validation_error (a query this client does not know) is the same class.
    with pytest.raises(InvalidRequest, match="unknown query"):
        await client.query("list_gadgets")


@pytest.mark.parametrize("admins", [frozenset({ADMIN})])
async def test_forbidden_is_an_exception_too(nats_server: NatsServer, views: Views) -> None:
    async with await Client.connect(nats_server.url, actor="user:eve@example.com") as eve:
        with pytest.raises(Forbidden) as refused:
            await eve.create_environment(name="qa")
    assert refused.value.code == "forbidden"


# --- retries: the same command id, written once -------------------------------------------


async def test_the_same_command_id_twice_writes_once(bus: Bus, client: Client) -> None:
    first = await client.create_team(name="risk", command_id="create-risk-1")
    after_first = stored(bus)
    again = await client.create_team(name="risk", command_id="create-risk-1")
    assert again == first.model_copy(update={"replayed": True})
    assert stored(bus) == after_first
    # The same id for another command is a conflict, not a replay.
    with pytest.raises(Conflict):
        await client.create_team(name="audit", command_id="create-risk-1")


async def test_a_request_that_times_out_on_a_paused_store_is_retried_and_applied_once(
    bus: Bus, nats_server: NatsServer, views: Views
) -> None:
    before = stored(bus)
    # Hold the event store's write lock: the command service decides the command, then waits
    # to save it, past the client's timeout; the client sends it again, same id, and again.
    lock = sqlite3.connect(bus.store_env["SQLITE_DBNAME"], isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")

    async def release_later() -> None:
        await asyncio.sleep(1.2)
        lock.execute("ROLLBACK")

    releasing = asyncio.create_task(release_later())
    async with await Client.connect(
        nats_server.url, actor=ADMIN, timeout=0.3, retries=10, backoff=0.05
    ) as impatient:
        reply = await impatient.create_team(name="risk", members=["bo@example.com"])
    await releasing
    lock.close()
    # The answer came to a retry: the first attempt had been written meanwhile, once.
    assert reply.replayed is True
    assert reply.events == ["team.created"]
    created = [
        n
        for n in bus.service.recorder.select_notifications(before + 1, 100)
        if n.topic.endswith("Team.Created")
    ]
    assert len(created) == 1
    assert stored(bus) == reply.position


async def test_no_responder_is_retried_until_the_service_is_back(
    nats_server: NatsServer, sqlite_env: dict[str, str]
) -> None:
    # No command service yet: it starts a little after the client has begun sending.
    service = TenancyService(sqlite_env, authorization=Authorization(admins=None))
    service_nc = await nats.connect(nats_server.url)
    endpoint = CommandEndpoint(service_nc, service)

    async def start_later() -> None:
        await asyncio.sleep(0.6)
        await endpoint.start()

    starting = asyncio.create_task(start_later())
    try:
        async with await Client.connect(
            nats_server.url, actor=ADMIN, retries=8, backoff=0.1
        ) as client:
            reply = await client.create_team(name="risk")
        assert reply.events == ["team.created"] and not reply.replayed
        assert service.recorder.max_notification_id() == reply.position
    finally:
        await starting
        await endpoint.stop()
        await service_nc.drain()
        service.close()


async def test_a_command_that_never_gets_an_answer_raises_unavailable_with_its_id(
    nats_server: NatsServer,
) -> None:
    # No command service at all: every attempt finds no responder.
    async with await Client.connect(
        nats_server.url, actor=ADMIN, retries=2, backoff=0.01
    ) as client:
        with pytest.raises(Unavailable) as unavailable:
            await client.create_team(name="risk", command_id="team-risk-7")
    assert unavailable.value.details["command_id"] == "team-risk-7"
    assert unavailable.value.details["attempts"] == 3
    # Nobody received it (no responders, never a timeout): it was not applied, and says so.
    assert "the command was not applied" in unavailable.value.message
    assert unavailable.value.details["applied"] is False


# --- wait_for -----------------------------------------------------------------------------


async def test_wait_for_returns_once_the_views_have_the_position(
    nats_server: NatsServer, views: Views
) -> None:
    async with await Client.connect(nats_server.url, actor=ADMIN, read_your_writes=False) as client:
        await views.pause()
        reply = await client.create_team(name="risk")
        # Without read-your-writes the query answers what the paused views have.
        assert await client.list_teams() == []
        with pytest.raises(QueryTimeout) as late:
            await client.wait_for(reply.position, timeout=0.3)
        assert late.value.details["min_position"] == reply.position
        waiting = asyncio.create_task(client.wait_for(reply.position, timeout=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        views.resume()
        assert await waiting >= reply.position
        assert [t.name for t in await client.list_teams()] == ["risk"]


async def test_connect_finds_the_bus_like_the_cli(
    bus: Bus, nats_server: NatsServer, views: Views, tmp_path: Path, monkeypatch: Any
) -> None:
    state = tmp_path / "cli-state"
    state.mkdir()
    (state / "nats.url").write_text(nats_server.url + "\n")
    monkeypatch.delenv("TENANTRY_NATS_URL", raising=False)
    monkeypatch.setenv("TENANTRY_STATE_DIR", str(state))
    monkeypatch.setenv("TENANTRY_ACTOR", "user:ana@example.com")
    async with await tenantry.Client.connect() as client:
        assert client.actor == "user:ana@example.com"
        seeded = await client.list_environments(min_position=stored(bus))
        assert [e.name for e in seeded] == ["dev", "prod", "staging"]
    with pytest.raises(Unavailable, match="cannot reach the bus"):
        await tenantry.Client.connect("nats://127.0.0.1:1", max_reconnect_attempts=1)
