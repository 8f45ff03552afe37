"""Fixtures: a seeded in-memory service, one per store, and one with authorization on."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.authorization import Authorization

from .support import ADMIN, STORES, Tenancy, make_tenancy


@pytest.fixture
def tenancy() -> Tenancy:
    """Seeded with dev, staging and prod; authorization off."""
    return make_tenancy()


@pytest.fixture(params=sorted(STORES))
def tenancy_on_each_store(request: pytest.FixtureRequest) -> Tenancy:
    """The same test against each in-memory store (their position lookups differ)."""
    return make_tenancy(request.param)


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
