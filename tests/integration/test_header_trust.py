"""`TENANTRY_AUTH=header` believes the `Tenantry-Actor` header as sent: with `TENANTRY_ADMINS`
set, any client that can reach the bus may claim to be an admin. A command service refuses to
start with that combination unless the bus listens on loopback only (what the server tells its
clients: its client listener and those of its cluster peers); on loopback it starts, saying so
in one loud line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tenantry.server.identity import UntrustedBus, refuse_untrusted_headers
from tenantry.server.nats_server import NatsServer, free_port, nats_server_binary
from tests.faults.processes import serve_env

ADMINS = "user:ana@example.com"


@pytest.fixture
def open_nats_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server listening on every interface (reached here through loopback only)."""
    port = free_port()
    process = subprocess.Popen(
        [nats_server_binary(), "-a", "0.0.0.0", "-p", str(port), "-l", str(tmp_path / "n.log")],
        stdin=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"

    async def wait_ready() -> None:
        while True:
            try:
                await (await nats.connect(url, allow_reconnect=False)).close()
                return
            except Exception:
                assert process.poll() is None, "nats-server exited"
                await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(wait_ready(), 30))
    yield url
    process.terminate()
    process.wait(10)


def _serve_command(tmp_path: Path, url: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tenantry.cli", "serve", "command"],
        env=serve_env(tmp_path / "state", url, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ended(process: subprocess.Popen[str], within: float = 60) -> int | None:
    """The exit code, or None (and the process stopped) if it is still serving after `within`
    seconds: start-up on a loaded machine takes seconds, a refusal comes right after it."""
    try:
        return process.wait(within)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(20)
        return None


def test_header_auth_with_admins_is_refused_on_a_bus_others_can_reach(
    tmp_path: Path, open_nats_server: str
) -> None:
    serving = _serve_command(
        tmp_path, open_nats_server, TENANTRY_AUTH="header", TENANTRY_ADMINS=ADMINS
    )
    code = _ended(serving)
    _, err = serving.communicate()
    assert code == 2, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "TENANTRY_AUTH=header" in line]
    assert "TENANTRY_ADMINS" in line and "0.0.0.0" in line and "TENANTRY_AUTH=nats" in line


def test_header_auth_without_admins_starts_on_any_bus_saying_authorization_is_off(
    tmp_path: Path, open_nats_server: str
) -> None:
    # Nothing is protected, so nothing is pretended: the laptop default, as before.
    serving = _serve_command(tmp_path, open_nats_server, TENANTRY_AUTH="header")
    try:
        _wait_answering(open_nats_server, serving)
    finally:
        serving.terminate()
        assert serving.wait(30) == 0


def test_header_auth_with_admins_starts_on_a_loopback_bus_with_a_loud_line(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    serving = _serve_command(
        tmp_path, nats_server.url, TENANTRY_AUTH="header", TENANTRY_ADMINS=ADMINS
    )
    try:
        _wait_answering(nats_server.url, serving)
    finally:
        serving.terminate()
        assert serving.wait(30) == 0
    out, err = serving.communicate()
    [warning] = [
        json.loads(line)
        for line in (out + err).splitlines()
        if line.startswith("{") and '"authentication.off"' in line
    ]
    assert warning["level"] == "warning"
    assert "TENANTRY_ADMINS" in warning["reason"] and "loopback" in warning["reason"]


def _wait_answering(url: str, serving: subprocess.Popen[str]) -> None:
    """Until the command service answers (an invalid command: nothing is written)."""

    async def ask() -> None:
        nc = await nats.connect(url)
        try:
            while True:
                assert serving.poll() is None, serving.communicate()[1]
                try:
                    reply = await nc.request("tenantry.cmd.create_environment", b"{", timeout=2)
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)
                    continue
                assert json.loads(reply.data)["error"]["code"] == "validation_error"
                return
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(ask(), 90))


@pytest.mark.parametrize(
    ("info", "loopback_only"),
    [
        ({"host": "127.0.0.1"}, True),
        ({"host": "127.0.0.2"}, True),
        ({"host": "::1"}, True),
        ({"host": "localhost"}, True),
        ({"host": "127.0.0.1", "connect_urls": ["127.0.0.1:4222", "[::1]:4223"]}, True),
        ({"host": "0.0.0.0"}, False),
        ({"host": "::"}, False),
        ({"host": "10.0.0.5"}, False),
        ({"host": "nats.example.com"}, False),
        ({}, False),
        ({"host": "127.0.0.1", "connect_urls": ["10.0.0.6:4222"]}, False),
    ],
)
def test_the_rule_reads_what_the_server_tells_its_clients(
    info: dict[str, object], loopback_only: bool
) -> None:
    refuse_untrusted_headers("nats", frozenset({ADMINS}), info)  # nats auth: any bus
    refuse_untrusted_headers("header", None, info)  # nothing protected: any bus
    if loopback_only:
        refuse_untrusted_headers("header", frozenset({ADMINS}), info)
    else:
        with pytest.raises(UntrustedBus):
            refuse_untrusted_headers("header", frozenset({ADMINS}), info)
