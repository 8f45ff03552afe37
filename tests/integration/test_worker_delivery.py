"""What reaches a worker's subscriptions that is not its own JetStream delivery, and what
others do to its durable consumer: neither ends the worker nor loses an event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from domain.event_log import STREAM_NAME
from tenantry.server.nats_server import NatsServer
from tests.integration.provisioning import (
    Tenancy,
    git_init,
    running_tenancy,
    running_worker,
    wait_until,
)
from workers import BackendConfig

DURABLE = "tenantry-namespaces"


@pytest.fixture
async def tenancy(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Tenancy]:
    async with running_tenancy(nats_server, tmp_path / "state") as t:
        await t.cluster()
        yield t


async def _workspace(tenancy: Tenancy, name: str) -> None:
    await tenancy.ok("create_workspace", {"cluster": "prod-eu", "name": name, "environment": "dev"})


async def test_a_foreign_message_on_a_workers_inboxes_is_skipped(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    # Whoever may subscribe to the JetStream API sees the pulls, and with them the inboxes
    # the worker's messages arrive on: its durable's and its state follower's.
    inboxes: set[str] = set()

    async def spy(msg: Msg) -> None:
        if msg.reply:
            inboxes.add(msg.reply)

    await tenancy.client.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.>", cb=spy)
    config = BackendConfig(gitops_root=git_init(tmp_path / "gitops"))
    async with running_worker("namespaces", tenancy.url, config) as worker:
        await _workspace(tenancy, "first")
        await tenancy.wait_status("workspace", "prod-eu:first", "ready")
        assert len(inboxes) >= 2, inboxes  # the durable's and the follower's
        for inbox in inboxes:
            await tenancy.client.publish(inbox, b"not an event")
            await tenancy.client.publish(inbox, b"{}", headers={"Status": "100"})
        await tenancy.client.flush()

        await _workspace(tenancy, "second")
        await wait_until(
            lambda: worker.task.done() or tenancy.workspace("prod-eu:second").status == "ready"
        )
        assert not worker.task.done(), worker.task.exception()
        await _workspace(tenancy, "third")
        await tenancy.wait_status("workspace", "prod-eu:third", "ready")
        assert not worker.task.done()


async def test_a_durable_rewritten_by_someone_else_is_put_back_and_nothing_is_skipped(
    tenancy: Tenancy, tmp_path: Path
) -> None:
    config = BackendConfig(gitops_root=git_init(tmp_path / "gitops"))
    async with running_worker("namespaces", tenancy.url, config) as worker:
        await _workspace(tenancy, "first")
        await tenancy.wait_status("workspace", "prod-eu:first", "ready")
        # Another client points the worker's durable at nothing it acts on: while it stays
        # so, the stream's cursor moves past every workspace event.
        js = tenancy.client.jetstream()
        await js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                name=DURABLE,
                durable_name=DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                max_ack_pending=1,
                filter_subjects=["tenantry.evt.nothing.here"],
            ),
        )
        for name in ("second", "third"):
            await _workspace(tenancy, name)
        await wait_until(
            lambda: (
                worker.task.done()
                or all(
                    tenancy.workspace(f"prod-eu:{name}").status == "ready"
                    for name in ("second", "third")
                )
            )
        )
        assert not worker.task.done(), worker.task.exception()
        info = await js.consumer_info(STREAM_NAME, DURABLE)
        assert "tenantry.evt.workspace.created" in (info.config.filter_subjects or [])
