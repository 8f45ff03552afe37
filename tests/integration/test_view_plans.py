"""The temporal view's statements touch only what they need, whatever the history holds.

Every statement the projections run on the temporal view's tables while applying a history,
and every statement of `access_report` and `access_changes` (with and without their filters), is
recorded at the driver and explained by the database itself (EXPLAIN QUERY
PLAN on SQLite, EXPLAIN on PostgreSQL with sequential scans priced out, so that the plan shows
the index the planner would use on a big table). Each access to those tables must be one of:

- a lookup of *current* rows in the table of open rows (`view_access_open`) or through an index
  of open rows only (the holders', partial, `WHERE to_position IS NULL`): bounded by what is in
  force, not by history;
- a lookup of one row by its whole primary key;
- a search of the history with a *lower* time bound (`from_at > ?` or `to_at > ?`): the rows
  from the moment asked about on, never every row a key ever had.

Today's access (`check_access`, `subject_access`, `list_ml_repos` of a subject) is stricter: it
reads the table of open rows only, searched by the subject through an index, so that it stays
flat however long the history (issue 17) and however many subjects hold access.

No timing: the plans are what makes the cost independent of history (bench `scale` measures it).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService
from projections import schema
from projections.audit import utc_text
from projections.queries import QUERIES, answer
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tests.clock import ControlledClock
from tests.integration.backends import OnPostgres, OnSQLite
from tests.integration.world import ADMIN, CHANGES, WORLD

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TABLES = ("view_access_open", "view_access_ended", "view_access_holders")

# Beyond WORLD and CHANGES: a role change, an application leaving and coming back, a grant to a
# workspace with applications, a repo deleted with grants (its rows ended together).
MORE: list[tuple[str, dict[str, Any], str]] = [
    ("grant_repo_access", {"repo": "fraud-models", "subject": "user:ana@example.com",
                           "role": "viewer"}, ADMIN),
    ("grant_repo_access", {"repo": "fraud-models", "subject": "user:ana@example.com",
                           "role": "editor"}, ADMIN),
    ("add_team_member", {"team": "risk", "user": "ed@example.com"}, ADMIN),
    ("grant_repo_access", {"repo": "fraud-models", "subject": "team:risk", "role": "viewer"},
     ADMIN),
    ("remove_team_member", {"team": "risk", "user": "ed@example.com"}, ADMIN),
    ("revoke_repo_access", {"repo": "fraud-models", "subject": "user:ana@example.com"}, ADMIN),
]  # fmt: skip


def _history(service: TenancyService, clock: ControlledClock) -> None:
    service.seed_default_environments()
    for name, body, actor in [*WORLD, *CHANGES, *MORE]:
        clock.advance(timedelta(minutes=1))
        service.handle(
            COMMANDS[name].model_validate(body), CommandContext(actor, str(uuid.uuid4()), "t")
        )


class _Recorder:
    """The statements the driver ran (SQL and one set of its parameters), first seen first."""

    def __init__(self) -> None:
        self.statements: dict[str, Any] = {}
        self.now: dict[str, Any] = {}  # those of the queries of today's access
        self.on = True
        self.today = False  # recording the queries of today's access

    def add(self, sql: str, params: Any = None) -> None:
        if self.on and any(table in sql for table in TABLES):
            (self.now if self.today else self.statements).setdefault(sql, params)


def _touching(recorded: _Recorder) -> dict[str, Any]:
    """The statements that read rows of the temporal view (an INSERT of VALUES reads none)."""
    return {
        sql: params
        for sql, params in recorded.statements.items()
        if not (sql.lstrip().upper().startswith("INSERT") and "SELECT" not in sql.upper())
    }


def _queries(store: ViewStore) -> None:
    moment = (T0 + timedelta(minutes=10)).isoformat()
    later = (T0 + timedelta(days=1)).isoformat()
    for filters in ({}, {"repo": "fraud-models"}, {"subject": "team:risk"}):
        for name, params in (
            ("access_report", {"as_of": moment}),
            ("access_report", {"as_of": later}),
            ("access_changes", {"from": moment, "to": later}),
        ):
            model = QUERIES[name].params.model_validate_json(json.dumps({**params, **filters}))
            answer(store, name, model)


def _todays_access(store: ViewStore) -> None:
    subjects = (
        "user:bo@example.com",  # direct and through a team
        "team:risk",
        "workspace:prod-eu:fraud",
        "app:prod-eu:fraud:scorer",  # through its workspace
    )
    for subject in subjects:
        for name, params in (
            ("check_access", {"repo": "fraud-models", "action": "write"}),
            ("subject_access", {}),
            ("list_ml_repos", {}),
        ):
            model = QUERIES[name].params.model_validate({**params, "subject": subject})
            answer(store, name, model)


def _fault(table: str, index: str, condition: str) -> str | None:
    """Why an access to `table` through `index` with `condition` may scan history (None: it
    does not)."""
    if table == "view_access_open" or "_open" in index:
        return None  # current rows only
    if not index:
        return "no index"
    if re.search(r"\(?(from_at|to_at)\)?(::text)? ?>", condition):
        return None  # history from a lower bound (holders' too: their ended memberships)
    if table == "view_access_holders":
        return "current rows looked up through an index of every row ever"
    return "history searched without a lower time bound"


def _long_past(store: ViewStore, rows: int = 20_000) -> None:
    """A long history before T0 of the keys the statements ask about (ended rows): what makes
    an index walking history expensive, and PostgreSQL's planner (given statistics) see it."""
    keys = [
        (repo, subject)
        for repo in ("fraud-models", "churn-models")
        for subject in ("team:risk", "user:bo@example.com", "workspace:prod-eu:fraud")
    ]
    past = datetime(2025, 1, 1, tzinfo=UTC)
    values = []
    for i in range(rows):
        repo, subject = keys[i % len(keys)]
        began = utc_text(past + timedelta(minutes=i))
        values.append(
            {
                "from_position": -rows + i,
                "repo": repo,
                "subject": subject,
                "via": "direct",
                "role": "viewer",
                "from_at": began,
                "to_at": utc_text(past + timedelta(minutes=i, seconds=30)),
                "to_position": -rows + i,
                "granted_at": began,
                "granted_by": ADMIN,
                "start_change": "granted",
                "start_event": "ml_repo.access_granted",
                "start_actor": ADMIN,
                "end_change": "revoked",
                "end_event": "ml_repo.access_revoked",
                "end_actor": ADMIN,
            }
        )
    with store.write() as conn:
        conn.execute(schema.access_ended.insert(), values)
        if store.dialect == "postgresql":
            table = conn.dialect.identifier_preparer.format_table(schema.access_ended)
            schema_name = conn.get_execution_options()["schema_translate_map"][None]
            conn.exec_driver_sql(f'ANALYZE "{schema_name}".{table}')


class PlansContract:
    """Subclasses provide `store_env`, `view_url`, `record(store)` and `explain(...)`."""

    @pytest.fixture
    def recorded(self, store_env: dict[str, str], view_url: str) -> Iterator[_Recorder]:
        clock = ControlledClock(T0)
        service = TenancyService(store_env, clock=clock)
        _history(service, clock)
        store = ViewStore.from_url(view_url)
        store.create_tables()
        recorder = _Recorder()
        self.record(store, recorder)
        # One event per batch, then the rest in one: both paths of the batched view.
        runner = ProjectionRunner(service.recorder, store, batch_size=1)
        runner.catch_up(limit=40)
        ProjectionRunner(service.recorder, store, batch_size=500).catch_up()
        _queries(store)
        recorder.today = True
        _todays_access(store)
        recorder.on = False
        _long_past(store)
        self.store = store
        yield recorder
        store.close()
        service.close()

    def record(self, store: ViewStore, recorder: _Recorder) -> None:
        raise NotImplementedError

    def accesses(self, sql: str, params: Any) -> list[tuple[str, str, str]]:
        """(table, index or '' for none, the index condition) for each access to TABLES."""
        raise NotImplementedError

    def test_todays_access_searches_only_open_rows_by_subject(self, recorded: _Recorder) -> None:
        # With the repo (check_access) and without (the other two); SQLite's trace shows the
        # values, so one statement per subject there.
        assert any("repo" in sql.partition("WHERE")[2] for sql in recorded.now), recorded.now
        assert any("repo" not in sql.partition("WHERE")[2] for sql in recorded.now), recorded.now
        faults = []
        for sql, params in recorded.now.items():
            accesses = self.accesses(sql, params)
            assert accesses, sql
            # Through an index of open rows, by a key the query gave: the subject, or the repo
            # (a planner may prefer it for check_access; a repo's current rows are few too).
            keys = ("subject",) if "repo" not in sql.partition("WHERE")[2] else ("subject", "repo")
            for table, index, condition in accesses:
                searched = any(key in condition for key in keys)
                if "view_access_open" not in table or not index or not searched:
                    faults.append(f"{table} via {index or '-'} ({condition})\n  {sql}")
        assert not faults, "\n".join(faults)

    def test_every_statement_on_the_temporal_view_uses_a_selective_index(
        self, recorded: _Recorder
    ) -> None:
        statements = _touching(recorded)
        # The history exercised every kind of statement: lookups of open rows, ends, reports.
        assert len(statements) >= 12, list(statements)
        faults = []
        for sql, params in statements.items():
            for table, index, condition in self.accesses(sql, params):
                why = _fault(table, index, condition)
                if why:
                    faults.append(f"{why}: {table} via {index or '-'} ({condition})\n  {sql}")
        assert not faults, "\n".join(faults)


class TestSQLitePlans(OnSQLite, PlansContract):
    def record(self, store: ViewStore, recorder: _Recorder) -> None:
        @event.listens_for(store.engine, "connect")
        def _trace(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(recorder.add)

        store.engine.dispose()

    def accesses(self, sql: str, params: Any) -> list[tuple[str, str, str]]:
        found = []
        with self.store.engine.connect() as conn:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
        for *_, detail in plan:
            # A WITHOUT ROWID table's own key reads "USING PRIMARY KEY (...)".
            match = re.match(
                r"(SEARCH|SCAN) (\w+)(?: USING (?:COVERING )?(?:INDEX (\w+)|(PRIMARY KEY)))?"
                r"(?: \((.*)\))?",
                detail,
            )
            if match and match.group(2) in TABLES:
                index = match.group(3) or match.group(4) or ""
                found.append((match.group(2), index, match.group(5) or ""))
        return found


@pytest.mark.postgres
class TestPostgresPlans(OnPostgres, PlansContract):
    def record(self, store: ViewStore, recorder: _Recorder) -> None:
        import psycopg

        class Recording(psycopg.Cursor):  # type: ignore[type-arg]
            def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
                recorder.add(str(query), params)
                return super().execute(query, params, **kw)

            def executemany(self, query: Any, params_seq: Any, **kw: Any) -> Any:
                rows = list(params_seq)
                recorder.add(str(query), rows[0] if rows else None)
                return super().executemany(query, rows, **kw)

        @event.listens_for(store._base_engine, "connect")
        def _record(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.cursor_factory = Recording

        store._base_engine.dispose()

    def accesses(self, sql: str, params: Any) -> list[tuple[str, str, str]]:
        with self.store.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("SET enable_seqscan = off")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            (plan,) = cursor.fetchone()
            conn.rollback()
        found: list[tuple[str, str, str]] = []

        def walk(node: dict[str, Any]) -> None:
            relation = node.get("Relation Name")
            kind = node["Node Type"]
            if relation in TABLES and kind.endswith("Scan") and kind != "Bitmap Heap Scan":
                found.append((relation, node.get("Index Name", ""), node.get("Index Cond", "")))
            index = node.get("Index Name", "")
            if node["Node Type"] == "Bitmap Index Scan" and any(t in index for t in TABLES):
                found.append((index, index, node.get("Index Cond", "")))
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0]["Plan"])
        return found
