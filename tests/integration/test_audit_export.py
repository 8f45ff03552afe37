"""`tenantry audit export` and `tenantry audit verify` against a real nats-server fed by the relay:
exports are the stream byte for byte, verify, partial ones too, and every kind of tampering is
caught and named by its position (a changed byte, a dropped event, a swapped pair, a truncated
file, a rewritten chain under a signed checkpoint, a stored event changed after publication)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import chain_hash, published_bytes
from domain.service import TenancyService
from tenantry.audit.export import export
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.integration.cli import cli
from tests.integration.streams import expected_bodies, wait_for_stream
from tests.integration.world import WORLD


@dataclass
class Published:
    service: TenancyService
    nats_url: str
    folder: Path
    relay_stop: asyncio.Event
    relay_task: asyncio.Task[None]

    async def stop_relay(self) -> None:
        """Stop the relay (which would otherwise heal what a test takes from the stream)."""
        self.relay_stop.set()
        await self.relay_task

    def run(self, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        """The CLI in this process (its handlers run their own event loop): exit code, output."""
        code = cli(list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err


@pytest.fixture
async def published(
    nats_server: NatsServer, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Published]:
    """The world of the projection tests in a SQLite store, all of it on the stream."""
    service = TenancyService(event_store_env(sqlite_settings))
    service.seed_default_environments()
    for name, body, actor in WORLD:
        context = CommandContext(actor, str(uuid.uuid4()), "export")
        service.handle(COMMANDS[name].model_validate(body), context)
    nc = await nats.connect(nats_server.url)
    stop = asyncio.Event()
    relay = Relay(service.recorder, nc, poll_interval=0.02)
    task = asyncio.create_task(relay.run(stop))
    await wait_for_stream(nc.jetstream(), service.recorder)
    monkeypatch.setenv("TENANTRY_NATS_URL", nats_server.url)
    monkeypatch.setenv("TENANTRY_STATE_DIR", str(sqlite_settings.state_dir))
    monkeypatch.setenv("TENANTRY_LOG_LEVEL", "warning")
    yield Published(service, nats_server.url, sqlite_settings.state_dir.parent, stop, task)
    stop.set()
    await task
    await nc.close()
    service.close()


async def _export(published: Published, *args: str) -> tuple[Path, list[bytes]]:
    path = published.folder / f"export-{uuid.uuid4().hex[:6]}.jsonl"
    code = await asyncio.to_thread(cli, ["audit", "export", "-o", str(path), *args])
    assert code == 0
    return path, path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def _position(line: bytes) -> int:
    position: int = json.loads(line)["position"]
    return position


def _failed_at(output: str) -> int:
    """The position a failed verification names first."""
    found = re.search(r"FAILED at position (\d+)", output)
    assert found, output
    return int(found[1])


# --- exports ------------------------------------------------------------------------------


async def test_an_export_is_the_stream_byte_for_byte_and_verifies(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = await _export(published)
    nc = await nats.connect(published.nats_url)
    js = nc.jetstream()
    info = await js.stream_info("TENANTRY_EVENTS")
    raw = [
        (await js.get_msg("TENANTRY_EVENTS", seq=seq)).data
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    await nc.close()
    assert [line.rstrip(b"\n") for line in lines] == raw
    assert [json.loads(line) for line in lines] == expected_bodies(published.service.recorder)
    code, output = published.run("audit", "verify", str(path), capsys=capsys)
    assert code == 0, output
    assert f"OK: {len(lines)} events" in output
    assert "prev_hash zero" in output


async def test_export_to_stdout_is_the_same_as_to_a_file(published: Published) -> None:
    _, lines = await _export(published)
    env = {**os.environ, "TENANTRY_NATS_URL": published.nats_url}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tenantry.cli", "audit", "export"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == b"".join(lines)
    assert f"exported {len(lines)} events" in out.stderr.decode()


async def test_an_export_from_the_middle_verifies_from_its_first_prev_hash(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    _, every = await _export(published)
    positions = [_position(line) for line in every]
    since, until = positions[8], positions[20]
    path, lines = await _export(published, "--since", str(since), "--until", str(until))
    assert [_position(line) for line in lines] == positions[8:20]
    code, output = published.run("audit", "verify", str(path), capsys=capsys)
    assert code == 0, output
    assert f"starts at position {since}" in output and "taken as given" in output
    # By time: from the moment of the 9th event on.
    moment = json.loads(every[8])["occurred_at"]
    _, by_time = await _export(published, "--since", moment)
    assert by_time == every[8:]


# --- tampering ----------------------------------------------------------------------------


async def test_one_changed_byte_is_named_by_its_position(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = await _export(published)
    middle = len(lines) // 2
    tampered = list(lines)
    at = tampered[middle].index(b'"actor":"') + len(b'"actor":"')
    tampered[middle] = tampered[middle][:at] + b"X" + tampered[middle][at + 1 :]
    code, output = published.run("audit", "verify", str(_write(path, tampered)), capsys=capsys)
    assert code == 1
    assert _failed_at(output) == _position(lines[middle])
    assert f"(line {middle + 1})" in output and "altered" in output
    # A byte that breaks the JSON itself is named too.
    broken = list(lines)
    broken[middle] = broken[middle].replace(b'"fqn":', b'"fqn";', 1)
    code, output = published.run("audit", "verify", str(_write(path, broken)), capsys=capsys)
    assert code == 1
    assert _failed_at(output) == _position(lines[middle])
    assert "not valid JSON" in output


async def test_a_dropped_event_is_named(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = await _export(published)
    k = len(lines) // 3
    code, output = published.run(
        "audit", "verify", str(_write(path, lines[:k] + lines[k + 1 :])), capsys=capsys
    )
    assert code == 1
    assert _failed_at(output) == _position(lines[k + 1])
    assert f"does not follow position {_position(lines[k - 1])}" in output
    assert "dropped" in output


async def test_a_swapped_pair_is_named(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = await _export(published)
    k = len(lines) // 2
    swapped = [*lines[:k], lines[k + 1], lines[k], *lines[k + 2 :]]
    code, output = published.run("audit", "verify", str(_write(path, swapped)), capsys=capsys)
    assert code == 1
    assert _failed_at(output) == _position(lines[k + 1])
    assert f"position {_position(lines[k])}, is at line {k + 2}" in output
    assert "reordered" in output


async def test_a_truncated_file_is_named(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    path, lines = await _export(published)
    whole = b"".join(lines)
    path.write_bytes(whole[:-40])  # cut inside the last event's hash
    code, output = published.run("audit", "verify", str(path), capsys=capsys)
    assert code == 1
    assert _failed_at(output) == _position(lines[-1])
    assert f"(line {len(lines)})" in output and "truncated" in output
    # Cut where the position is gone too: named by the position before it.
    path.write_bytes(whole[: len(whole) - len(lines[-1]) + 30])
    code, output = published.run("audit", "verify", str(path), capsys=capsys)
    assert code == 1
    assert _failed_at(output) == _position(lines[-2])
    assert f"after position {_position(lines[-2])}" in output and "truncated" in output


# --- signed checkpoints -------------------------------------------------------------------


async def test_a_signed_checkpoint_catches_what_the_chain_cannot(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    key = published.folder / "audit.key"
    code, output = published.run("audit", "keygen", "-o", str(key), capsys=capsys)
    assert code == 0, output
    public = f"{key}.pub"
    assert key.stat().st_mode & 0o077 == 0
    _, lines = await _export(published, "--sign-key", str(key))
    events, checkpoint = lines[:-1], json.loads(lines[-1])
    assert checkpoint["checkpoint"]["count"] == len(events)
    assert checkpoint["checkpoint"]["last_hash"] == json.loads(events[-1])["hash"]

    def verify(candidate: list[bytes], *extra: str) -> tuple[int, str]:
        target = _write(published.folder / "candidate.jsonl", candidate)
        return published.run("audit", "verify", str(target), *extra, capsys=capsys)

    code, output = verify(lines, "--public-key", public)
    assert code == 0, output
    assert "signed checkpoint verified" in output
    # Cut at a line boundary: the chain alone still verifies, the checkpoint is gone.
    assert verify(events[:-3])[0] == 0
    code, output = verify(events[:-3], "--public-key", public)
    assert code == 1
    # Said as what it is: the chain is intact, the signature is missing (not "FAILED at …").
    assert "hash chain intact; no signed checkpoint" in output, output
    assert f"after position {_position(events[-4])}" in output, output
    assert "FAILED" not in output and "verified before it" not in output, output
    # Events cut from the end, the checkpoint kept.
    code, output = verify([*events[:-1], lines[-1]], "--public-key", public)
    assert code == 1
    assert "count" in output and "not what was signed" in output
    # A chain rewritten from one event on, every hash recomputed: only the checkpoint sees it.
    rewritten = _rewrite_from(events, len(events) // 2, actor="user:mallory@example.com")
    assert verify(rewritten)[0] == 0
    code, output = verify([*rewritten, lines[-1]], "--public-key", public)
    assert code == 1
    assert "last_hash" in output
    # The checkpoint itself altered.
    forged = json.loads(lines[-1])
    forged["checkpoint"]["count"] += 1
    code, output = verify([*events, json.dumps(forged).encode() + b"\n"], "--public-key", public)
    assert code == 1
    assert "signature is not valid" in output
    # Another key.
    other = published.folder / "other.key"
    assert published.run("audit", "keygen", "-o", str(other), capsys=capsys)[0] == 0
    code, output = verify(lines, "--public-key", f"{other}.pub")
    assert code == 1
    assert "another key" in output


def _rewrite_from(lines: list[bytes], start: int, **changes: Any) -> list[bytes]:
    """Change line `start` and re-chain everything after it, as a forger would."""
    out = list(lines[:start])
    prev_hash = json.loads(lines[start - 1])["hash"]
    for index, line in enumerate(lines[start:]):
        body = json.loads(line)
        if index == 0:
            body.update(changes)
        unchained = {k: v for k, v in body.items() if k not in ("prev_hash", "hash")}
        body["prev_hash"], body["hash"] = prev_hash, chain_hash(prev_hash, unchained)
        prev_hash = body["hash"]
        out.append(published_bytes(body) + b"\n")  # the canonical bytes, as verify requires
    return out


# --- the live store against the stream ----------------------------------------------------


async def test_verify_without_a_file_compares_the_store_with_the_stream(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = await asyncio.to_thread(published.run, "audit", "verify", capsys=capsys)
    assert code == 0, output
    bodies = expected_bodies(published.service.recorder)
    assert f"OK: {len(bodies)} events" in output
    # A stored event changed after it was published.
    target = next(b for b in bodies if b["data"].get("reason") == "on call")
    with sqlite3.connect(published.folder / "state" / "events.sqlite") as db:
        db.execute(
            "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), 'on call', "
            "'on leave') AS BLOB) WHERE rowid = ?",
            (target["position"],),
        )
    code, output = await asyncio.to_thread(published.run, "audit", "verify", capsys=capsys)
    assert code == 1
    assert _failed_at(output) == target["position"]
    assert "differ in data, hash" in output


# --- an export that must reach a position -------------------------------------------------


async def test_an_export_through_a_position_waits_for_the_stream_to_reach_it(
    published: Published,
) -> None:
    """A review's export knows its closing position from the views, which may be ahead of the
    stream (the relay publishes a moment later): the export waits for that event instead of
    ending, incomplete, at the stream's end as it stood."""
    await published.stop_relay()
    context = CommandContext("user:root@example.com", str(uuid.uuid4()), "export")
    body = {"name": "late-team", "members": []}
    published.service.handle(COMMANDS["create_team"].model_validate(body), context)
    last = expected_bodies(published.service.recorder)[-1]["position"]  # the team's event
    nc = await nats.connect(published.nats_url)
    relay_nc = await nats.connect(published.nats_url)
    stop = asyncio.Event()
    lines: list[bytes] = []
    try:
        exporting = asyncio.create_task(
            export(nc, lines.append, since=1, until=last + 1, through=last)
        )
        on_stream = len(expected_bodies(published.service.recorder)) - 1  # all but the team
        while len(lines) < on_stream and not exporting.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # until it has written the stream as it stands
        assert not exporting.done()  # then waits for `last`, not ended without it
        relay = Relay(published.service.recorder, relay_nc, poll_interval=0.02)
        relaying = asyncio.create_task(relay.run(stop))
        exported = await asyncio.wait_for(exporting, 30)
        stop.set()
        await relaying
    finally:
        await nc.close()
        await relay_nc.close()
    assert exported.span.last_position == json.loads(lines[-1])["position"]
    assert json.loads(lines[-1])["type"] == "team.created"
    assert [json.loads(line) for line in lines] == expected_bodies(published.service.recorder)


async def test_an_export_through_a_position_the_stream_never_reaches_times_out(
    published: Published,
) -> None:
    last = published.service.recorder.max_notification_id()
    assert last is not None
    nc = await nats.connect(published.nats_url)
    try:
        with pytest.raises(TimeoutError, match=f"position {last + 5}"):
            await export(nc, lambda _: None, through=last + 5, stall_timeout=0.5)
    finally:
        await nc.close()
