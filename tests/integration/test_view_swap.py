"""Rebuilding the views beside the live ones and swapping them in (`projections.swap`), on a
real SQLite file and a real PostgreSQL schema shared with the event store: the swapped-in views
hold exactly what a rebuild from zero holds, the live views answer whole all along, and a
rebuild cut short leaves them untouched."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import func, select

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import INTERNAL_TOPICS, read_batch
from domain.service import TenancyService
from projections import schema
from projections.runner import PROJECTORS, ProjectionRunner, rebuild
from projections.store import Tracking, ViewStore, read_tracking, write_tracking
from projections.swap import beside_url, rebuild_beside
from tenantry.server.store import event_store_env, postgres_env, view_store_url
from tenantry.settings import Settings
from tests.integration.views import dump
from tests.integration.world import CHANGES, WORLD, Step


def _send(service: TenancyService, steps: list[Step]) -> None:
    for name, body, actor in steps:
        service.handle(
            COMMANDS[name].model_validate(body), CommandContext(actor, str(uuid.uuid4()), "c")
        )


def _whole(store: ViewStore, published_up_to: dict[int, int]) -> tuple[int, int]:
    """(tracking position, audit rows) read in one snapshot; fails if the audit view does not
    hold exactly the published events up to the tracking position (a half-built store)."""
    with store.snapshot() as conn:
        position = read_tracking(conn).position
        rows = conn.execute(select(func.count()).select_from(schema.audit_events)).scalar_one()
    assert rows == published_up_to[position], (position, rows)
    return position, rows


class SwapContract:
    """Subclasses provide `store_env`, `view_url`, `reference_url` (an empty store) and
    `qualified` (a table's name in the live store, for SQL run outside its schema)."""

    def qualified(self, table: str) -> str:
        raise NotImplementedError

    @pytest.fixture
    def service(self, store_env: dict[str, str]) -> Iterator[TenancyService]:
        service = TenancyService(store_env)
        service.seed_default_environments()
        _send(service, WORLD + CHANGES)
        yield service
        service.close()

    @pytest.fixture
    def live(self, view_url: str) -> Iterator[ViewStore]:
        store = ViewStore.from_url(view_url)
        store.create_tables()
        yield store
        store.close()

    @staticmethod
    def published_up_to(service: TenancyService) -> dict[int, int]:
        """Published events at or before each store position."""
        counts, published = {0: 0}, 0
        for notification in service.recorder.select_notifications(None, 1_000_000):
            published += notification.topic not in INTERNAL_TOPICS
            counts[notification.id] = published
        return counts

    def test_the_swapped_in_views_are_a_rebuild_from_zero(
        self, service: TenancyService, live: ViewStore, view_url: str, reference_url: str
    ) -> None:
        # The live views stand part way, with rows a rebuild would not have (applied twice).
        ProjectionRunner(service.recorder, live).catch_up(limit=40)
        before = dump(live)
        head = service.recorder.max_notification_id()
        assert head is not None and live.position() < head
        assert rebuild_beside(service.recorder, view_url, batch_size=7) == head
        reference = ViewStore.from_url(reference_url)
        rebuild(service.recorder, reference)
        rebuilt = dump(reference)
        reference.close()
        assert all(rebuilt.values()), "every table has rows to compare"
        assert dump(live) == rebuilt != before
        assert live.position() == head
        # The fresh store is gone; the event store (on PostgreSQL, in the same schema) works on.
        assert not _exists(beside_url(view_url))
        _send(service, WORLD[-1:])
        ProjectionRunner(service.recorder, live).catch_up()
        assert live.position() == service.recorder.max_notification_id() > head

    def test_a_rebuild_cut_short_leaves_the_live_views_whole_and_is_begun_again(
        self, service: TenancyService, live: ViewStore, view_url: str
    ) -> None:
        ProjectionRunner(service.recorder, live).catch_up()
        before = dump(live)
        # A rebuild stopped part way (the process killed): its store is left beside.
        cut = ViewStore.from_url(beside_url(view_url))
        cut.create_tables()
        ProjectionRunner(service.recorder, cut, batch_size=5).catch_up(limit=15)
        cut.close()
        assert dump(live) == before
        assert rebuild_beside(service.recorder, view_url) == live.position()
        assert dump(live) == before

    def test_a_store_of_an_older_layout_is_replaced(
        self, service: TenancyService, live: ViewStore, view_url: str
    ) -> None:
        with live.unscoped() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {self.qualified('view_access_intervals')} (r TEXT)")
        runner = ProjectionRunner(service.recorder, live)
        with pytest.raises(RuntimeError, match="rebuild-views"):
            runner.catch_up()
        position = rebuild_beside(service.recorder, view_url)
        assert ProjectionRunner(service.recorder, live).catch_up() == 0
        assert live.position() == position == service.recorder.max_notification_id()

    def test_the_live_views_answer_whole_while_rebuilt_and_swapped(
        self, service: TenancyService, live: ViewStore, view_url: str
    ) -> None:
        counts = self.published_up_to(service)
        ProjectionRunner(service.recorder, live).catch_up(limit=60)
        done = threading.Event()
        seen = [_whole(live, counts)]
        failures: list[BaseException] = []

        def read() -> None:
            try:
                while not done.is_set():
                    seen.append(_whole(live, counts))
                seen.append(_whole(live, counts))
            except BaseException as exc:  # reported by the test below
                failures.append(exc)

        def apply() -> None:  # the live runner goes on meanwhile, a few events a batch
            runner = ProjectionRunner(service.recorder, live, batch_size=3)
            try:
                while not done.is_set() and runner.catch_up(limit=3):
                    pass
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=read), threading.Thread(target=apply)]
        for thread in threads:
            thread.start()
        try:
            position = rebuild_beside(service.recorder, view_url, batch_size=5)
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert failures == []
        assert seen[-1] == (position, counts[position])
        assert seen[0][0] == 60 < position == service.recorder.max_notification_id()


def _exists(url: str) -> bool:
    if url.startswith("sqlite"):
        return Path(url.removeprefix("sqlite:///")).exists()
    store = ViewStore.from_url(url)
    try:
        with store.unscoped() as conn:
            name = url.rsplit("schema=", 1)[1]
            found = conn.exec_driver_sql(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %(n)s", {"n": name}
            ).first()
    finally:
        store.close()
    return found is not None


class TestSQLiteSwap(SwapContract):
    def qualified(self, table: str) -> str:
        return table

    def test_the_live_file_stays_in_wal_mode_though_built_without_a_journal(
        self, service: TenancyService, live: ViewStore, view_url: str
    ) -> None:
        rebuild_beside(service.recorder, view_url)
        with closing(sqlite3.connect(view_url.removeprefix("sqlite:///"))) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    @pytest.fixture
    def store_env(self, sqlite_settings: Settings) -> dict[str, str]:
        return event_store_env(sqlite_settings)

    @pytest.fixture
    def view_url(self, sqlite_settings: Settings) -> str:
        return view_store_url(sqlite_settings)

    @pytest.fixture
    def reference_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'reference' / 'views.sqlite'}"


@pytest.mark.postgres
class TestPostgresSwap(SwapContract):
    @pytest.fixture(autouse=True)
    def _schema(self, postgres_url: str) -> None:
        self.schema = postgres_url.rsplit("schema=", 1)[1]

    def qualified(self, table: str) -> str:
        return f'"{self.schema}"."{table}"'

    @pytest.fixture
    def store_env(self, postgres_url: str) -> dict[str, str]:
        return postgres_env(postgres_url)

    @pytest.fixture
    def view_url(self, postgres_url: str) -> Iterator[str]:
        # The views share the event store's schema; the fresh one beside it is dropped too.
        yield postgres_url
        if _exists(beside_url(postgres_url)):
            store = ViewStore.from_url(beside_url(postgres_url))
            with store.unscoped() as conn:
                conn.exec_driver_sql(
                    f'DROP SCHEMA "{beside_url(postgres_url).rsplit("schema=", 1)[1]}" CASCADE'
                )
            store.close()

    @pytest.fixture
    def reference_url(self, other_postgres_url: str) -> str:
        return other_postgres_url

    def test_the_swap_waits_for_a_batch_in_progress_without_a_deadlock(
        self, service: TenancyService, live: ViewStore, view_url: str
    ) -> None:
        """The runner's batch holds the tracking row, then writes the views: a swap that
        locked a view table before the tracking table would deadlock with it."""
        swapped: list[int] = []
        swapping = threading.Thread(
            target=lambda: swapped.append(rebuild_beside(service.recorder, view_url))
        )
        with live.write() as conn:  # what `ProjectionRunner._apply_batch` does, held open
            before = read_tracking(conn, lock=True)
            swapping.start()
            _until_a_lock_waits(f'LOCK TABLE "{self.schema}".%')
            batch = read_batch(service.recorder, before.position, before.hash, 50)
            for project in PROJECTORS:
                project(conn, batch.events)
            write_tracking(conn, before, Tracking(batch.position, batch.hash))
        swapping.join()
        assert swapped == [service.recorder.max_notification_id()] == [live.position()]


def _until_a_lock_waits(statement: str) -> None:
    """Return once a session runs `statement` (a LIKE pattern) and waits for a lock."""
    import psycopg

    from tests.conftest import POSTGRES_URL

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for _ in range(6_000):  # a guard against hanging, not a timing: 60 s
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                (statement,),
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"no session waited on a lock running {statement}")


def _tenantry(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TENANTRY_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "tenantry.cli", *args],
        env={**env, "TENANTRY_STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rebuild_views_on_the_command_line(sqlite_settings: Settings, tmp_path: Path) -> None:
    missing = _tenantry(tmp_path / "nothing", "rebuild-views")
    assert missing.returncode == 2
    assert "no event store" in missing.stderr
    service = TenancyService(event_store_env(sqlite_settings))
    service.seed_default_environments()
    _send(service, WORLD)
    live = ViewStore.from_url(view_store_url(sqlite_settings))
    live.create_tables()
    ProjectionRunner(service.recorder, live).catch_up(limit=10)
    reference = ViewStore.from_url(f"sqlite:///{tmp_path / 'reference.sqlite'}")
    rebuild(service.recorder, reference)
    head = service.recorder.max_notification_id()
    service.close()
    assert _tenantry(sqlite_settings.state_dir, "rebuild-views", "--batch", "0").returncode == 2
    done = _tenantry(sqlite_settings.state_dir, "rebuild-views", "--batch", "9")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"views rebuilt to position {head} and swapped in\n"
    assert dump(live) == dump(reference)
    live.close()
    reference.close()
