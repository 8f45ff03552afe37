"""`tenantry serve checkpoints` started while its JetStream cluster has no quorum yet, as
`tenantry serve relay` in test_cluster_forming.py: it must wait for the cluster, then sign the
log, not end at its first request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from domain.service import TenancyService
from tenantry.audit.checkpoint import generate_key_pair, load_public_key, signature_problem
from tenantry.audit.checkpoints import CHECKPOINT_STREAM
from tests.faults.nats_cluster import NatsCluster
from tests.faults.processes import Served, serve_env, stop_all, wait_until


@pytest.fixture
def roles(
    tmp_path: Path, forming_cluster: NatsCluster, seeded_store: TenancyService
) -> Iterator[list[Served]]:
    generate_key_pair(tmp_path / "signing.key")
    env = serve_env(
        tmp_path / "state",
        forming_cluster.url,
        TENANTRY_STREAM_REPLICAS="3",
        TENANTRY_SIGNING_KEY=str(tmp_path / "signing.key"),
        TENANTRY_CHECKPOINT_SECONDS="0.2",
    )
    served = [
        Served("relay", env, tmp_path / "relay.log"),
        Served("checkpoints", env, tmp_path / "checkpoints.log"),
    ]
    yield served
    stop_all(served)


async def test_checkpoints_started_before_the_cluster_has_a_quorum_wait_and_then_sign(
    forming_cluster: NatsCluster, roles: list[Served], tmp_path: Path
) -> None:
    _, checkpoints = roles
    first, *others = forming_cluster.nodes.values()
    first.start()
    for served in roles:
        served.start()

    async def told() -> bool:
        assert checkpoints.alive(), checkpoints.tail()
        return bool(checkpoints.events("checkpoint.start_failed"))

    await wait_until(told, 60, "the checkpoints role to find JetStream unavailable")
    for node in others:
        node.start()

    async def signed() -> bool:
        assert checkpoints.alive(), checkpoints.tail()
        return bool(checkpoints.events("checkpoint.published"))

    await wait_until(signed, 60, "a checkpoint")
    nc = await nats.connect(
        forming_cluster.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        js = nc.jetstream()
        info = await js.stream_info(CHECKPOINT_STREAM)
        newest = json.loads((await js.get_msg(CHECKPOINT_STREAM, seq=info.state.last_seq)).data)
    finally:
        await nc.close()
    assert info.config.num_replicas == 3
    assert signature_problem(newest, load_public_key(tmp_path / "signing.key.pub")) is None
    assert newest["checkpoint"]["tree_size"] == 3
    assert checkpoints.alive() and checkpoints.starts == 1, checkpoints.tail()
