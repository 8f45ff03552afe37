"""The stores a contract test class runs on, written once: `class TestX(OnSQLite, XContract)`.
A class on PostgreSQL still carries `@pytest.mark.postgres` itself (the mark says what it needs)."""

from __future__ import annotations

import pytest

from tenantry.server.store import event_store_env, postgres_env, view_store_url
from tenantry.settings import Settings


class OnSQLite:
    @pytest.fixture
    def store_env(self, sqlite_settings: Settings) -> dict[str, str]:
        return event_store_env(sqlite_settings)

    @pytest.fixture
    def view_url(self, sqlite_settings: Settings) -> str:
        return view_store_url(sqlite_settings)


class OnPostgres:
    @pytest.fixture
    def store_env(self, postgres_url: str) -> dict[str, str]:
        return postgres_env(postgres_url)

    @pytest.fixture
    def view_url(self, postgres_url: str) -> str:
        # The views share the event store's database and schema (their tables are `view_…`).
        return postgres_url
