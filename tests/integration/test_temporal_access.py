"""The temporal access view over a real event store, one test case run against SQLite and
PostgreSQL alike: grants as intervals (direct, through teams, through workspaces to their
applications), their ends on revocation and deletion, `access_report` at any moment and
`access_changes` between two, and agreement with a replay of the log to the same moment."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from domain.base import CommandContext
from domain.commands import COMMANDS, Command
from domain.errors import NotFound
from domain.grant_expiry import GrantExpiry
from domain.service import TenancyService
from projections import schema
from projections.audit import utc_text
from projections.queries import QUERIES, answer
from projections.replay import Replay, access_in_force
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.protocol import CommandReply
from tenantry.server.scheduler import Scheduler
from tenantry.server.store import view_store_url
from tenantry.settings import Settings
from tests.clock import ControlledClock
from tests.integration.backends import OnPostgres, OnSQLite
from tests.integration.world import ADMIN, CHANGES, WORLD

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# Events of one command are a microsecond apart: this is after all of them.
SETTLED = timedelta(milliseconds=1)
ANA = "user:ana@example.com"
BO = "user:bo@example.com"


class TemporalAccessContract:
    """Subclasses provide `store_env` and `view_url`."""

    @pytest.fixture
    def clock(self) -> ControlledClock:
        return ControlledClock(T0)

    @pytest.fixture
    def service(
        self, store_env: dict[str, str], clock: ControlledClock
    ) -> Iterator[TenancyService]:
        service = TenancyService(store_env, clock=clock)
        service.seed_default_environments()
        yield service
        service.close()

    @pytest.fixture
    def store(self, view_url: str) -> Iterator[ViewStore]:
        store = ViewStore.from_url(view_url)
        store.create_tables()
        yield store
        store.close()

    @pytest.fixture
    def runner(self, service: TenancyService, store: ViewStore) -> ProjectionRunner:
        return ProjectionRunner(service.recorder, store)

    @pytest.fixture
    def do(
        self, service: TenancyService, clock: ControlledClock, runner: ProjectionRunner
    ) -> Callable[..., datetime]:
        """Send a command at a moment (the next minute by default); return its moment."""

        def _do(name: str, body: dict[str, Any], actor: str = ADMIN, at: Any = None) -> datetime:
            moment = clock.advance(MINUTE) if at is None else at
            clock.set(moment)
            context = CommandContext(actor, str(uuid.uuid4()), "temporal")
            service.handle(COMMANDS[name].model_validate(body), context)
            runner.catch_up()
            return moment

        return _do

    @staticmethod
    def query(store: ViewStore, name: str, **params: Any) -> Any:
        text = json.dumps(params, default=lambda moment: moment.isoformat())
        return answer(store, name, QUERIES[name].params.model_validate_json(text))[1]

    def report(self, store: ViewStore, at: datetime, **filters: str) -> list[tuple[str, ...]]:
        rows = self.query(store, "access_report", as_of=at, **filters)
        return [(r["repo"], r["subject"], r["role"], r["via"]) for r in rows]

    @staticmethod
    def setup_repo(do: Callable[..., datetime]) -> None:
        for name, body, actor in WORLD[:3]:  # two clusters, a storage integration
            do(name, body, actor)
        do("create_ml_repo", {"name": "fraud-models", "storage_integration": "s3-main"})

    # --- direct grants --------------------------------------------------------------------

    def test_a_grant_then_its_revoke_absent_present_absent(
        self, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        self.setup_repo(do)
        t0 = do("create_team", {"name": "risk"})
        grant = {"repo": "fraud-models", "subject": ANA, "role": "editor", "reason": "INC-1"}
        t1 = do("grant_repo_access", grant, actor=ADMIN)
        revoke = {"repo": "fraud-models", "subject": ANA, "reason": "incident closed"}
        t2 = do("revoke_repo_access", revoke, actor=BO)
        ana = {"repo": "fraud-models", "subject": ANA}
        assert self.query(store, "access_report", as_of=t0, **ana) == []
        assert self.query(store, "access_report", as_of=t1, **ana) == [
            {
                "repo": "fraud-models",
                "subject": ANA,
                "role": "editor",
                "granted_at": utc_text(t1),
                "granted_by": ADMIN,
                "reason": "INC-1",
                "via": "direct",
            }
        ]
        assert self.report(store, t2 - timedelta(microseconds=1), **ana) != []
        assert self.query(store, "access_report", as_of=t2, **ana) == []
        changes = self.query(store, "access_changes", **{"from": t0, "to": t2}, **ana)
        assert [
            (c["change"], c["role"], c["previous_role"], c["actor"], c["reason"], c["via"])
            for c in changes
        ] == [
            ("granted", "editor", None, ADMIN, "INC-1", "direct"),
            ("revoked", None, "editor", BO, "incident closed", "direct"),
        ]
        assert [c["at"] for c in changes] == [utc_text(t1), utc_text(t2)]
        # `from` is exclusive, `to` inclusive.
        assert self.query(store, "access_changes", **{"from": t1, "to": t2}, **ana) == changes[1:]
        assert self.query(store, "access_changes", **{"from": t0, "to": t1}, **ana) == changes[:1]

    def test_a_grant_ends_at_its_deadline_not_when_its_expiry_is_recorded(
        self,
        service: TenancyService,
        store: ViewStore,
        runner: ProjectionRunner,
        do: Callable[..., datetime],
    ) -> None:
        self.setup_repo(do)
        do("create_team", {"name": "risk", "members": ["bo@example.com"]})
        t0 = do("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "editor"})
        team = {"repo": "fraud-models", "subject": "team:risk", "role": "viewer"}
        t1 = do("grant_repo_access", {**team, "duration": "90m"})
        deadline = t1 + timedelta(minutes=90)
        do("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "viewer"}
           | {"expires_at": deadline.isoformat()})  # fmt: skip
        before, after = deadline - timedelta(microseconds=1), deadline
        bo = ("fraud-models", BO, "viewer", "team:risk")
        # Past the deadline, nothing recorded yet: the view compares with it.
        do("create_team", {"name": "later"}, at=deadline + timedelta(hours=1))
        for recorded in (False, True):
            assert self.report(store, before, repo="fraud-models") == [
                ("fraud-models", "team:risk", "viewer", "direct"),
                ("fraud-models", ANA, "viewer", "direct"),
                bo,
                ("fraud-models", ADMIN, "admin", "direct"),
            ], recorded
            assert self.report(store, after, repo="fraud-models") == [
                ("fraud-models", ADMIN, "admin", "direct")
            ], recorded
            changes = self.query(store, "access_changes", **{"from": before, "to": after})
            assert sorted((c["change"], c["subject"], c["at"]) for c in changes) == [
                ("expired", "team:risk", utc_text(deadline)),
                ("expired", ANA, utc_text(deadline)),
                ("expired", BO, utc_text(deadline)),
            ], recorded
            assert {c["actor"] for c in changes} == {"service:tenantry"}
            assert self.report(store, t0, subject=ANA) == [
                ("fraud-models", ANA, "editor", "direct")
            ]
            # The scheduler records both expiries, an hour late: the rows still end AT it.
            asyncio.run(_scheduler(service).tick())
            runner.catch_up()
        types = [e["type"] for e in self.query(store, "audit_log")["events"]]
        assert types.count("ml_repo.access_expired") == 2

    def test_a_new_role_is_one_change(self, store: ViewStore, do: Callable[..., datetime]) -> None:
        self.setup_repo(do)
        t1 = do("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "viewer"})
        t2 = do("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "admin"})
        assert self.report(store, t1, subject=ANA) == [("fraud-models", ANA, "viewer", "direct")]
        assert self.report(store, t2, subject=ANA) == [("fraud-models", ANA, "admin", "direct")]
        changes = self.query(store, "access_changes", **{"from": t1, "to": t2}, subject=ANA)
        assert [(c["change"], c["role"], c["previous_role"]) for c in changes] == [
            ("changed", "admin", "viewer")
        ]

    def test_one_batch_writes_what_event_by_event_writes(
        self,
        service: TenancyService,
        clock: ControlledClock,
        store: ViewStore,
        do: Callable[..., datetime],
    ) -> None:
        """Rows stored by earlier batches, ended and begun again within one batch (a revoke
        then a new grant, a member leaving and coming back), as the same events applied one
        batch each."""
        self.setup_repo(do)
        do("create_team", {"name": "risk", "members": ["bo@example.com"]})
        do("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "viewer"})
        do("grant_repo_access", {"repo": "fraud-models", "subject": "team:risk", "role": "editor"})
        # Then, without the views looking, one batch of changes to what they have stored.
        for name, body in [
            ("revoke_repo_access", {"repo": "fraud-models", "subject": ANA}),
            ("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "editor"}),
            ("grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "viewer"}),
            ("remove_team_member", {"team": "risk", "user": "bo@example.com"}),
            ("add_team_member", {"team": "risk", "user": "bo@example.com"}),
            ("add_team_member", {"team": "risk", "user": "cy@example.com"}),
            (
                "grant_repo_access",
                {"repo": "fraud-models", "subject": "team:risk", "role": "viewer"},
            ),
            ("remove_team_member", {"team": "risk", "user": "cy@example.com"}),
            ("revoke_repo_access", {"repo": "fraud-models", "subject": "team:risk"}),
        ]:
            clock.advance(MINUTE)
            context = CommandContext(ADMIN, str(uuid.uuid4()), "temporal")
            service.handle(COMMANDS[name].model_validate(body), context)
        ProjectionRunner(service.recorder, store, batch_size=500).catch_up()
        one_by_one = ViewStore.in_memory()
        ProjectionRunner(service.recorder, one_by_one, batch_size=1).catch_up()
        assert _rows(store) == _rows(one_by_one)
        assert _rows(store)["view_access_ended"]  # (the changes ended rows)
        one_by_one.close()

    # --- through teams and workspaces -----------------------------------------------------

    def test_team_members_hold_the_team_grant_while_both_last(
        self, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        self.setup_repo(do)
        cy, di = "user:cy@example.com", "user:di@example.com"
        do("create_team", {"name": "risk", "members": ["bo@example.com", "cy@example.com"]})
        granted = do(
            "grant_repo_access",
            {"repo": "fraud-models", "subject": "team:risk", "role": "editor", "reason": "oncall"},
        )
        joined = do("add_team_member", {"team": "risk", "user": "di@example.com"})
        left = do("remove_team_member", {"team": "risk", "user": "cy@example.com"})
        revoked = do("revoke_repo_access", {"repo": "fraud-models", "subject": "team:risk"})
        via = "team:risk"
        assert [r for r in self.report(store, granted) if r[3] == via] == [
            ("fraud-models", BO, "editor", via),
            ("fraud-models", cy, "editor", via),
        ]
        assert [r[1] for r in self.report(store, joined) if r[3] == via] == [BO, cy, di]
        assert [r[1] for r in self.report(store, left) if r[3] == via] == [BO, di]
        assert self.report(store, revoked, subject=BO) == []
        # A member's rows carry the team grant's who and why.
        row = self.query(store, "access_report", as_of=joined, subject=di)[0]
        assert (row["granted_by"], row["reason"], row["via"]) == (ADMIN, "oncall", via)
        changes = self.query(store, "access_changes", **{"from": granted, "to": revoked})
        assert [(c["change"], c["subject"], c["event"]) for c in changes] == [
            ("granted", di, "team.member_added"),
            ("revoked", cy, "team.member_removed"),
            ("revoked", "team:risk", "ml_repo.access_revoked"),
            ("revoked", BO, "ml_repo.access_revoked"),
            ("revoked", di, "ml_repo.access_revoked"),
        ]

    def test_applications_hold_their_workspace_grant_until_it_is_deleted(
        self, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        self.setup_repo(do)
        workspace = {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "ml_repo_access": [{"repo": "fraud-models", "role": "editor"}],
        }
        created = do("create_workspace", workspace)
        registered = do("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"})
        deleted = do("delete_workspace", {"workspace": "prod-eu:fraud", "force": True})
        app, ws = "app:prod-eu:fraud:scorer", "workspace:prod-eu:fraud"
        assert self.report(store, created + SETTLED, repo="fraud-models")[-1:] == [
            ("fraud-models", ws, "editor", "direct")
        ]
        assert self.report(store, registered, subject=app) == [("fraud-models", app, "editor", ws)]
        assert self.report(store, deleted - SETTLED, subject=app) != []
        assert self.report(store, deleted, subject=app) == []
        assert self.report(store, deleted, subject=ws) == []
        ended = self.query(store, "access_changes", **{"from": registered, "to": deleted})
        assert {(c["subject"], c["change"], c["reason"]) for c in ended} == {
            (app, "revoked", "workspace prod-eu:fraud deleted"),
            (ws, "revoked", "workspace prod-eu:fraud deleted"),
        }

    def test_a_deleted_repo_ends_every_grant_and_a_recreated_one_starts_anew(
        self, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        self.setup_repo(do)
        granted = do(
            "grant_repo_access", {"repo": "fraud-models", "subject": ANA, "role": "viewer"}
        )
        deleted = do("delete_ml_repo", {"name": "fraud-models"})
        recreated = do(
            "create_ml_repo",
            {"name": "fraud-models", "storage_integration": "s3-main", "adopt_storage": True},
        )
        assert [r[1] for r in self.report(store, granted, repo="fraud-models")] == [ANA, ADMIN]
        assert self.report(store, deleted + SETTLED, repo="fraud-models") == []
        assert self.report(store, recreated + SETTLED, repo="fraud-models") == [
            ("fraud-models", ADMIN, "admin", "direct")
        ]
        reasons = {
            c["reason"]
            for c in self.query(store, "access_changes", **{"from": granted, "to": recreated})
        }
        assert reasons == {"repo deleted"}

    # --- the log clock --------------------------------------------------------------------

    def test_an_event_stamped_before_one_stored_earlier_counts_from_that_time(
        self, service: TenancyService, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        self.setup_repo(do)
        late = do("create_team", {"name": "risk"}, at=T0 + 60 * MINUTE)
        # A second command service whose clock is ten minutes behind.
        skewed = do(
            "grant_repo_access",
            {"repo": "fraud-models", "subject": ANA, "role": "viewer"},
            at=late - 10 * MINUTE,
        )
        assert self.report(store, skewed, subject=ANA) == []
        assert self.report(store, late, subject=ANA) == [("fraud-models", ANA, "viewer", "direct")]
        # `granted_at` is still the time the event bears; the change counts from `late`.
        row = self.query(store, "access_report", as_of=late, subject=ANA)[0]
        assert row["granted_at"] == utc_text(skewed)
        change = self.query(store, "access_changes", **{"from": T0, "to": late}, subject=ANA)[0]
        assert change["at"] == utc_text(late)
        scratch = ViewStore.in_memory()
        replay = Replay(service.recorder, scratch)
        for moment in (skewed, late - MINUTE, late):
            replay.until(moment)
            with scratch.snapshot() as conn:
                assert access_in_force(conn, subject=ANA) == self.query(
                    store, "access_report", as_of=moment, subject=ANA
                )

    # --- replay and composition -----------------------------------------------------------

    def test_replay_to_any_moment_gives_the_temporal_answer(
        self, service: TenancyService, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        for name, body, actor in WORLD + CHANGES:
            do(name, body, actor)
        events = self.query(store, "audit_log", limit=1000)["events"]
        moments = sorted({datetime.fromisoformat(e["occurred_at"]) for e in events})
        scratch = ViewStore.in_memory()
        replay = Replay(service.recorder, scratch)
        previous: datetime | None = None
        for moment in moments:
            for at in (moment - timedelta(microseconds=1), moment):
                replay.until(at)
                with scratch.snapshot() as conn:
                    replayed = access_in_force(conn)
                assert self.query(store, "access_report", as_of=at) == replayed, at
            if previous is not None:
                assert _apply(
                    self.query(store, "access_report", as_of=previous),
                    self.query(store, "access_changes", **{"from": previous, "to": moment}),
                ) == _keys(self.query(store, "access_report", as_of=moment))
            previous = moment
        scratch.close()

    def test_bad_parameters_and_unknown_repos(
        self, store: ViewStore, do: Callable[..., datetime]
    ) -> None:
        self.setup_repo(do)
        with pytest.raises(NotFound):
            self.query(store, "access_report", as_of=T0, repo="no-such-repo")
        params = QUERIES["access_changes"].params
        with pytest.raises(ValueError, match="before"):
            params.model_validate_json(
                json.dumps({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"})
            )
        with pytest.raises(ValueError, match="timezone"):
            QUERIES["access_report"].params.model_validate_json(b'{"as_of": "2026-03-01T00:00:00"}')


def _rows(store: ViewStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the temporal view's tables, sorted."""
    with store.snapshot() as conn:
        return {
            table.name: sorted(tuple(row) for row in conn.execute(select(table)))
            for table in (schema.access_open, schema.access_ended)
        }


def _keys(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    return {(r["repo"], r["subject"], r["via"]): r["role"] for r in rows}


def _apply(
    report: list[dict[str, Any]], changes: list[dict[str, Any]]
) -> dict[tuple[str, str, str], str]:
    """`report` with `changes` applied in order: what the report after them must say."""
    held = _keys(report)
    for change in changes:
        key = (change["repo"], change["subject"], change["via"])
        assert held.get(key) == change["previous_role"], change
        if change["role"] is None:
            del held[key]
        else:
            held[key] = change["role"]
    return held


class TestSQLiteTemporalAccess(OnSQLite, TemporalAccessContract):
    pass


@pytest.mark.postgres
class TestPostgresTemporalAccess(OnPostgres, TemporalAccessContract):
    pass


@pytest.mark.parametrize(
    "older",
    [
        # before the temporal view had two tables
        "CREATE TABLE view_access_intervals (repo TEXT)",
        # before members' ended rows were derived (the audit view had hash columns then)
        "ALTER TABLE view_audit_events ADD COLUMN prev_hash TEXT",
    ],
)
def test_a_view_store_of_the_old_layout_is_refused_not_read_as_empty(
    sqlite_settings: Settings, sqlite_env: dict[str, str], older: str
) -> None:
    """A view store made by an older layout of the views (the temporal view's rows in
    `view_access_intervals`; members' ended rows stored, not derived) would get new tables
    created empty at a position past the events that filled the old ones, or be read wrongly:
    the runner refuses it, saying to rebuild."""
    store = ViewStore.from_url(view_store_url(sqlite_settings))
    store.create_tables()
    with store.write() as conn:
        conn.exec_driver_sql(older)
    service = TenancyService(sqlite_env)
    service.seed_default_environments()
    with pytest.raises(RuntimeError, match=r"older layout.*rebuilt"):
        ProjectionRunner(service.recorder, store).catch_up()
    assert store.position() == 0
    service.close()
    store.close()


def _scheduler(service: TenancyService) -> Scheduler:
    async def send(command: Command, context: CommandContext) -> CommandReply:
        return await asyncio.to_thread(service.handle, command, context)

    return Scheduler(service.recorder, send, service.clock, kinds=[GrantExpiry])
