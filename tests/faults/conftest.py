"""Fixtures of the fault tests that start roles against a JetStream cluster still forming."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.service import TenancyService
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.faults.nats_cluster import NatsCluster


@pytest.fixture
def forming_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A three-node cluster made but not started: the test starts it, node by node."""
    nats_cluster = NatsCluster.create(tmp_path / "nats")
    yield nats_cluster
    nats_cluster.stop()


@pytest.fixture
def seeded_store(tmp_path: Path) -> Iterator[TenancyService]:
    """The SQLite event store under `tmp_path / "state"`, seeded: events to publish and sign."""
    service = TenancyService(event_store_env(Settings(state_dir=tmp_path / "state")))
    service.seed_default_environments()
    yield service
    service.close()
