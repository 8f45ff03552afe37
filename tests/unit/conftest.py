"""Fixtures: a seeded in-memory service, one per store, and one with authorization on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from domain.authorization import Authorization
from domain.service import TenancyService
from domain.sqlite_store import SQLiteRecorder

from .support import ADMIN, STORES, Tenancy, make_tenancy


@pytest.fixture
def tenancy() -> Tenancy:
    """Seeded with dev, staging and prod; authorization off."""
    return make_tenancy()


@pytest.fixture(params=[*sorted(STORES), "sqlite-file"])
def tenancy_on_each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tenancy]:
    """The same test against each in-memory store (their position lookups differ), and SQLite
    in a file (where the service reads aggregates on connections of its own:
    domain/sqlite_store.py)."""
    if request.param == "sqlite-file":
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e")}
        svc = TenancyService(env)
        assert isinstance(svc.recorder, SQLiteRecorder)
        assert svc.seed_default_environments()
        yield Tenancy(svc)
        svc.close()
        return
    yield make_tenancy(request.param)


@pytest.fixture
def secured() -> Callable[..., Tenancy]:
    """A service with authorization on: `secured(admins=...)`, ADMIN the tenant admin by default."""

    def build(admins: frozenset[str] = frozenset({ADMIN})) -> Tenancy:
        return make_tenancy(authorization=Authorization(admins=admins))

    return build


@pytest.fixture
def repo_world(tenancy: Tenancy) -> Tenancy:
    """A cluster, a workspace on it, a storage integration and a repo whose admin is ADMIN."""
    tenancy.cluster()
    tenancy.workspace()
    tenancy.integration()
    tenancy.repo()
    return tenancy
