"""PostgreSQL stopped (`pg_ctl stop -m immediate`: a crash) under a running `tenantry serve
command` and `tenantry serve relay`, then started again. While it is down, commands are answered
`internal` at once (no hang) and write nothing; commands cut off by the crash are all-or-nothing;
once it is back, the same processes work again, and every command sent again with its id settles
exactly once. The stream is complete and its chain valid.

The server is a private one (`tests/faults/postgres_server.py`), never the shared one."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from domain.command_record import CommandRecord
from domain.event_log import INTERNAL_TOPICS, unchained_body
from domain.service import TenancyService
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import postgres_env
from tests.faults.postgres_server import PostgresServer, postgres_bin
from tests.faults.processes import (
    Served,
    request,
    request_until_answered,
    serve_env,
    stop_all,
    wait_for_commands,
    wait_until,
)
from tests.integration.streams import assert_stream_matches_store, wait_for_stream

pytestmark = pytest.mark.postgres

ACTOR = "user:ana@example.com"
BURST = 24  # commands in flight when the database dies
WHILE_DOWN = 8  # commands sent one after another while it is down
# A refusal while the database is down comes at once, except the very first, which waits for
# the pool to give up on its broken connections (its timeout, `connect_timeout`, 5 s).
FIRST_REFUSAL_WITHIN = 8.0
REFUSAL_WITHIN = 2.0


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    bin_ = postgres_bin()
    if bin_ is None:
        pytest.skip("initdb/pg_ctl are not installed: this test needs a PostgreSQL of its own")
    server = None
    try:
        server = PostgresServer.create(bin_)
        server.start()
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        message = f"a private PostgreSQL did not start with {bin_}: {exc} {detail[-500:]!r}"
        if server is not None:
            server.remove()
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: the tools exist, so this test must run)")
        pytest.skip(message)
    yield server
    server.remove()


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


def _team(i: int) -> tuple[str, dict[str, Any], dict[str, str]]:
    headers = {"Tenantry-Command-Id": f"pg-{i}-{uuid.uuid4().hex[:8]}", "Tenantry-Actor": ACTOR}
    return "tenantry.cmd.create_team", {"name": f"team-{i}", "members": []}, headers


async def _timed(nc: Client, i: int) -> tuple[int, dict[str, Any], float]:
    subject, body, headers = _team(i)
    started = time.monotonic()
    answer = await request(nc, subject, body, headers, timeout=30)
    return i, answer, time.monotonic() - started


async def test_commands_fail_fast_while_postgresql_is_down_and_work_again_after(
    private_postgres: PostgresServer, nats_server: NatsServer, client: Client, tmp_path: Path
) -> None:
    env = serve_env(tmp_path / "state", nats_server.url, private_postgres.url)
    command = Served("command", env, tmp_path / "command.log").start()
    relay = Served("relay", env, tmp_path / "relay.log")
    sent: dict[int, tuple[str, dict[str, Any], dict[str, str]]] = {}
    answers: dict[int, dict[str, Any]] = {}
    try:
        await wait_for_commands(client)
        relay.start()
        for i in range(5):
            sent[i] = _team(i)
            answers[i] = await request(client, *sent[i])
            assert answers[i]["ok"], answers[i]

        async def relay_publishing() -> bool:
            return bool(relay.events("relay.resumed"))

        await wait_until(relay_publishing, 30, "the relay running")

        # A crash in the middle of a burst of commands: each is answered, applied or not.
        burst = range(100, 100 + BURST)
        for i in burst:
            sent[i] = _team(i)
        in_flight = [asyncio.create_task(request(client, *sent[i], timeout=30)) for i in burst]
        await asyncio.sleep(random.uniform(0, 0.02))
        await asyncio.to_thread(private_postgres.stop)
        stopped = time.monotonic()
        burst_answers = await asyncio.gather(*in_flight)
        burst_seconds = time.monotonic() - stopped
        assert burst_seconds < FIRST_REFUSAL_WITHIN, burst_seconds
        for i, answer in zip(burst, burst_answers, strict=True):
            answers[i] = answer
            assert answer["ok"] or answer["error"]["code"] == "internal", answer

        # While it is down: refused, quickly, with the generic message (no detail leaks).
        refusals = []
        for i in range(200, 200 + WHILE_DOWN):
            sent[i] = _team(i)
            _, answers[i], seconds = await _timed(client, i)
            assert answers[i]["error"] == {
                "code": "internal",
                "message": "internal error; the request was not applied",
                "details": {},
            }
            refusals.append(seconds)
        assert refusals[0] < FIRST_REFUSAL_WITHIN, refusals
        assert max(refusals[1:]) < REFUSAL_WITHIN, refusals

        # Back: the same process answers again (the pool reconnects on demand).
        await asyncio.to_thread(private_postgres.start)
        back = time.monotonic()
        sent[300] = _team(300)
        answers[300], sends = await request_until_answered(client, *sent[300], within=30)
        while not answers[300]["ok"]:
            assert answers[300]["error"]["code"] == "internal", answers[300]
            assert time.monotonic() - back < 15, "commands still refused 15 s after the restart"
            await asyncio.sleep(0.1)
            answers[300] = await request(client, *sent[300])
        recovered_in = time.monotonic() - back
        for i in range(301, 306):
            sent[i] = _team(i)
            answers[i] = await request(client, *sent[i])
            assert answers[i]["ok"], answers[i]

        # Every command refused or cut off is sent again with its id: each settles once.
        retried = {i: await request(client, *sent[i]) for i, a in answers.items() if not a["ok"]}
        for i, answer in retried.items():
            assert answer["ok"], answer
            answers[i] = answer

        store = TenancyService(postgres_env(private_postgres.url))
        try:
            messages = await wait_for_stream(client.jetstream(), store.recorder, timeout=30)
            assert_stream_matches_store(messages, store.recorder)
            notifications = store.recorder.select_notifications(None, 100_000)
        finally:
            store.close()
        assert command.alive() and relay.alive(), command.tail() + relay.tail()
    finally:
        stop_all([command, relay])
    assert command.starts == relay.starts == 1

    # All or nothing, once: each command's record and team, no command's events twice, and
    # nothing from a command refused before it was sent again.
    records = [n for n in notifications if n.topic == "domain.command_record:CommandRecord.Handled"]
    by_command: dict[str, list[str]] = {}
    for n in notifications:
        if n.topic not in INTERNAL_TOPICS:
            body = unchained_body(n)
            by_command.setdefault(body["command_id"], []).append(body["type"])
    assert {n.originator_id for n in records} == {
        CommandRecord.create_id(headers["Tenantry-Command-Id"]) for _, _, headers in sent.values()
    }
    for i, (_, _, headers) in sent.items():
        assert by_command.pop(headers["Tenantry-Command-Id"]) == ["team.created"], i
    assert set(by_command) == {"seed:default-environments"}
    cut_off = sum(1 for i in burst if i in retried)
    print(
        f"\npostgres restart: {len(sent)} commands, {cut_off}/{BURST} of a burst cut off by the "
        f"crash (answered {burst_seconds:.2f} s after it), {WHILE_DOWN} refused while down "
        f"in {[round(s, 2) for s in refusals]} s, "
        f"working again {recovered_in:.2f} s after the restart ({sends} sends), "
        f"{len(retried)} sent again and settled once"
    )
