"""One store test case, run against SQLite and PostgreSQL alike (same class, two backends)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.environment import Environment
from domain.errors import AlreadyExists, DomainError
from domain.event_log import INTERNAL_TOPICS
from domain.service import TenancyService
from tenantry.protocol import CommandReply
from tests.integration.backends import OnPostgres, OnSQLite


def _run(
    service: TenancyService, name: str, body: dict[str, object], command_id: str | None = None
) -> CommandReply:
    context = CommandContext("user:ana@example.com", command_id or str(uuid.uuid4()), "corr")
    return service.handle(COMMANDS[name].model_validate(body), context)


class EventStoreContract:
    """What every backend must do. Subclasses provide `store_env`."""

    @pytest.fixture
    def open_service(self, store_env: dict[str, str]) -> Callable[[], TenancyService]:
        opened: list[TenancyService] = []

        def _open() -> TenancyService:
            service = TenancyService(store_env)
            opened.append(service)
            return service

        yield _open  # type: ignore[misc]
        for service in opened:
            service.close()

    def test_events_survive_a_reopen_with_their_positions(
        self, open_service: Callable[[], TenancyService]
    ) -> None:
        first = open_service()
        first.seed_default_environments()
        result = _run(first, "create_environment", {"name": "qa", "color": "#123456"}, "c-1")
        first.close()
        second = open_service()
        env = second.repository.get(Environment.create_id("qa"))
        assert (env.name, env.color, env.version) == ("qa", "#123456", 1)
        replay = _run(second, "create_environment", {"name": "qa", "color": "#123456"}, "c-1")
        assert replay.replayed and replay.position == result.position

    def test_positions_strictly_increase_and_replies_name_the_last_one(
        self, open_service: Callable[[], TenancyService]
    ) -> None:
        service = open_service()
        service.seed_default_environments()
        positions = [_run(service, "create_team", {"name": f"t{i}"}).position for i in range(5)]
        assert positions == sorted(set(positions))
        assert positions[-1] == service.recorder.max_notification_id()
        notifications = service.recorder.select_notifications(None, 1000)
        ids = [n.id for n in notifications]
        assert ids == sorted(set(ids))
        # Each command's last stored event is its (internal) idempotency record.
        by_id = {n.id: n for n in notifications}
        assert all(by_id[p].topic in INTERNAL_TOPICS for p in positions)

    def test_a_refused_command_writes_nothing(
        self, open_service: Callable[[], TenancyService]
    ) -> None:
        service = open_service()
        service.seed_default_environments()
        _run(
            service,
            "register_cluster",
            {
                "name": "prod-eu",
                "region": "eu-west-1",
                "provider": "aws-eks",
                "environments": ["prod"],
            },
        )
        before = service.recorder.max_notification_id()
        with pytest.raises(DomainError):
            # Would write the workspace and a link on the cluster before failing on the repo.
            _run(
                service,
                "create_workspace",
                {
                    "cluster": "prod-eu",
                    "name": "fraud",
                    "environment": "prod",
                    "ml_repo_access": [{"repo": "missing", "role": "viewer"}],
                },
            )
        assert service.recorder.max_notification_id() == before

    def test_eight_concurrent_creates_give_one_success(
        self, open_service: Callable[[], TenancyService]
    ) -> None:
        services = [open_service() for _ in range(2)]
        services[0].seed_default_environments()
        barrier = threading.Barrier(8)

        def create(i: int) -> str:
            barrier.wait()
            try:
                _run(services[i % 2], "create_environment", {"name": "race"})
            except AlreadyExists:
                return "already_exists"
            return "ok"

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(create, range(8)))
        assert sorted(outcomes) == ["already_exists"] * 7 + ["ok"]

    def test_default_environments_are_seeded_once_by_racing_processes(
        self, open_service: Callable[[], TenancyService]
    ) -> None:
        services = [open_service() for _ in range(4)]
        barrier = threading.Barrier(4)

        def seed(service: TenancyService) -> bool:
            barrier.wait()
            return service.seed_default_environments()

        with ThreadPoolExecutor(4) as pool:
            seeded = list(pool.map(seed, services))
        assert seeded.count(True) == 1
        topics = [n.topic for n in services[0].recorder.select_notifications(None, 100)]
        assert topics.count("domain.environment:Environment.Created") == 3


class TestSQLiteEventStore(OnSQLite, EventStoreContract):
    pass


@pytest.mark.postgres
class TestPostgresEventStore(OnPostgres, EventStoreContract):
    pass
