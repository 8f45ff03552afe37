"""The default environments: dev, staging and prod, seeded once per store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from domain.environment import Environment
from domain.service import SEED_ACTOR, TenancyService

from .support import Tenancy, make_tenancy


def _sqlite(path: Path) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "10",
    }


def _environments(svc: TenancyService) -> dict[str, tuple[bool, str, str | None]]:
    found = {}
    for name in ("dev", "staging", "prod"):
        env: Environment = svc.repository.get(Environment.create_id(name))
        if env.live:
            found[name] = (env.is_production, env.optimize_for, env.color)
    return found


def test_a_new_store_is_seeded_with_dev_staging_and_prod() -> None:
    t = make_tenancy(seed=False)

    assert t.svc.seed_default_environments() is True

    assert _environments(t.svc) == {
        "dev": (False, "cost", None),
        "staging": (False, "cost", None),
        "prod": (True, "availability", None),
    }
    created = [e for e in t.events() if e["type"] == "environment.created"]
    assert [e["name"] for e in created] == ["dev", "staging", "prod"]
    assert {e["actor"] for e in created} == {SEED_ACTOR}


def test_seeding_happens_once(tenancy: Tenancy) -> None:
    written = tenancy.position()

    assert tenancy.svc.seed_default_environments() is False
    assert tenancy.position() == written


def test_the_defaults_can_be_changed_and_a_deleted_one_is_not_seeded_again(
    tenancy: Tenancy,
) -> None:
    tenancy.run("update_environment", {"name": "prod", "color": "#ff0000"})
    tenancy.run("delete_environment", {"name": "dev"})
    written = tenancy.position()

    assert tenancy.svc.seed_default_environments() is False

    assert tenancy.position() == written
    assert _environments(tenancy.svc) == {
        "staging": (False, "cost", None),
        "prod": (True, "availability", "#ff0000"),
    }


def test_an_environment_created_before_seeding_is_kept_as_it_is() -> None:
    t = make_tenancy(seed=False)
    t.run("create_environment", {"name": "prod", "color": "#00ff00"})

    assert t.svc.seed_default_environments() is True

    assert _environments(t.svc)["prod"] == (False, "cost", "#00ff00")
    assert set(_environments(t.svc)) == {"dev", "staging", "prod"}


def test_a_second_service_on_the_same_store_does_not_seed_again(tmp_path: Path) -> None:
    env = _sqlite(tmp_path / "events.sqlite")
    first = TenancyService(env)
    assert first.seed_default_environments() is True
    written = first.recorder.max_notification_id()

    second = TenancyService(env)

    assert second.seed_default_environments() is False
    assert second.recorder.max_notification_id() == written
    assert set(_environments(second)) == {"dev", "staging", "prod"}


def _seed_at_once(services: list[TenancyService]) -> list[bool | Exception]:
    barrier = threading.Barrier(len(services))
    answers: list[bool | Exception] = [False] * len(services)

    def seed(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = services[i].seed_default_environments()
        except Exception as error:  # an answer to assert on, not a crash of the thread
            answers[i] = error

    threads = [threading.Thread(target=seed, args=(i,)) for i in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize("attempt", range(10))
def test_two_services_seeding_at_once_seed_once(tmp_path: Path, attempt: int) -> None:
    env = _sqlite(tmp_path / "events.sqlite")
    services = [TenancyService(env), TenancyService(env)]

    answers = _seed_at_once(services)

    assert sorted(answers, key=str) == [False, True], answers
    created = services[0].recorder.select_notifications(
        None, 100, topics=["domain.environment:Environment.Created"]
    )
    assert len(created) == 3
