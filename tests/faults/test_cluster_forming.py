"""`tenantry serve relay` started while its JetStream cluster has no quorum yet (one node of
three up: nodes starting together, as in docker-compose.yml, or coming back one by one), so
that JetStream answers nothing. The relay must wait for the cluster and then publish, not end
at its first request (with compose's `restart:` that would be hidden, not fixed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from domain.service import TenancyService
from tests.faults.nats_cluster import NatsCluster
from tests.faults.processes import Served, serve_env, stop_all, wait_until
from tests.integration.streams import assert_stream_matches_store, wait_for_stream


@pytest.fixture
def relay(
    tmp_path: Path, forming_cluster: NatsCluster, seeded_store: TenancyService
) -> Iterator[Served]:
    env = serve_env(tmp_path / "state", forming_cluster.url, TENANTRY_STREAM_REPLICAS="3")
    served = Served("relay", env, tmp_path / "relay.log")
    yield served
    stop_all([served])


async def test_a_relay_started_before_the_cluster_has_a_quorum_waits_for_it(
    forming_cluster: NatsCluster, relay: Served, seeded_store: TenancyService
) -> None:
    first, *others = forming_cluster.nodes.values()
    first.start()
    relay.start()

    # It asks JetStream and gets no answer (each request waits for its timeout): it says so,
    # and is still there.
    async def told() -> bool:
        assert relay.alive(), relay.tail()
        return bool(relay.events("relay.stream_unavailable"))

    await wait_until(told, 60, "the relay to find JetStream unavailable")
    for node in others:
        node.start()

    nc = await nats.connect(
        forming_cluster.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        messages = await wait_for_stream(nc.jetstream(), seeded_store.recorder, timeout=60)
    finally:
        await nc.close()
    assert_stream_matches_store(messages, seeded_store.recorder)
    assert relay.alive() and relay.starts == 1, relay.tail()
