"""Shared fixtures: a real nats-server per test, PostgreSQL schemas, event-store settings."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TextIO, cast

import nats
import pytest
import structlog
from nats.aio.client import Client

from tenantry.logs import _CurrentStderr
from tenantry.server.nats_server import NatsServer
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.integration.s3_server import CountingProxy, MotoServer

# The product's log lines at info and above, on the stderr pytest captures for each test
# (unconfigured, structlog prints every level, debug too, on stdout). Not cached, so that
# structlog.testing.capture_logs sees what a test logs.
structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
    cache_logger_on_first_use=False,
)

POSTGRES_URL = os.environ.get(
    "TENANTRY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc)


@pytest.fixture(scope="session")
def postgres_ready() -> None:
    problem = _postgres_available()
    if problem is None:
        return
    message = f"PostgreSQL at {POSTGRES_URL} is not available: {problem}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
    pytest.skip(message)


def _fresh_schema() -> Iterator[str]:
    """The URL of a schema of its own (not created: Tenantry creates it), dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}?schema={schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_url(postgres_ready: None) -> Iterator[str]:
    """A fresh schema per test, dropped afterwards: tests never see each other's events."""
    yield from _fresh_schema()


@pytest.fixture
def other_postgres_url(postgres_ready: None) -> Iterator[str]:
    """A second fresh schema, for a test that compares two stores."""
    yield from _fresh_schema()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture
def sqlite_env(sqlite_settings: Settings) -> dict[str, str]:
    return event_store_env(sqlite_settings)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A plain connection to `nats_server`."""
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


# --- an S3-speaking server (moto), for the S3 storage backend ------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto_server, one per test module (started once: it takes a few seconds)."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture
def s3_proxy(moto: MotoServer) -> Iterator[CountingProxy]:
    """moto emptied, behind a proxy that counts requests and can fail the next few."""
    moto.reset()
    proxy = CountingProxy(moto.port).start()
    yield proxy
    proxy.stop()
