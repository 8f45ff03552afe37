"""The views over a real event store, one test case run against SQLite and PostgreSQL alike:
what they show after realistic commands, exactly-once application, the audit hash chain, and
rebuild from zero giving the very same rows."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from sqlalchemy import inspect, select

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.event_log import INTERNAL_TOPICS, ZERO_HASH, chained_body, published
from domain.service import TenancyService
from projections import schema
from projections.audit import body_of
from projections.queries import QUERIES, answer
from projections.runner import ProjectionRunner, rebuild
from projections.store import Tracking, ViewStore
from tenantry.protocol import CommandReply
from tests.integration.backends import OnPostgres, OnSQLite
from tests.integration.views import dump
from tests.integration.world import ADMIN, CHANGES, FRAUD, PROD_EU, WORLD, Step


def query(store: ViewStore, query_name: str, **params: Any) -> Any:
    model = QUERIES[query_name].params.model_validate_json(json.dumps(params))
    return answer(store, query_name, model)[1]


def _indexes(store: ViewStore) -> dict[str, set[str]]:
    """Each view table's indexes, by name."""
    with store.snapshot() as conn:
        schema_name = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        inspector = inspect(conn)
        return {
            table.name: {str(i["name"]) for i in inspector.get_indexes(table.name, schema_name)}
            for table in schema.metadata.sorted_tables
        }


class ProjectionContract:
    """What the views must do on every backend. Subclasses provide `store_env`, `view_url`
    and `other_view_url` (an empty second store, for rebuilds); `service` is the conftest's."""

    @pytest.fixture
    def open_store(self) -> Iterator[Callable[[str], ViewStore]]:
        opened: list[ViewStore] = []

        def _open(url: str) -> ViewStore:
            store = ViewStore.from_url(url)
            store.create_tables()
            opened.append(store)
            return store

        yield _open
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_store: Callable[[str], ViewStore], view_url: str) -> ViewStore:
        return open_store(view_url)

    @pytest.fixture
    def runner(self, service: TenancyService, store: ViewStore) -> ProjectionRunner:
        return ProjectionRunner(service.recorder, store)

    @staticmethod
    def send(service: TenancyService, steps: list[Step]) -> CommandReply:
        result = None
        for name, body, actor in steps:
            context = CommandContext(actor, str(uuid.uuid4()), "corr-1")
            result = service.handle(COMMANDS[name].model_validate(body), context)
        assert result is not None
        return result

    # --- what the views show --------------------------------------------------------------

    def test_directory_after_the_world_is_built(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        last = self.send(service, WORLD)
        runner.catch_up()
        assert runner.position() == last.position
        assert query(store, "list_environments") == [
            {
                "name": "dev",
                "is_production": False,
                "optimize_for": "cost",
                "color": None,
                "access_approvals": 0,
            },
            {
                "name": "prod",
                "is_production": True,
                "optimize_for": "availability",
                "color": None,
                "access_approvals": 0,
            },
            {
                "name": "staging",
                "is_production": False,
                "optimize_for": "cost",
                "color": None,
                "access_approvals": 0,
            },
        ]
        prod_eu, fraud = PROD_EU, FRAUD
        assert [c["name"] for c in query(store, "list_clusters")] == ["dev-us", "prod-eu"]
        assert query(store, "list_clusters", environment="prod") == [prod_eu]
        assert query(store, "get_workspace", fqn="prod-eu:fraud") == fraud
        sandbox = query(store, "get_workspace", fqn="dev-us:sandbox")
        assert (sandbox["status"], sandbox["is_production"]) == ("pending", False)
        assert query(store, "list_workspaces", production=True) == [fraud]
        assert query(store, "list_workspaces", cluster="dev-us") == [sandbox]
        assert query(store, "list_workspaces", environment="dev") == [sandbox]
        repo = query(store, "get_ml_repo", name="fraud-models")
        assert {k: v for k, v in repo.items() if k != "grants"} == {
            "name": "fraud-models",
            "storage_integration": "s3-main",
            "location": "s3://ml-bucket/repos/fraud-models/",
            "description": "fraud",
            "status": "ready",
            "failure": None,
            "access_policy": {"approvals": 0, "max_duration": None},
        }
        assert [
            (g["subject"], g["role"], g["granted_by"], g["reason"]) for g in repo["grants"]
        ] == [
            ("team:risk", "editor", ADMIN, "on call"),
            ("user:bo@example.com", "viewer", ADMIN, None),
            ("user:root@example.com", "admin", ADMIN, "creator of the repo"),
            ("workspace:prod-eu:fraud", "editor", ADMIN, "granted on workspace creation"),
        ]
        assert all(g["granted_at"].endswith("Z") for g in repo["grants"])
        assert query(store, "repo_access", repo="fraud-models") == repo["grants"]
        rows = dump(store)
        assert rows["view_storage_integrations"] == [
            ("s3-main", "s3", "s3://ml-bucket/repos", "eu-west-1")
        ]
        assert rows["view_team_members"] == [
            ("risk", "bo@example.com"),
            ("risk", "cy@example.com"),
        ]

    def test_effective_access_through_teams_workspaces_and_applications(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD)
        runner.catch_up()
        # bo's own grant is viewer, his team's editor: the higher one, and where it comes from.
        assert query(store, "subject_access", subject="user:bo@example.com") == [
            {"repo": "fraud-models", "role": "editor", "via": "team:risk"}
        ]
        assert query(store, "subject_access", subject="team:risk") == [
            {"repo": "fraud-models", "role": "editor", "via": "direct"}
        ]
        assert query(store, "subject_access", subject="app:prod-eu:fraud:scorer") == [
            {"repo": "fraud-models", "role": "editor", "via": "workspace:prod-eu:fraud"}
        ]
        assert query(store, "subject_access", subject="user:nobody@example.com") == []
        assert query(store, "subject_access", subject="app:prod-eu:fraud:ghost") == []
        check = {"subject": "app:prod-eu:fraud:scorer", "repo": "fraud-models"}
        assert query(store, "check_access", **check, action="write") == {
            "allowed": True,
            "role": "editor",
            "via": "workspace:prod-eu:fraud",
        }
        assert query(store, "check_access", **check, action="admin")["allowed"] is False
        sandbox = {"subject": "workspace:dev-us:sandbox", "repo": "churn-models"}
        assert query(store, "check_access", **sandbox, action="read")["allowed"] is True
        assert query(store, "check_access", **sandbox, action="write") == {
            "allowed": False,
            "role": "viewer",
            "via": "direct",
        }
        assert [
            r["name"] for r in query(store, "list_ml_repos", subject="user:cy@example.com")
        ] == ["fraud-models"]

    def test_views_follow_changes_deletions_and_recreations(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD)
        runner.catch_up()
        self.send(service, CHANGES)
        runner.catch_up()
        assert [e["name"] for e in query(store, "list_environments")] == ["dev", "prod", "staging"]
        assert query(store, "list_environments")[0]["color"] == "#00ff00"
        assert query(store, "list_clusters", environment="dev")[0] == {
            "name": "dev-us",
            "region": "us-east-2",
            "provider": "generic",
            "environments": ["dev"],
            "labels": {},
        }
        fraud = query(store, "get_workspace", fqn="prod-eu:fraud")
        assert (fraud["labels"], fraud["applications"]) == ({"team": "fraud"}, ["scorer"])
        sandbox = query(store, "get_workspace", fqn="dev-us:sandbox")
        assert (sandbox["status"], sandbox["environment"], sandbox["applications"]) == (
            "pending",
            "dev",
            [],
        )
        churn = query(store, "get_ml_repo", name="churn-models")
        assert (churn["status"], churn["failure"]) == (
            "failed",
            "AccessDenied: the bucket policy refused the change",
        )
        assert [g["subject"] for g in churn["grants"]] == ["user:root@example.com"]
        # The team grant was revoked and bo was made admin; the recreated sandbox holds nothing.
        assert query(store, "subject_access", subject="user:di@example.com") == []
        assert query(
            store,
            "check_access",
            subject="user:bo@example.com",
            repo="fraud-models",
            action="admin",
        ) == {"allowed": True, "role": "admin", "via": "direct"}
        assert query(store, "subject_access", subject="workspace:dev-us:sandbox") == []
        assert dump(store)["view_storage_integrations"] == [
            ("s3-main", "s3", "s3://ml-bucket/repos", "eu-west-1")
        ]

    def test_deleted_workspaces_and_repos_hold_nothing(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD)
        self.send(
            service, [("delete_workspace", {"workspace": "prod-eu:fraud", "force": True}, ADMIN)]
        )
        self.send(service, [("delete_ml_repo", {"name": "churn-models"}, ADMIN)])
        runner.catch_up()
        fraud = query(store, "get_workspace", fqn="prod-eu:fraud")
        assert (fraud["status"], fraud["applications"]) == ("deleting", [])
        assert query(store, "subject_access", subject="app:prod-eu:fraud:scorer") == []
        assert query(store, "subject_access", subject="workspace:prod-eu:fraud") == []
        assert query(store, "repo_access", repo="churn-models") == []
        deleting = query(store, "get_ml_repo", name="churn-models")
        assert (deleting["status"], deleting["failure"]) == ("deleting", None)
        assert query(
            store,
            "check_access",
            subject="user:root@example.com",
            repo="churn-models",
            action="read",
        ) == {"allowed": False, "role": None, "via": None}
        tags = {t["environment"]: t for t in query(store, "environment_tags")}
        assert tags["prod"]["workspaces"] == [] and tags["prod"]["applications"] == []
        # Until the namespace is gone a deleting workspace is still listed; then it is not.
        assert "prod-eu:fraud" in [w["fqn"] for w in query(store, "list_workspaces")]
        self.send(
            service,
            [
                (
                    "record_namespace_deleted",
                    {"workspace": "prod-eu:fraud", "namespace": "fraud"},
                    "service:namespaces",
                )
            ],
        )
        runner.catch_up()
        assert "prod-eu:fraud" not in [w["fqn"] for w in query(store, "list_workspaces")]
        assert query(store, "get_workspace", fqn="prod-eu:fraud")["status"] == "deleted"

    def test_a_repo_whose_storage_could_not_be_removed_stays_deleted(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        """Issue 12, item 2: the storage worker refused `delete_storage` (data Tenantry did not
        create): the views say `deletion_failed`, and the repo grants nothing."""
        self.send(service, WORLD)
        location = "s3://ml-bucket/repos/churn-models/"
        self.send(
            service,
            [
                ("delete_ml_repo", {"name": "churn-models", "delete_storage": True}, ADMIN),
                (
                    "record_storage_failed",
                    {"repo": "churn-models", "location": location, "removal": True},
                    "service:storage",
                ),
            ],
        )
        runner.catch_up()
        assert query(store, "get_ml_repo", name="churn-models")["status"] == "deletion_failed"
        assert query(store, "repo_access", repo="churn-models") == []
        assert query(store, "check_access", subject=ADMIN, repo="churn-models", action="read") == {
            "allowed": False,
            "role": None,
            "via": None,
        }

    def test_link_events_reach_only_the_audit_log(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD[:1])
        runner.catch_up()
        before = dump(store)
        self.send(
            service,
            [("add_cluster_environment", {"cluster": "prod-eu", "environment": "staging"}, ADMIN)],
        )
        runner.catch_up()
        after = dump(store)
        changed = {name for name in after if after[name] != before[name]}
        assert changed == {
            "view_cluster_environments",
            "view_audit_events",
            "view_access_clock",  # every event moves the temporal view's clock
            "view_tracking",
        }
        linked = query(store, "audit_log", type="environment.cluster_linked")["events"]
        assert [(e["fqn"], e["data"]) for e in linked] == [
            ("prod", {"cluster": "prod-eu"}),
            ("dev", {"cluster": "prod-eu"}),
            ("staging", {"cluster": "prod-eu"}),
        ]

    def test_a_batch_reads_what_it_wrote_before(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        # One batch: the writes are held to its end, and the ordinal of an environment added
        # is read from the rows the same batch wrote (registered, then two added, one removed).
        self.send(
            service,
            [
                (
                    "register_cluster",
                    {
                        "name": "cl-one",
                        "region": "r",
                        "provider": "generic",
                        "environments": ["prod"],
                    },
                    ADMIN,
                ),
                ("add_cluster_environment", {"cluster": "cl-one", "environment": "staging"}, ADMIN),
                ("add_cluster_environment", {"cluster": "cl-one", "environment": "dev"}, ADMIN),
                (
                    "remove_cluster_environment",
                    {"cluster": "cl-one", "environment": "staging"},
                    ADMIN,
                ),
                ("add_cluster_environment", {"cluster": "cl-one", "environment": "staging"}, ADMIN),
            ],
        )
        assert runner.catch_up() == service.recorder.max_notification_id()
        assert runner.catch_up() == 0  # all of it in the one batch above
        (cluster,) = query(store, "list_clusters")
        assert cluster["environments"] == ["prod", "dev", "staging"]

    def test_a_batch_reads_back_the_request_it_opened_and_approved(
        self,
        service: TenancyService,
        store: ViewStore,
        runner: ProjectionRunner,
        open_store: Callable[[str], ViewStore],
        other_view_url: str,
    ) -> None:
        """The access requests view holds its writes to the batch's end too: an approval reads
        the approvals before it, of a request this same batch may have opened (and approved
        once already), from the rows held so far. Then an event a batch, for the same rows."""
        bob, carol, alice = "user:bob@example.com", "user:carol@example.com", "user:al@example.com"
        workspace = "workspace:prod-eu:fraud"
        self.send(service, [*WORLD[:1], *[(name, body, ADMIN) for name, body in (
            ("update_environment", {"name": "prod", "access_approvals": 2}),
            ("create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}),
            ("register_storage_integration",
             {"name": "local", "provider": "local", "storage_root": "file:///srv/ml"}),
            ("create_ml_repo", {"name": "req-models", "storage_integration": "local"}),
            ("grant_repo_access", {"repo": "req-models", "subject": bob, "role": "admin"}),
            ("grant_repo_access", {"repo": "req-models", "subject": carol, "role": "admin"}),
        )]])  # fmt: skip
        ask = {"repo": "req-models", "subject": workspace, "role": "editor", "reason": "retrain"}
        opened = self.send(service, [("request_repo_access", ask, alice)])
        self.send(
            service,
            [
                ("approve_access_request", {"request": opened.fqn}, bob),
                ("approve_access_request", {"request": opened.fqn, "comment": "ok"}, carol),
            ],
        )
        assert runner.catch_up() == service.recorder.max_notification_id()
        assert runner.catch_up() == 0  # all of it in the one batch above
        shown = query(store, "get_access_request", request=opened.fqn)
        assert shown["status"] == "approved"
        assert [a["approver"] for a in shown["approvals"]] == [bob, carol]
        one_by_one = open_store(other_view_url)
        ProjectionRunner(service.recorder, one_by_one, batch_size=1).catch_up()
        assert dump(one_by_one)["view_access_requests"] == dump(store)["view_access_requests"]

    # --- exactly once -----------------------------------------------------------------------

    def test_catching_up_again_changes_nothing(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD)
        consumed = runner.catch_up()
        assert consumed == service.recorder.max_notification_id()
        rows = dump(store)
        assert runner.catch_up() == 0
        assert ProjectionRunner(service.recorder, store).catch_up() == 0
        assert dump(store) == rows

    def test_a_batch_that_fails_midway_leaves_no_trace(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD[:3])
        runner.catch_up()
        before, tracking = dump(store), store.tracking()
        self.send(service, WORLD[3:5])
        good = (service.recorder.max_notification_id() or 0) - tracking.position
        # A grant whose subject is missing: the access view can't apply it.
        poison = json.dumps(
            {
                "timestamp": datetime.now(UTC).isoformat(),
                "actor": ADMIN,
                "fqn": "fraud-models",
                "role": "viewer",
            }
        ).encode()
        service.recorder.insert_events(
            [StoredEvent(uuid.uuid4(), 1, "domain.ml_repo:MlRepo.AccessGranted", poison)]
        )
        with pytest.raises(KeyError, match="subject"):
            runner.catch_up()
        assert dump(store) == before
        assert store.tracking() == tracking
        # Up to the bad event everything applies; the views then stop there, not past it.
        assert runner.catch_up(limit=good) == good
        assert query(store, "get_ml_repo", name="churn-models")["status"] == "pending"
        with pytest.raises(KeyError):
            runner.catch_up()
        assert store.position() == tracking.position + good

    def test_four_runners_on_one_store_apply_each_event_once(
        self,
        service: TenancyService,
        store: ViewStore,
        open_store: Callable[[str], ViewStore],
        view_url: str,
        other_view_url: str,
    ) -> None:
        self.send(service, WORLD + CHANGES)
        runners = [
            ProjectionRunner(service.recorder, open_store(view_url), batch_size=size)
            for size in (3, 5, 7, 11)
        ]
        barrier = threading.Barrier(len(runners))
        consumed: list[int] = []
        errors: list[Exception] = []

        def catch_up(runner: ProjectionRunner) -> None:
            barrier.wait()
            try:
                consumed.append(runner.catch_up())
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=catch_up, args=(r,)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(consumed) == service.recorder.max_notification_id()
        alone = open_store(other_view_url)
        ProjectionRunner(service.recorder, alone).catch_up()
        assert dump(store) == dump(alone)

    # --- the audit chain --------------------------------------------------------------------

    def test_the_audit_chain_is_the_one_recomputed_from_the_store(
        self, service: TenancyService, store: ViewStore
    ) -> None:
        runner = ProjectionRunner(service.recorder, store, batch_size=4)
        for step in WORLD:
            self.send(service, [step])
            runner.catch_up(limit=3)
        runner.catch_up()
        expected, prev_hash = [], ZERO_HASH
        for notification in service.recorder.select_notifications(None, 10_000):
            if notification.topic not in INTERNAL_TOPICS:
                expected.append(chained_body(notification, prev_hash))
                prev_hash = expected[-1]["hash"]
        seen: list[dict[str, Any]] = []
        after = None
        while True:
            page = query(store, "audit_log", after=after, limit=7)
            seen += page["events"]
            if page["next"] is None:
                break
            after = page["next"]
        assert seen == expected
        assert store.tracking() == Tracking(service.recorder.max_notification_id() or 0, prev_hash)

    def test_the_audit_view_gives_back_the_published_bytes_exactly(
        self, service: TenancyService, store: ViewStore
    ) -> None:
        """The audit view keeps the chain's hashes as bytes, not in the body's text: the body
        it gives back is still, byte for byte, what the relay publishes."""
        self.send(service, WORLD)
        ProjectionRunner(service.recorder, store).catch_up()
        expected, prev_hash = [], ZERO_HASH
        for notification in service.recorder.select_notifications(None, 10_000):
            if notification.topic not in INTERNAL_TOPICS:
                event = published(notification, prev_hash)
                expected.append(event.payload.decode())
                prev_hash = event.body["hash"]
        audit = schema.audit_events.c
        with store.snapshot() as conn:
            rows = conn.execute(
                select(audit.body, audit.prev_digest, audit.digest).order_by(audit.position)
            ).all()
        assert [body_of(*row) for row in rows] == expected

    def test_audit_log_filters(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD)
        runner.catch_up()
        every = query(store, "audit_log", limit=1000)["events"]
        assert query(store, "audit_log", actor="service:storage")["events"] == [
            e for e in every if e["actor"] == "service:storage"
        ]
        assert {e["type"] for e in query(store, "audit_log", fqn="prod-eu:fraud")["events"]} == {
            "workspace.created",
            "workspace.repo_linked",
            "workspace.application_attached",
            "workspace.namespace_provisioned",
        }
        middle = every[len(every) // 2]
        since = datetime.fromisoformat(middle["occurred_at"])
        assert query(store, "audit_log", since=middle["occurred_at"], limit=1000)["events"] == [
            e for e in every if datetime.fromisoformat(e["occurred_at"]) >= since
        ]
        # Any offset names the same moment; `until` is exclusive.
        local = since.astimezone(timezone(timedelta(hours=2))).isoformat()
        assert query(store, "audit_log", until=local, limit=1000)["events"] == [
            e for e in every if datetime.fromisoformat(e["occurred_at"]) < since
        ]
        page = query(store, "audit_log", type="ml_repo.access_granted", limit=2)
        assert [e["type"] for e in page["events"]] == ["ml_repo.access_granted"] * 2
        assert page["next"] == page["events"][-1]["position"]

    # --- rebuild ------------------------------------------------------------------------------

    def test_rebuild_from_zero_gives_exactly_the_live_rows(
        self,
        service: TenancyService,
        store: ViewStore,
        open_store: Callable[[str], ViewStore],
        other_view_url: str,
    ) -> None:
        live = ProjectionRunner(service.recorder, store, batch_size=2)
        for i, step in enumerate(WORLD + CHANGES):
            self.send(service, [step])
            live.catch_up(limit=1 + i % 4)
        live.catch_up()
        rebuilt = ViewStore.from_url(other_view_url)
        runner = rebuild(service.recorder, rebuilt)
        # The indexes only queries read, dropped while it loaded, are all there again.
        assert _indexes(rebuilt) == _indexes(store)
        assert {i.name for i in schema.HISTORY_INDEXES} <= set().union(*_indexes(rebuilt).values())
        rebuilt.close()
        assert runner.position() == live.position() == service.recorder.max_notification_id()
        live_rows, rebuilt_rows = dump(store), dump(rebuilt)
        assert all(live_rows.values()), "every table has rows to compare"
        assert rebuilt_rows == live_rows

    def test_rebuild_refuses_a_store_that_is_not_empty(
        self, service: TenancyService, store: ViewStore, runner: ProjectionRunner
    ) -> None:
        self.send(service, WORLD[:1])
        runner.catch_up()
        with pytest.raises(ValueError, match="empty"):
            rebuild(service.recorder, store)


class TestSQLiteProjections(OnSQLite, ProjectionContract):
    @pytest.fixture
    def other_view_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'rebuilt' / 'views.sqlite'}"


@pytest.mark.postgres
class TestPostgresProjections(OnPostgres, ProjectionContract):
    @pytest.fixture
    def other_view_url(self, other_postgres_url: str) -> str:
        return other_postgres_url
