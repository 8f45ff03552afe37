"""`tenantry audit tail`: what the stream holds, filtered, as JSON lines or for a person."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer
from tests.integration.streams import expected_bodies, wait_for_stream


def _run(service: TenancyService, name: str, body: dict[str, object]) -> int:
    context = CommandContext("user:ana@example.com", str(uuid.uuid4()), "tail")
    return service.handle(COMMANDS[name].model_validate(body), context).position


@pytest.fixture
async def published(
    nats_server: NatsServer, sqlite_env: dict[str, str]
) -> AsyncIterator[TenancyService]:
    """A store with a small history, all of it on the stream; the relay keeps running."""
    service = TenancyService(sqlite_env)
    service.seed_default_environments()
    _run(
        service,
        "register_cluster",
        {
            "name": "prod-eu",
            "region": "eu-west-1",
            "provider": "aws-eks",
            "environments": ["prod", "dev"],
        },
    )
    for name in ("fraud", "churn"):
        _run(
            service, "create_workspace", {"cluster": "prod-eu", "name": name, "environment": "prod"}
        )
    nc = await nats.connect(nats_server.url)
    stop = asyncio.Event()
    relay = Relay(service.recorder, nc, poll_interval=0.02)
    task = asyncio.create_task(relay.run(stop))
    await wait_for_stream(nc.jetstream(), service.recorder)
    yield service
    stop.set()
    await task
    await nc.close()
    service.close()


def _tail(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TENANTRY_NATS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "audit", "tail", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def test_json_lines_are_the_stream_bodies_in_order(
    published: TenancyService, nats_server: NatsServer
) -> None:
    out = await asyncio.to_thread(_tail, nats_server.url, "-o", "json")
    assert [json.loads(line) for line in out.stdout.splitlines()] == expected_bodies(
        published.recorder
    )


async def test_filters_by_type_fqn_and_since(
    published: TenancyService, nats_server: NatsServer
) -> None:
    everything = expected_bodies(published.recorder)
    by_type = await asyncio.to_thread(
        _tail, nats_server.url, "-o", "json", "--type", "workspace.created"
    )
    assert [json.loads(x)["fqn"] for x in by_type.stdout.splitlines()] == [
        "prod-eu:fraud",
        "prod-eu:churn",
    ]
    by_fqn = await asyncio.to_thread(_tail, nats_server.url, "-o", "json", "--fqn", "prod")
    assert {json.loads(x)["type"] for x in by_fqn.stdout.splitlines()} == {
        "environment.created",
        "environment.cluster_linked",
    }
    middle = everything[len(everything) // 2]["position"]
    since = await asyncio.to_thread(_tail, nats_server.url, "-o", "json", "--since", str(middle))
    assert [json.loads(x) for x in since.stdout.splitlines()] == [
        b for b in everything if b["position"] >= middle
    ]
    later = everything[-1]["occurred_at"]
    by_time = await asyncio.to_thread(_tail, nats_server.url, "-o", "json", "--since", later)
    assert json.loads(by_time.stdout.splitlines()[-1]) == everything[-1]


async def test_text_lines_read_like_a_log(
    published: TenancyService, nats_server: NatsServer
) -> None:
    out = await asyncio.to_thread(_tail, nats_server.url, "-o", "text", "--type", "workspace.*")
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert "workspace.created" in lines[0]
    assert "prod-eu:fraud" in lines[0]
    assert "by user:ana@example.com" in lines[0]


async def test_follow_prints_new_events_as_they_are_published(
    published: TenancyService, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = {**os.environ, "TENANTRY_NATS_URL": nats_server.url}
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tenantry.cli",
        "audit",
        "tail",
        "-f",
        "-o",
        "json",
        "--type",
        "team.created",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert follower.stdout is not None
    try:
        await asyncio.to_thread(_run, published, "create_team", {"name": "risk"})
        line = await asyncio.wait_for(follower.stdout.readline(), timeout=30)
        assert json.loads(line)["fqn"] == "risk"
    finally:
        follower.terminate()
        await follower.wait()


def test_a_bus_with_nothing_published_yet_tails_nothing(nats_server: NatsServer) -> None:
    # No stream exists before the relay's first publish: every form of `tail` says nothing,
    # `--since POSITION` included (it used to look for the stream before checking it exists).
    for args in ((), ("--since", "5"), ("--since", "2026-01-01T00:00:00Z")):
        done = _tail(nats_server.url, "-o", "json", *args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout == "", args
