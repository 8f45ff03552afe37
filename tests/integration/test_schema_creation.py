"""Roles started at the same moment against an empty PostgreSQL database: each creates the
schema, the event store's tables and the views' tables if missing, and none of them may fail
because another is creating the same ones (`duplicate key value violates unique constraint
"pg_type_typname_nsp_index"`, seen in `serve command` and `serve relay` started together)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from domain.service import TenancyService
from projections.store import ViewStore
from tenantry.server.bootstrap import build_service
from tenantry.server.roles import open_view_store
from tenantry.server.store import postgres_env
from tenantry.settings import Settings

STARTERS = 8
ROUNDS = 3  # fresh schemas raced on: the collision is likely, not certain, in any one round


def _start(settings: Settings, barrier: threading.Barrier, index: int) -> int:
    """What `tenantry serve` does first, for one role: the command role's store (seeded), or a
    store-reading role's, or the projections role's store and views; half of them open the
    views first, so that every creation meets another."""
    barrier.wait(timeout=30)
    seed = index % 2 == 0
    views: ViewStore | None = None
    service: TenancyService | None = None
    try:
        if index % 4 in (0, 1):
            service = build_service(settings, seed=seed)
            views = open_view_store(settings)
        else:
            views = open_view_store(settings)
            service = build_service(settings, seed=seed)
        return views.position()
    finally:
        if views is not None:
            views.close()
        if service is not None:
            service.close()


def _create_schema(url: str) -> None:
    import psycopg
    from psycopg import sql

    base, _, name = url.partition("?schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))


@pytest.mark.postgres
@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("schema", ["missing", "empty"])
def test_roles_started_together_on_an_empty_database_all_create_the_schema(
    postgres_url: str, tmp_path: Path, schema: str, round_: int
) -> None:
    if schema == "empty":  # as in docker-compose.yml: the database's own, empty, schema
        _create_schema(postgres_url)
    settings = Settings(state_dir=tmp_path / "state", database_url=postgres_url)
    barrier = threading.Barrier(STARTERS)
    with ThreadPoolExecutor(STARTERS) as pool:
        started = [pool.submit(_start, settings, barrier, i) for i in range(STARTERS)]
        positions = [future.result(timeout=60) for future in started]
    assert positions == [0] * STARTERS  # every starter got a usable, empty view store

    # One store came out of it: seeded once (the three default environments, one seed mark)
    # however many command services raced to seed it.
    store = TenancyService(postgres_env(postgres_url))
    try:
        topics = [n.topic for n in store.recorder.select_notifications(None, 100)]
    finally:
        store.close()
    assert sorted(topics) == sorted(
        ["domain.environment:Environment.Created"] * 3 + ["domain.seeding:Seed.Planted"]
    ), topics
