"""Authentication and authorization on the bus, with real credentials against a real
nats-server running the production accounts file (deploy/nats-accounts.conf)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from domain.authorization import Authorization
from domain.event_log import STREAM_NAME
from domain.service import TenancyService
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.audit.checkpoint import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    signature_problem,
)
from tenantry.audit.checkpoints import CHECKPOINT_STREAM, Cadence, Checkpointer
from tenantry.audit.tail import tail
from tenantry.inboxes import inbox_options
from tenantry.log.agreement import ChainAgreement
from tenantry.log.relay import Relay
from tenantry.protocol import CHECKPOINT_SUBJECT
from tenantry.sdk.client import Client
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.identity import ActorPolicy
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import serve_views
from tests.integration.streams import wait_for_stream
from workers import BackendConfig, run_worker

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {
    "command": "pw-command-7f3a",
    "projections": "pw-projections-19c2",
    "relay": "pw-relay-5d0e",
    "checkpoints": "pw-checkpoints-4e21",
    "namespaces": "pw-namespaces-aa41",
    "storage": "pw-storage-0b9d",
    "auditor": "pw-auditor-77e1",
    "admin@example.com": "pw-admin-c3d8",
    "bo@example.com": "pw-bo-61aa",  # a second client, added to the file's CLIENTS users below
}
ENV = {
    f"TENANTRY_{user.split('@')[0].upper()}_PASSWORD": password
    for user, password in PASSWORDS.items()
}
ADMIN = "user:admin@example.com"


@dataclass
class SecuredBus:
    server: NatsServer
    service: TenancyService
    denied: list[dict[str, object]]

    async def connect(self, user: str) -> NatsClient:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(
            self.server.url,
            user=user,
            password=PASSWORDS[user],
            error_cb=on_error,
            allow_reconnect=False,
            # As every Tenantry process, the client and the CLI do: replies under its own inboxes.
            **inbox_options(self.server.url, user),
        )
        nc.permission_errors = errors  # type: ignore[attr-defined]
        return nc


@pytest.fixture
async def secured(tmp_path: Path, sqlite_env: dict[str, str]) -> AsyncIterator[SecuredBus]:
    # nats-server resolves `include` relative to the including file: put them side by side,
    # as docker-compose.yml does in /etc/nats.
    accounts = (ROOT / "deploy" / "nats-accounts.conf").read_text()
    admin_entry = '{user: "admin@example.com", password: $TENANTRY_ADMIN_PASSWORD,'
    assert admin_entry in accounts
    bo_entry = (
        '{user: "bo@example.com", password: $TENANTRY_BO_PASSWORD, permissions: {\n'
        '        publish: {allow: ["tenantry.cmd.*", "tenantry.query.*"]}\n'
        '        subscribe: {allow: ["_INBOX.bo@example_2Ecom.>"]}\n'
        "      }}\n      "
    )
    (tmp_path / "nats-accounts.conf").write_text(
        accounts.replace(admin_entry, bo_entry + admin_entry)
    )
    config = tmp_path / "nats.conf"
    config.write_text('include "nats-accounts.conf"\n')  # JetStream: -js -sd from NatsServer
    server = NatsServer(tmp_path / "nats", config=config, env=ENV).start()
    service = TenancyService(sqlite_env, authorization=Authorization(admins=frozenset({ADMIN})))
    service.seed_default_environments()
    bus = SecuredBus(server, service, [])
    command_nc = await bus.connect("command")
    endpoint = CommandEndpoint(command_nc, service, actors=ActorPolicy("nats", "CLIENTS"))
    await endpoint.start()
    auditor = await bus.connect("auditor")

    async def on_denied(msg: Msg) -> None:
        bus.denied.append(json.loads(msg.data))

    await auditor.subscribe("tenantry.audit.denied.>", cb=on_denied)
    await auditor.flush()
    yield bus
    await auditor.close()
    await endpoint.stop()
    await command_nc.close()
    service.close()
    server.stop()


async def _request(
    nc: NatsClient, subject: str, body: dict[str, object], headers: dict[str, str] | None = None
) -> dict[str, object]:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=5, headers=headers)
    answer: dict[str, object] = json.loads(reply.data)
    return answer


def _last_event_actor(service: TenancyService) -> str:
    notifications = service.recorder.select_notifications(None, 10_000)
    state = json.loads(notifications[-2].state)  # the last is the command record
    return str(state["actor"])


async def test_the_actor_is_the_authenticated_user_whatever_the_header_says(
    secured: SecuredBus,
) -> None:
    admin = await secured.connect("admin@example.com")
    answer = await _request(
        admin,
        "tenantry.cmd.create_team",
        {"name": "risk"},
        headers={"Tenantry-Actor": "user:mallory@example.com"},
    )
    await admin.close()
    assert answer["ok"], answer
    assert _last_event_actor(secured.service) == ADMIN


async def test_a_worker_may_only_send_its_record_commands(secured: SecuredBus) -> None:
    worker = await secured.connect("namespaces")
    before = secured.service.recorder.max_notification_id()
    # NATS itself refuses the publish: the command service never hears of it.
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await worker.request("tenantry.cmd.create_team", b'{"name": "evil"}', timeout=1)
    assert any("permissions violation" in str(e).lower() for e in worker.permission_errors)  # type: ignore[attr-defined]
    # Its own record_* commands get through, as a service: actor.
    answer = await _request(
        worker,
        "tenantry.cmd.record_namespace_provisioned",
        {"workspace": "c-one:ws-one", "namespace": "ws-one"},
        headers={"Tenantry-Actor": "service:namespaces"},
    )
    assert answer["error"]["code"] == "not_found"  # type: ignore[index]
    # Claiming to be a person from inside Tenantry's account is refused.
    answer = await _request(
        worker,
        "tenantry.cmd.record_namespace_provisioned",
        {"workspace": "c-one:ws-one", "namespace": "ws-one"},
        headers={"Tenantry-Actor": ADMIN},
    )
    assert answer["error"]["code"] == "forbidden"  # type: ignore[index]
    await worker.close()
    assert secured.service.recorder.max_notification_id() == before


async def test_only_the_relay_may_publish_events(secured: SecuredBus) -> None:
    relay_nc = await secured.connect("relay")
    stop = asyncio.Event()
    relay = Relay(secured.service.recorder, relay_nc, poll_interval=0.05)
    task = asyncio.create_task(relay.run(stop))
    js = relay_nc.jetstream()
    while relay.published < 3:  # noqa: ASYNC110 (the seeded environments, a counter)
        await asyncio.sleep(0.02)
    for user in ("command", "namespaces", "auditor", "admin@example.com"):
        nc = await secured.connect(user)
        await nc.publish("tenantry.evt.workspace.created", b'{"forged": true}')
        await nc.flush()
        await nc.close()
    await asyncio.sleep(0.2)  # let the server process (and refuse) what was sent
    info = await js.stream_info(STREAM_NAME)
    stop.set()
    await task
    await relay_nc.close()
    assert info.state.messages == 3


async def test_only_the_checkpoints_role_may_sign_checkpoints_and_auditors_read_them(
    secured: SecuredBus, tmp_path: Path
) -> None:
    relay_nc, signer_nc = await secured.connect("relay"), await secured.connect("checkpoints")
    public_key = load_public_key(generate_key_pair(tmp_path / "signing.key"))
    stop = asyncio.Event()
    relay = Relay(secured.service.recorder, relay_nc, poll_interval=0.05)
    signer = Checkpointer(
        secured.service.recorder,
        signer_nc,
        load_private_key(tmp_path / "signing.key"),
        cadence=Cadence(every_events=1, every_seconds=3600),
        poll_interval=0.05,
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(signer.run(stop))]
    while signer.newest_size < 3:  # noqa: ASYNC110 (the seeded environments, a counter)
        await asyncio.sleep(0.02)
    for user in ("relay", "command", "projections", "auditor", "admin@example.com"):
        nc = await secured.connect(user)
        await nc.publish(CHECKPOINT_SUBJECT, b'{"checkpoint": {"tree_size": 1000000}}')
        await nc.flush()
        await nc.close()
    auditor = await secured.connect("auditor")
    proof = await _request(auditor, "tenantry.query.audit_inclusion_proof", {"position": 2})
    sub = await auditor.jetstream().subscribe(
        CHECKPOINT_SUBJECT, stream=CHECKPOINT_STREAM, ordered_consumer=True
    )
    info = await signer_nc.jetstream().stream_info(CHECKPOINT_STREAM)
    read = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(info.state.messages)]
    await sub.unsubscribe()
    await auditor.close()
    stop.set()
    await asyncio.gather(*tasks)
    await relay_nc.close()
    await signer_nc.close()
    assert proof["ok"], proof
    # What the auditor read is what the role signed, and none of the forged ones.
    assert [c["checkpoint"]["tree_size"] for c in read] == sorted(signer.published)
    assert all(signature_problem(c, public_key) is None for c in read)
    assert read[-1]["checkpoint"]["tree_size"] == 3


async def test_a_refused_command_changes_nothing_and_is_on_the_denied_subject(
    secured: SecuredBus,
) -> None:
    # A client user that is not a tenant admin: admins are configured without this one.
    secured.service.authorization = Authorization(admins=frozenset({"user:root@example.com"}))
    admin = await secured.connect("admin@example.com")
    before = secured.service.recorder.max_notification_id()
    answer = await _request(
        admin,
        "tenantry.cmd.create_environment",
        {"name": "qa"},
        headers={"Tenantry-Command-Id": "denied-1"},
    )
    await admin.close()
    assert answer["error"]["code"] == "forbidden"  # type: ignore[index]
    assert secured.service.recorder.max_notification_id() == before
    deadline = asyncio.get_running_loop().time() + 5
    while not secured.denied:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert secured.denied[0]["actor"] == ADMIN
    assert secured.denied[0]["command"] == "create_environment"
    assert secured.denied[0]["command_id"] == "denied-1"


async def test_clients_may_only_request_commands_and_queries(secured: SecuredBus) -> None:
    admin = await secured.connect("admin@example.com")
    await admin.publish("$JS.API.STREAM.DELETE.TENANTRY_EVENTS", b"")
    await admin.publish("tenantry.audit.denied.x", b"{}")
    await admin.flush()
    await asyncio.sleep(0.2)
    errors = [str(e) for e in admin.permission_errors]  # type: ignore[attr-defined]
    await admin.close()
    assert sum("permissions violation" in e.lower() for e in errors) == 2, errors


async def test_wrong_credentials_are_refused(secured: SecuredBus) -> None:
    """Spoken in the raw protocol: nats-py retries a refused connect instead of failing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.server.port)
    assert (await reader.readline()).startswith(b"INFO")
    connect = {"user": "command", "pass": "guess", "verbose": False, "pedantic": False}
    writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    assert answer.startswith(b"-ERR 'Authorization Violation'"), answer


async def _permission_errors(nc: NatsClient, count: int) -> list[str]:
    """The permission errors `nc` was told of, once there are `count` (or 5 s passed)."""
    await nc.flush()
    errors: list[Exception] = nc.permission_errors  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + 5
    while sum("permissions violation" in str(e).lower() for e in errors) < count:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    return [str(e) for e in errors if "permissions violation" in str(e).lower()]


WORKER_DURABLE = ConsumerConfig(
    name="tenantry-namespaces",
    durable_name="tenantry-namespaces",
    ack_policy=AckPolicy.EXPLICIT,
    max_ack_pending=1,
    filter_subjects=["tenantry.evt.workspace.created", "tenantry.evt.workspace.deleted"],
)


async def test_only_a_worker_kind_may_touch_its_durable(secured: SecuredBus) -> None:
    relay_nc = await secured.connect("relay")
    await Relay(secured.service.recorder, relay_nc).ensure_stream()
    owner = await secured.connect("namespaces")
    await owner.jetstream().add_consumer(STREAM_NAME, WORKER_DURABLE)
    rewrite: dict[str, Any] = {
        "stream_name": STREAM_NAME,
        "config": {
            "name": "tenantry-namespaces",
            "ack_policy": "explicit",
            "filter_subject": "tenantry.evt.nothing",
        },
    }
    durable_rewrite = {**rewrite, "config": {**rewrite["config"], "durable_name": "x"}}
    attempts = [
        # The nameless create takes the name from the body: it would rewrite the durable.
        (f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}", rewrite),
        (f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}.tenantry-namespaces", rewrite),
        (f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}.tenantry-namespaces.tenantry.evt.x", rewrite),
        (f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM_NAME}.tenantry-namespaces", durable_rewrite),
        (f"$JS.API.CONSUMER.DELETE.{STREAM_NAME}.tenantry-namespaces", {}),
        (f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.tenantry-namespaces", {"batch": 1}),
        (f"$JS.ACK.{STREAM_NAME}.tenantry-namespaces.1.1.1.0.0", {}),
    ]
    users = ("auditor", "storage", "command", "projections", "relay", "checkpoints")
    for user in (*users, "admin@example.com"):
        nc = await secured.connect(user)
        inbox = nc.new_inbox()
        for subject, body in attempts:
            await nc.publish(subject, json.dumps(body).encode(), reply=inbox)
        refused = await _permission_errors(nc, len(attempts))
        await nc.close()
        assert len(refused) == len(attempts), (user, refused)
    info = await owner.jetstream().consumer_info(STREAM_NAME, "tenantry-namespaces")
    assert set(info.config.filter_subjects or []) == set(WORKER_DURABLE.filter_subjects or [])
    await owner.close()
    await relay_nc.close()


async def test_every_role_does_its_work_within_its_permissions(
    secured: SecuredBus, tmp_path: Path
) -> None:
    """The relay, a worker, the query service, the auditor and a client, each as its own user
    (replies under its own inboxes): a workspace is provisioned, read back and audited."""
    connections = {
        user: await secured.connect(user) for user in ("relay", "namespaces", "projections")
    }
    stop = asyncio.Event()
    relay = Relay(secured.service.recorder, connections["relay"], poll_interval=0.05)
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(
            run_worker(
                "namespaces",
                connections["namespaces"],
                stop,
                backend_config=BackendConfig(gitops_root=tmp_path / "gitops"),
            )
        ),
        asyncio.create_task(
            serve_views(
                secured.service.recorder,
                store,
                connections["projections"],
                stop,
                asyncio.Event(),
                poll_interval=0.05,
            )
        ),
    ]
    admin = await Client.connect(
        secured.server.url,
        user="admin@example.com",
        password=PASSWORDS["admin@example.com"],
        allow_reconnect=False,
    )
    await admin.register_cluster(
        name="prod-eu", region="eu-west-1", provider="aws-eks", environments=["dev"]
    )
    await admin.create_workspace(cluster="prod-eu", name="fraud", environment="dev")
    deadline = asyncio.get_running_loop().time() + 30
    while (workspace := await admin.get_workspace(fqn="prod-eu:fraud")).status != "ready":
        assert asyncio.get_running_loop().time() < deadline, workspace
        await asyncio.sleep(0.05)
    await admin.close()

    auditor = await secured.connect("auditor")
    # The views saw the workspace ready in the store; the relay puts the worker's report on the
    # stream a moment later (seen missing on a loaded machine): read until it is there, bounded.
    seen: list[dict[str, object]] = []
    while "workspace.namespace_provisioned" not in {event["type"] for event in seen}:
        assert asyncio.get_running_loop().time() < deadline + 30, seen
        seen = []
        assert await tail(auditor, seen.append) >= 3
    assert await _permission_errors(auditor, 0) == []
    await auditor.close()
    stop.set()
    await asyncio.gather(*tasks)
    for user, nc in connections.items():
        errors = await _permission_errors(nc, 0)
        await nc.close()
        assert errors == [], (user, errors)
    store.close()


async def test_a_user_reads_its_own_replies_only(secured: SecuredBus) -> None:
    admin = await secured.connect("admin@example.com")
    bo = await secured.connect("bo@example.com")
    auditor = await secured.connect("auditor")
    storage = await secured.connect("storage")
    overheard: list[bytes] = []

    async def overhear(msg: Msg) -> None:
        overheard.append(msg.data)

    for spy, inbox in (
        (bo, "_INBOX.>"),
        (bo, "_INBOX.admin@example_2Ecom.>"),
        (auditor, "_INBOX.>"),
        (auditor, "_INBOX.namespaces.>"),
        (storage, "_INBOX.namespaces.>"),
    ):
        await spy.subscribe(inbox, cb=overhear)
    for spy, count in ((bo, 2), (auditor, 2), (storage, 1)):
        assert len(await _permission_errors(spy, count)) == count
    # Nor may anyone put a message in another's inbox (one would end a worker, once).
    await auditor.publish("_INBOX.namespaces.x", b"not an event")
    assert len(await _permission_errors(auditor, 3)) == 3

    answer = await _request(admin, "tenantry.cmd.create_team", {"name": "risk"})
    assert answer["ok"], answer
    worker = await secured.connect("namespaces")
    answer = await _request(
        worker,
        "tenantry.cmd.record_namespace_provisioned",
        {"workspace": "c-one:ws-one", "namespace": "ws-one"},
        headers={"Tenantry-Actor": "service:namespaces"},
    )
    assert answer["error"]["code"] == "not_found"  # type: ignore[index]
    for nc in (admin, bo, auditor, storage, worker):
        await nc.flush()
        await nc.close()
    assert overheard == []


async def test_the_relay_reads_its_stream_back_and_alerts_with_its_own_rights(
    secured: SecuredBus,
) -> None:
    """The relay's checks of the stream (a named ordered consumer, the TENANTRY_ALERTS stream,
    tenantry.alert.*) work with the relay user's permissions alone."""
    from tenantry.log.stream_check import ALERT_STREAM, StreamGuard

    relay_nc = await secured.connect("relay")
    stop = asyncio.Event()
    relay = Relay(secured.service.recorder, relay_nc, poll_interval=0.05)
    task = asyncio.create_task(relay.run(stop))
    while relay.published < 3:  # noqa: ASYNC110 (the seeded environments, a counter)
        await asyncio.sleep(0.02)
    stop.set()
    await task
    js = relay_nc.jetstream()
    guard = StreamGuard(secured.service.recorder, relay_nc, sample=0)
    await guard.ensure_alert_stream()
    assert (await guard.start()).last_seq == 3
    # A message not of the store (here written with the relay's own rights, which may publish
    # events): the periodic check reads it back through a consumer of its own and alerts.
    await js.publish("tenantry.evt.workspace.created", b'{"forged": true}')
    resume = await guard.audit()
    assert resume is not None
    assert [(f.kind, f.seq) for f in guard.findings] == [("foreign", 4)], guard.findings
    alerts = (await js.stream_info(ALERT_STREAM)).state.messages
    await relay_nc.close()
    assert alerts == 1


async def test_the_projections_user_may_compare_the_views_chain_with_the_stream(
    secured: SecuredBus, tmp_path: Path
) -> None:
    """The chain check of the projections role (`tenantry.log.agreement`) reads the stream's
    last messages with its own user's rights, and writes nothing there."""
    relay_nc, views_nc = await secured.connect("relay"), await secured.connect("projections")
    stop = asyncio.Event()
    relay = Relay(secured.service.recorder, relay_nc, poll_interval=0.05)
    task = asyncio.create_task(relay.run(stop))
    await wait_for_stream(relay_nc.jetstream(), secured.service.recorder)
    stop.set()
    await task
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    store.create_tables()
    ProjectionRunner(secured.service.recorder, store).catch_up()
    agreement = ChainAgreement(store, views_nc)
    assert await agreement.check() is None
    assert agreement.compared == 1
    assert await _permission_errors(views_nc, 0) == []
    await views_nc.publish("tenantry.evt.team.created", b"{}")
    assert len(await _permission_errors(views_nc, 1)) == 1  # it may not publish events
    store.close()
    await views_nc.close()
    await relay_nc.close()
