"""A worker's stream follower (its ephemeral, unreplicated consumer, see workers/follower.py) on
a three-node JetStream cluster, when the node holding that consumer is SIGKILLed: the consumer
is gone with its node and asking about it times out (it is not "not found"). The follower must
make a new one where it stands and carry on, each event folded once, instead of failing every
action of its worker until an operator restarts it (seen in the production-layout test: the
namespace worker retried one event for minutes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import APIError

from domain.event_log import STREAM_NAME, SUBJECT_PREFIX, ZERO_HASH, chain_hash
from tests.faults.nats_cluster import NatsCluster, stream_leader
from tests.faults.processes import wait_until
from workers.errors import TransientError
from workers.follower import StreamFollower


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats_cluster = NatsCluster.create(tmp_path / "nats").start()
    yield nats_cluster
    nats_cluster.stop()


@pytest.fixture
async def client(cluster: NatsCluster) -> AsyncIterator[Client]:
    nc = await nats.connect(cluster.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield nc
    await nc.close()


async def test_a_follower_whose_consumer_died_with_its_node_makes_a_new_one(
    cluster: NatsCluster, client: Client
) -> None:
    js = client.jetstream(timeout=2.0)

    async def stream_created() -> bool:
        try:  # as the relay makes it: replicated on every node
            await js.add_stream(name=STREAM_NAME, subjects=[SUBJECT_PREFIX + ">"], num_replicas=3)
        except (TimeoutError, APIError, nats.errors.Error):
            return False  # the cluster has yet to elect its meta leader
        return True

    await wait_until(stream_created, 60, "the stream created")

    head = ZERO_HASH

    async def publish(first: int, count: int) -> int:
        """Hash-chained bodies, as the relay publishes them: the follower believes no other."""
        nonlocal head
        last = 0
        for i in range(first, first + count):
            body = {"i": i, "prev_hash": head, "hash": chain_hash(head, {"i": i})}
            head = body["hash"]
            ack = await js.publish(f"{SUBJECT_PREFIX}team.created", json.dumps(body).encode())
            last = ack.seq
        return last

    folded: list[tuple[int, Any]] = []
    follower = StreamFollower(
        js, "test-state", [SUBJECT_PREFIX + ">"], lambda seq, body: folded.append((seq, body["i"]))
    )
    try:
        await follower.catch_up(await publish(0, 20))
        assert [i for _, i in folded] == list(range(20))

        consumer = await js.consumer_info(STREAM_NAME, follower._consumer or "")
        assert consumer.cluster is not None and consumer.cluster.leader
        cluster.nodes[consumer.cluster.leader].kill()
        await stream_leader(client, STREAM_NAME, within=60)  # a new one, if it was that node

        last = await publish(20, 20)

        async def caught_up() -> bool:
            # As the worker does: a catch-up that fails (the cluster may still be electing
            # the meta leader that places the new consumer) is retried, never fatal.
            try:
                await follower.catch_up(last)
            except (TransientError, TimeoutError, nats.errors.Error):
                return False
            return True

        await wait_until(caught_up, 60, "the follower caught up after the kill")
    finally:
        await follower.close()
    assert [i for _, i in folded] == list(range(40))  # each once, in order
    assert [seq for seq, _ in folded] == list(range(1, 41))
