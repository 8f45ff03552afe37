"""The views and the relay agree on the hash chain at the same position, and a disagreement is
loud: a metric and an error log line (issue 13). Real SQLite stores, a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from structlog.testing import capture_logs

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import read_published
from domain.service import TenancyService
from projections.runner import ProjectionRunner
from projections.store import ViewStore, read_last_event
from tenantry.log.agreement import ChainAgreement
from tenantry.log.relay import Relay
from tenantry.server.metrics import Metrics
from tenantry.server.query_endpoint import serve_views
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.integration.streams import wait_for_stream

DISAGREEMENTS = "tenantry_chain_disagreements_total"


def _service(state: Path, team: str) -> TenancyService:
    service = TenancyService(event_store_env(Settings(state_dir=state)))
    service.seed_default_environments()
    for i in range(3):
        context = CommandContext("user:ana@example.com", str(uuid.uuid4()), "test")
        body = {"name": f"{team}-{i}", "members": ["ana@example.com"]}
        service.handle(COMMANDS["create_team"].model_validate(body), context)
    return service


@pytest.fixture
def store_a(tmp_path: Path) -> Iterator[TenancyService]:
    service = _service(tmp_path / "a", "alpha")
    yield service
    service.close()


@pytest.fixture
def store_b(tmp_path: Path) -> Iterator[TenancyService]:
    """Another store with the same commands at the same positions, different events."""
    service = _service(tmp_path / "b", "beta")
    yield service
    service.close()


@pytest.fixture
def views(tmp_path: Path) -> Iterator[ViewStore]:
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    store.create_tables()
    yield store
    store.close()


async def _published(service: TenancyService, nc: Client) -> None:
    """Run a relay on `service` until the stream holds every published event."""
    stop = asyncio.Event()
    relay = Relay(service.recorder, nc, poll_interval=0.05)
    task = asyncio.create_task(relay.run(stop))
    await wait_for_stream(nc.jetstream(), service.recorder)
    stop.set()
    await task


def _last_published(service: TenancyService) -> tuple[int, str]:
    *_, last = read_published(service.recorder)
    return last.body["position"], last.body["hash"]


def test_the_views_record_their_last_event_with_its_chain_hash(
    store_a: TenancyService, views: ViewStore
) -> None:
    ProjectionRunner(store_a.recorder, views).catch_up()
    with views.snapshot() as conn:
        mark = read_last_event(conn)
    assert mark is not None
    # The store's last record is a command record (internal): the views' position is past
    # the last event, whose own position and hash are what is recorded.
    assert views.position() > mark.position
    assert (mark.position, mark.hash) == _last_published(store_a)
    assert views.tracking().hash == mark.hash


async def test_views_and_relay_on_one_log_agree(
    store_a: TenancyService, views: ViewStore, nc: Client
) -> None:
    await _published(store_a, nc)
    ProjectionRunner(store_a.recorder, views).catch_up()
    metrics = Metrics()
    agreement = ChainAgreement(views, nc, metrics=metrics)
    with capture_logs() as logs:
        assert await agreement.check() is None
    assert agreement.compared == 1  # it did compare, and found them equal
    assert metrics.registry.get_sample_value(DISAGREEMENTS) == 0
    assert [e for e in logs if e["event"] == "chain.disagreement"] == []


async def test_a_disagreement_at_the_same_position_is_counted_and_logged(
    store_a: TenancyService, store_b: TenancyService, views: ViewStore, nc: Client
) -> None:
    """The relay publishes store A, the views follow store B (a view store paired with the
    wrong event store): same positions, different chains."""
    await _published(store_a, nc)
    ProjectionRunner(store_b.recorder, views).catch_up()
    position, views_hash = _last_published(store_b)
    stream_position, stream_hash = _last_published(store_a)
    assert position == stream_position and views_hash != stream_hash
    metrics = Metrics()
    agreement = ChainAgreement(views, nc, metrics=metrics)
    with capture_logs() as logs:
        found = await agreement.check()
        again = await agreement.check()
    assert found is not None
    assert (found.position, found.views_hash, found.stream_hash) == (
        position,
        views_hash,
        stream_hash,
    )
    assert again == found
    # Counted and logged once for the position, however often it is seen again.
    assert metrics.registry.get_sample_value(DISAGREEMENTS) == 1
    errors = [e for e in logs if e["event"] == "chain.disagreement"]
    assert len(errors) == 1
    assert errors[0]["log_level"] == "error"
    assert (errors[0]["position"], errors[0]["views_hash"], errors[0]["stream_hash"]) == (
        position,
        views_hash,
        stream_hash,
    )


async def test_the_query_service_reports_a_disagreement_on_its_own(
    store_a: TenancyService, store_b: TenancyService, views: ViewStore, nc: Client
) -> None:
    """Wired in the projections role: `serve_views` checks while it runs."""
    await _published(store_a, nc)
    metrics = Metrics()
    stop = asyncio.Event()
    with capture_logs() as logs:
        serving = asyncio.create_task(
            serve_views(
                store_b.recorder,
                views,
                nc,
                stop,
                asyncio.Event(),
                poll_interval=0.05,
                metrics=metrics,
                chain_check_every=0.05,
            )
        )
        deadline = asyncio.get_running_loop().time() + 30
        while not metrics.registry.get_sample_value(DISAGREEMENTS):
            assert asyncio.get_running_loop().time() < deadline, "no disagreement reported"
            await asyncio.sleep(0.02)
        stop.set()
        await serving
    assert metrics.registry.get_sample_value(DISAGREEMENTS) == 1
    assert [e["position"] for e in logs if e["event"] == "chain.disagreement"] == [
        _last_published(store_b)[0]
    ]


async def test_nothing_is_compared_before_the_relay_reaches_the_views(
    store_a: TenancyService, views: ViewStore, nc: Client
) -> None:
    """The stream behind the views (the relay not run yet): no comparison, no alarm."""
    ProjectionRunner(store_a.recorder, views).catch_up()
    metrics = Metrics()
    agreement = ChainAgreement(views, nc, metrics=metrics)
    assert await agreement.check() is None
    assert agreement.compared == 0
    assert metrics.registry.get_sample_value(DISAGREEMENTS) == 0
