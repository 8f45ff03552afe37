"""Credentials never show: not in any process's logs, not in stored events, not on the stream,
not in any reply (errors, `internal` ones included), not in the audit of refusals, not in the
micro-service discovery answers.

Every role runs as its own `tenantry serve` process with a PostgreSQL URL holding a password
(the shared test server trusts everyone, so any password is accepted), a NATS URL holding a
user and password (nats-server started with them), and S3 keys for the storage worker (moto).
The command service runs twice, once logging JSON lines and once in the console format, and
a third one is started on an unreachable database. Then everything that went out is grepped."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import nats
import psycopg
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from psycopg import sql

from domain.service import TenancyService
from tenantry.server.nats_server import _die_with_parent, free_port, nats_server_binary
from tenantry.server.store import postgres_env
from tests.faults.processes import (
    Served,
    serve_env,
    stop_all,
    wait_until,
)
from tests.integration.s3_server import CountingProxy

pytestmark = pytest.mark.postgres

ADMIN = "user:ana@example.com"
# The log event each process is up at (workers need not wait: they don't touch the store).
STARTED = [
    "command_service.started",
    "command_service.started",
    "relay.resumed",
    "query_service.started",
    "",
    "",
]


@dataclass(frozen=True)
class Secrets:
    postgres_password: str
    nats_password: str
    s3_access_key: str
    s3_secret_key: str

    def all(self) -> dict[str, str]:
        return {
            "postgres password": self.postgres_password,
            "nats password": self.nats_password,
            "s3 access key id": self.s3_access_key,
            "s3 secret key": self.s3_secret_key,
        }


@pytest.fixture
def creds() -> Secrets:
    def token(prefix: str) -> str:
        return f"{prefix}{secrets.token_hex(12)}"

    return Secrets(
        token("PgPw-"), token("NatsPw-"), "AKIA" + secrets.token_hex(8).upper(), token("S3Sk/")
    )


@dataclass
class AuthNats:
    """A nats-server that wants a user and password (JetStream on)."""

    folder: Path
    password: str
    user: str = "tenantry"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}"

    def start(self) -> AuthNats:
        self.port = self.port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.folder),
                "--user",
                self.user,
                "--pass",
                self.password,
                "-l",
                str(self.folder / "nats-server.log"),
            ],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def auth_nats(tmp_path: Path, creds: Secrets) -> Iterator[AuthNats]:
    server = AuthNats(tmp_path / "nats", creds.nats_password).start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres_url: str, creds: Secrets) -> str:
    """The test's schema, reached with a password in the URL."""
    return postgres_url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{creds.postgres_password}@"
    )


@pytest.fixture
async def client(auth_nats: AuthNats) -> AsyncIterator[Client]:
    async def connected() -> Client | None:
        try:
            return await nats.connect(auth_nats.url, max_reconnect_attempts=0)
        except Exception:
            return None

    nc = await wait_until(connected, 15, "nats-server up")
    assert nc is not None
    yield nc
    await nc.close()


class Seen:
    """Everything that reached the test: replies, refusals audited on the bus."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.reply_headers: list[str] = []

    async def ask(
        self, nc: Client, subject: str, body: dict[str, Any] | bytes, **headers: str
    ) -> dict[str, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        reply = await nc.request(subject, data, timeout=15, headers=headers or None)
        self.replies.append(reply.data)
        self.reply_headers.append(json.dumps(dict(reply.headers or {})))
        answer: dict[str, Any] = json.loads(reply.data)
        return answer


async def test_no_credential_appears_in_logs_events_stream_or_replies(
    creds: Secrets,
    auth_nats: AuthNats,
    client: Client,
    database_url: str,
    s3_proxy: CountingProxy,
    tmp_path: Path,
) -> None:
    env = serve_env(
        tmp_path / "state",
        auth_nats.url,
        database_url,
        TENANTRY_STORAGE_BACKEND="s3",
        TENANTRY_S3_ENDPOINT_URL=s3_proxy.url,
        TENANTRY_S3_REGION="us-east-1",
        TENANTRY_S3_ACCESS_KEY_ID=creds.s3_access_key,
        TENANTRY_S3_SECRET_ACCESS_KEY=creds.s3_secret_key,
    )
    processes = [
        Served("command", env, tmp_path / "command.log"),
        Served("command", {**env, "TENANTRY_LOG_FORMAT": "console"}, tmp_path / "console.log"),
        Served("relay", env, tmp_path / "relay.log"),
        Served("projections", env, tmp_path / "projections.log"),
        Served("worker storage", env, tmp_path / "storage.log"),
        Served("worker namespaces", env, tmp_path / "namespaces.log"),
    ]
    # A command service whose database can't be reached: it must say so without the URL.
    parts = urlsplit(database_url)
    unreachable = parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{free_port()}"))
    doomed = Served(
        "command", {**env, "TENANTRY_DATABASE_URL": unreachable.geturl()}, tmp_path / "x.log"
    )
    seen = Seen()
    denied: list[Msg] = []

    async def on_denied(msg: Msg) -> None:
        denied.append(msg)

    await client.subscribe("tenantry.audit.denied.>", cb=on_denied)
    stream: list[bytes] = []
    schema = database_url.rpartition("schema=")[2]
    try:
        # The roles on the store one after another: started together on a fresh schema, they
        # race to create its tables and one can fail ("tuple concurrently updated").
        for served, started in zip(processes, STARTED, strict=True):
            served.start()
            if started:

                async def up(served: Served = served, started: str = started) -> bool:
                    assert served.alive(), served.tail()
                    return started in served.text()  # JSON or console lines

                await wait_until(up, 30, f"{served.role} started")
        doomed.start()

        # Work that touches every part: commands, the relay, the views, both workers, S3.
        async def ok(name: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = await seen.ask(
                client, f"tenantry.cmd.{name}", body, **{"Tenantry-Actor": ADMIN}
            )
            assert answer["ok"], answer
            return answer

        await ok(
            "register_cluster",
            {
                "name": "prod-eu",
                "region": "eu-west-1",
                "provider": "aws-eks",
                "environments": ["dev"],
            },
        )
        await ok("create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "dev"})
        await ok(
            "register_storage_integration",
            {"name": "s3-main", "provider": "s3", "storage_root": "s3://tenantry-secrets/repos"},
        )
        s3_proxy.failing = 2  # an S3 outage (both of boto's attempts): transient, logged, retried
        await ok("create_ml_repo", {"name": "fraud-models", "storage_integration": "s3-main"})
        last = await ok(
            "grant_repo_access",
            {"repo": "fraud-models", "subject": "workspace:prod-eu:fraud", "role": "editor"},
        )

        async def provisioned() -> bool:
            try:
                repo = await seen.ask(
                    client,
                    "tenantry.query.get_ml_repo",
                    {"name": "fraud-models", "min_position": last["position"]},
                )
                workspace = await seen.ask(
                    client, "tenantry.query.get_workspace", {"fqn": "prod-eu:fraud"}
                )
            except nats.errors.NoRespondersError:
                return False  # the query service is still starting
            return bool(
                repo["ok"]
                and repo["data"]["status"] == "ready"
                and workspace["data"]["status"] == "ready"
            )

        await wait_until(provisioned, 30, "repo and workspace provisioned", every=0.2)

        # Refusals of every kind, each with its reply.
        await seen.ask(client, "tenantry.cmd.create_team", b"{not json")
        await seen.ask(client, "tenantry.cmd.create_team", {"name": "x", "password": "y"})
        await seen.ask(client, "tenantry.cmd.delete_ml_repo", {"name": "no-such-repo"})
        await seen.ask(
            client, "tenantry.cmd.create_team", {"name": "t"}, **{"Tenantry-Actor": "service:x"}
        )
        await seen.ask(client, "tenantry.query.get_ml_repo", {"name": "no-such-repo"})
        await seen.ask(client, "tenantry.query.audit_log", {"limit": 0})

        # The store fails: the database refuses every write (a trigger raising an error, on
        # this test's schema only), so every command is answered `internal`.
        with psycopg.connect(database_url.partition("?")[0], autocommit=True) as conn:
            function, table = (
                sql.Identifier(schema, "refuse"),
                sql.Identifier(schema, "tenantry_events"),
            )
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {} () RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'the store refuses writes'; END $$"
                ).format(function)
            )
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER refuse BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {} ()"
                ).format(table, function)
            )
            try:
                for i in range(6):  # both command services get some
                    answer = await seen.ask(
                        client, "tenantry.cmd.create_team", {"name": f"doomed-{i}"}
                    )
                    assert answer["error"]["code"] == "internal", answer
            finally:
                conn.execute(sql.SQL("DROP TRIGGER refuse ON {}").format(table))
        await ok("create_team", {"name": "after-the-failure"})

        # Discovery answers carry the endpoints' last errors.
        for verb in ("INFO", "STATS"):
            inbox = client.new_inbox()
            sub = await client.subscribe(inbox)
            await client.publish(f"$SRV.{verb}", b"", reply=inbox)
            await client.flush()
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    break
                seen.replies.append(msg.data)
            await sub.unsubscribe()

        # The stream as published.
        js = client.jetstream()
        info = await js.stream_info("TENANTRY_EVENTS")
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg("TENANTRY_EVENTS", seq=seq)
            stream.append(message.data or b"")
        assert doomed.process is not None
        assert doomed.process.wait(30) != 0  # it could not start
    finally:
        stop_all([*processes, doomed])

    service = TenancyService(postgres_env(database_url))
    try:
        events = [n.state for n in service.recorder.select_notifications(None, 100_000)]
    finally:
        service.close()
    assert any(b"gave up" in e or b"ServiceUnavailable" in e for e in events) or s3_proxy.count(
        "PUT"
    )
    assert len(stream) > 10 and len(events) > len(stream)
    assert len(denied) == 1
    outputs: dict[str, bytes] = {
        **{served.log.name: served.log.read_bytes() for served in [*processes, doomed]},
        "stored events": b"\n".join(events),
        "stream": b"\n".join(stream),
        "replies": b"\n".join(seen.replies),
        "reply headers": "\n".join(seen.reply_headers).encode(),
        "audit of refusals": b"\n".join(m.data for m in denied),
    }
    # The logs did see the things around the secrets: they are really these runs' logs.
    assert b"nats.disconnected" in outputs["command.log"]
    assert b"worker.retry" in outputs["storage.log"]
    assert b"command.failed" in outputs["command.log"] + outputs["console.log"]
    leaks = {
        what: sorted(
            name
            for name, text in outputs.items()
            for form in {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}
            if form.encode() in text
        )
        for what, secret in creds.all().items()
    }
    assert not any(leaks.values()), f"credentials found: {leaks}"
    print(
        f"\nsecrets: {len(creds.all())} credentials, none in {len(outputs)} outputs "
        f"({sum(len(t) for t in outputs.values()) // 1024} KiB: {', '.join(outputs)})"
    )
