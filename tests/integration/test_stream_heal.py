"""A stream that heals, and says so: the relay checks TENANTRY_EVENTS against the store and
publishes again, byte for byte, what the stream lost (a purge, a deleted tail, a deleted last
message); a forged message is reported and published past, and no worker acts on it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import STREAM_NAME, canonical_json, chain_hash
from domain.service import TenancyService
from tenantry.audit.verify import verify_live
from tenantry.cli.processes import _probe
from tenantry.log.relay import Relay
from tenantry.log.stream_check import StreamGuard
from tenantry.protocol import STREAM_ALERT_SUBJECT
from tenantry.server.nats_server import NatsServer
from tenantry.settings import Settings
from tests.integration.cli import cli
from tests.integration.provisioning import ADMIN, running_tenancy, running_worker
from tests.integration.streams import wait_for_chain
from workers import BackendConfig

Chain = list[tuple[int, str, dict[str, str], bytes]]


def _teams(service: TenancyService, first: int, count: int) -> None:
    for i in range(first, first + count):
        context = CommandContext(ADMIN, str(uuid.uuid4()), "heal")
        body = {"name": f"team-{i}", "members": ["ana@example.com"]}
        service.handle(COMMANDS["create_team"].model_validate(body), context)


class _Running:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(relay.run(self.stop))

    async def chain(self, js: JetStreamContext, service: TenancyService) -> Chain:
        """The stream's chain once it holds every stored event; fails at once if the relay
        died instead."""
        waiter = asyncio.create_task(wait_for_chain(js, service.recorder, timeout=30))
        done, _ = await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            waiter.cancel()
            self.task.result()  # raises what stopped the relay
            raise AssertionError("the relay stopped by itself")
        return waiter.result()

    async def finish(self) -> None:
        self.stop.set()
        await self.task


def _by_position(chain: Chain) -> dict[int, tuple[str, str, bytes]]:
    return {
        json.loads(data)["position"]: (subject, headers["Nats-Msg-Id"], data)
        for _, subject, headers, data in chain
    }


async def test_a_purged_stream_is_published_again_byte_for_byte(
    service: TenancyService, nc: Client
) -> None:
    js = nc.jetstream()
    running = _Running(Relay(service.recorder, nc, poll_interval=0.02, check_interval=0.2))
    await asyncio.to_thread(_teams, service, 0, 70)
    before = _by_position(await running.chain(js, service))
    await js.purge_stream(STREAM_NAME)
    await asyncio.to_thread(_teams, service, 70, 2)  # events after the purge, as in the probe
    after = _by_position(await running.chain(js, service))
    await running.finish()
    assert set(before) < set(after)
    for position, original in before.items():
        assert after[position] == original, position  # same subject, id and bytes
    verdict = await verify_live(service.recorder, nc)
    assert verdict.ok, verdict.report()
    assert verdict.span.first_position == min(after)


async def test_the_last_three_messages_deleted_are_published_again_and_logged(
    service: TenancyService, nc: Client
) -> None:
    js = nc.jetstream()
    with capture_logs() as logs:
        running = _Running(Relay(service.recorder, nc, poll_interval=0.02, check_interval=0.2))
        await asyncio.to_thread(_teams, service, 0, 10)
        before = _by_position(await running.chain(js, service))
        last_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
        for seq in range(last_seq - 2, last_seq + 1):
            await js.delete_msg(STREAM_NAME, seq)
        deadline = time.monotonic() + 30
        while (await js.stream_info(STREAM_NAME)).state.last_seq == last_seq:
            assert time.monotonic() < deadline, "the deleted tail was never published again"
            await asyncio.sleep(0.05)
        after = _by_position(await running.chain(js, service))
        await running.finish()
    assert after == before
    events = [entry["event"] for entry in logs]
    assert "relay.healing" in events, events
    missing = [e for e in logs if e["event"] == "stream.finding" and e["kind"] == "missing"]
    assert missing, events


async def test_a_tail_deleted_before_the_check_read_it_is_found_missing(
    service: TenancyService, nc: Client
) -> None:
    """The check had verified the stream up to some message; the relay published more, and
    those were deleted before the next check read them: nothing is left after the verified
    head, yet the stream reached further. The check says where to publish again from."""
    js = nc.jetstream()
    running = _Running(Relay(service.recorder, nc, poll_interval=0.02, check_interval=3600))
    await asyncio.to_thread(_teams, service, 0, 5)
    await running.chain(js, service)
    guard = StreamGuard(service.recorder, nc, sample=0)
    verified = await guard.start()
    await asyncio.to_thread(_teams, service, 5, 3)
    await running.chain(js, service)
    await running.finish()
    last_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
    assert last_seq > verified.last_seq
    for seq in range(verified.last_seq + 1, last_seq + 1):
        await js.delete_msg(STREAM_NAME, seq)
    resume = await guard.audit()
    assert resume is not None, "the deleted tail went unnoticed"
    assert (resume.position, resume.hash, resume.last_seq) == (
        verified.position,
        verified.hash,
        last_seq,
    )
    assert resume.rewind
    assert [f.kind for f in guard.findings] == ["missing"], guard.findings


async def test_a_relay_starts_and_heals_when_the_last_message_was_deleted(
    service: TenancyService, nc: Client
) -> None:
    js = nc.jetstream()
    first = _Running(Relay(service.recorder, nc, poll_interval=0.02))
    await asyncio.to_thread(_teams, service, 0, 5)
    before = _by_position(await first.chain(js, service))
    await first.finish()
    last_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
    await js.delete_msg(STREAM_NAME, last_seq)
    second = _Running(Relay(service.recorder, nc, poll_interval=0.02))
    after = _by_position(await second.chain(js, service))
    assert after == before
    await asyncio.to_thread(_teams, service, 5, 1)  # and it goes on publishing
    assert len(_by_position(await second.chain(js, service))) == len(before) + 1
    assert not second.task.done()
    await second.finish()


def _forged_grant(genuine: dict[str, Any], subject: str) -> bytes:
    """A forger's message: the repo's genuine grant copied, another subject named, a position
    of its own, its hash recomputed over the new contents."""
    body = {k: v for k, v in genuine.items() if k not in ("prev_hash", "hash")}
    body["position"] = 1_000_000_000
    body["data"] = {**body["data"], "subject": subject, "role": "editor"}
    digest = chain_hash(genuine["prev_hash"], body)
    chained = {**body, "prev_hash": genuine["prev_hash"], "hash": digest}
    return canonical_json(chained)


async def test_a_forged_grant_is_reported_never_acted_on_and_published_past(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mallory, bob = "user:mallory@example.com", "user:bob@example.com"
    root = tmp_path / "storage"
    async with running_tenancy(nats_server, tmp_path / "state") as tenancy:
        js = tenancy.client.jetstream()
        alerts = await tenancy.client.subscribe(STREAM_ALERT_SUBJECT)
        await tenancy.integration("local", f"file://{root}")
        async with running_worker("storage", tenancy.url, BackendConfig()):
            await tenancy.ok(
                "create_ml_repo", {"name": "fraud-models", "storage_integration": "local"}
            )
            await tenancy.wait_status("ml_repo", "fraud-models", "ready")
            genuine = await js.get_last_msg(STREAM_NAME, "tenantry.evt.ml_repo.access_granted")
            assert genuine.data is not None
            ack = await js.publish(
                "tenantry.evt.ml_repo.access_granted",
                _forged_grant(json.loads(genuine.data), mallory),
            )
            await tenancy.ok(
                "grant_repo_access", {"repo": "fraud-models", "subject": bob, "role": "viewer"}
            )
            # Created, granted to its creator, then bob's grant: one report each.
            await tenancy.wait_reports("ml_repo.storage_provisioned", "fraud-models", 3)
            policy = json.loads((root / "fraud-models" / ".tenantry-access.json").read_text())
            subjects = {grant["subject"] for grant in policy["grants"]}
            assert subjects == {ADMIN, bob}
            # The relay published past it: the chain holds every stored event.
            await wait_for_chain(js, tenancy.service.recorder)
            # Reported where auditors watch.
            deadline = time.monotonic() + 30
            while True:
                alert = json.loads((await alerts.next_msg(timeout=30)).data)
                if alert["seq"] == ack.seq:
                    break
                assert time.monotonic() < deadline
            assert alert["severity"] == "critical"
            assert alert["kind"] == "foreign"
            # And `audit verify` names it.
            verdict = await verify_live(tenancy.service.recorder, tenancy.client)
            assert not verdict.ok
            assert f"seq {ack.seq}" in verdict.report()
            # `tenantry health` fails until the forged message is removed and a live
            # verification passes.
            assert await _probe(Settings(nats_url=tenancy.url)) == 1
            await js.delete_msg(STREAM_NAME, ack.seq)
            monkeypatch.setenv("TENANTRY_NATS_URL", tenancy.url)
            monkeypatch.setenv("TENANTRY_STATE_DIR", str(tmp_path / "state"))
            assert await asyncio.to_thread(cli, ["audit", "verify"]) == 0
            assert await _probe(Settings(nats_url=tenancy.url)) == 0
