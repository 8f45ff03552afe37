"""`access_report` at a past moment from the temporal access view, against the slow way to the
same answer: replaying the event log to that moment into a scratch store, in the same run.

The history (100k published events; 20k with --quick) is a tenancy at work: 200 repos, 40
teams, 80 workspaces with applications, grants given, changed and revoked, members coming and
going (as many join as leave), workspaces and repos deleted and created again. It is made in
memory, copied into a SQLite event store and projected into SQLite views. The moment asked about
is the last event's, so the replay is a full one. Product: `access_report` for one repo per
call, the auditor's question, in queries per second. Baseline: replays per second (1 / the
replay's duration, the same question answered from the replayed views included)."""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent
from sqlalchemy import func, select

from bench.harness import Result, stopwatch
from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.errors import DomainError
from domain.event_log import INTERNAL_TOPICS
from domain.service import TenancyService
from projections import schema
from projections.queries import QUERIES, answer
from projections.replay import Replay, access_in_force
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.server.store import event_store_env
from tenantry.settings import Settings

ADMIN = "user:root@example.com"
NAMESPACES = "service:namespaces"  # the workers' actors, reporting what they did
STORAGE = "service:storage"
CLUSTER = "bench-eu"


class _Tenancy:
    """Sends a random but plausible stream of commands until the log holds enough events."""

    def __init__(self, service: TenancyService, seed: int = 7) -> None:
        self.service = service
        self.random = random.Random(seed)
        self.repos = [f"repo-{i:03d}" for i in range(200)]
        self.teams = [f"team-{i:02d}" for i in range(40)]
        self.users = [f"user{i:04d}@example.com" for i in range(1500)]
        self.workspaces = [f"ws-{i:03d}" for i in range(80)]

    def send(self, name: str, body: dict[str, Any], actor: str = ADMIN) -> bool:
        context = CommandContext(actor, str(uuid.uuid4()), "bench")
        try:
            self.service.handle(COMMANDS[name].model_validate(body), context)
        except DomainError:
            return False
        return True

    def set_up(self) -> None:
        self.service.seed_default_environments()
        self.send(
            "register_cluster",
            {
                "name": CLUSTER,
                "region": "eu-west-1",
                "provider": "generic",
                "environments": ["dev"],
            },
        )
        self.send(
            "register_storage_integration",
            {"name": "s3-main", "provider": "s3", "storage_root": "s3://ml-bucket/repos"},
        )
        for repo in self.repos:
            self.send("create_ml_repo", {"name": repo, "storage_integration": "s3-main"})
        for team in self.teams:
            self.send("create_team", {"name": team, "members": self.random.sample(self.users, 8)})
        for workspace in self.workspaces:
            self.create_workspace(workspace)

    def create_workspace(self, name: str) -> None:
        access = [
            {"repo": repo, "role": self.random.choice(("viewer", "editor"))}
            for repo in self.random.sample(self.repos, 2)
        ]
        self.send(
            "create_workspace",
            {"cluster": CLUSTER, "name": name, "environment": "dev", "ml_repo_access": access},
        )
        for app in ("api", "batch"):
            self.send("register_application", {"workspace": f"{CLUSTER}:{name}", "name": app})

    def step(self) -> None:
        r, pick = self.random, self.random.choice
        kind = r.random()
        repo = pick(self.repos)
        if kind < 0.45:
            subject = pick(
                [f"user:{pick(self.users)}"] * 3
                + [f"team:{pick(self.teams)}", f"workspace:{CLUSTER}:{pick(self.workspaces)}"]
            )
            role = pick(
                ("viewer", "editor")
                if subject.startswith("workspace:")
                else ("viewer", "editor", "admin")
            )
            reason = pick((None, "on call", "project onboarding", "INC-4711"))
            self.send(
                "grant_repo_access",
                {"repo": repo, "subject": subject, "role": role, "reason": reason},
            )
        elif kind < 0.62:
            grants = self.granted(repo)
            if grants:
                self.send(
                    "revoke_repo_access",
                    {"repo": repo, "subject": pick(grants), "reason": "review"},
                )
        elif kind < 0.77:  # as many members join as leave: teams keep their size
            self.send("add_team_member", {"team": pick(self.teams), "user": pick(self.users)})
        elif kind < 0.92:
            team = pick(self.teams)
            members: list[str] = self.service.repository.get(_team_id(team)).members
            if members:
                self.send("remove_team_member", {"team": team, "user": pick(members)})
        elif kind < 0.97:
            workspace = f"{CLUSTER}:{pick(self.workspaces)}"
            app = pick(("api", "batch", "notebook"))
            if not self.send("remove_application", {"workspace": workspace, "name": app}):
                self.send("register_application", {"workspace": workspace, "name": app})
        elif kind < 0.99:
            name = pick(self.workspaces)
            workspace = f"{CLUSTER}:{name}"
            if self.send("delete_workspace", {"workspace": workspace, "force": True}):
                # As the namespace worker reports it (else the workspace stays "deleting" and
                # can't be created again: over a long history every one of them would).
                self.send(
                    "record_namespace_deleted",
                    {"workspace": workspace, "namespace": name},
                    NAMESPACES,
                )
                self.create_workspace(name)
        elif self.send("delete_ml_repo", {"name": repo}):
            location: str = self.service.repository.get(_repo_id(repo)).location
            self.send("record_storage_deleted", {"repo": repo, "location": location}, STORAGE)
            # Its storage was retained (the default): taking the name again adopts it, which
            # only a tenant admin may (as this actor is: authorization is off here).
            self.send(
                "create_ml_repo",
                {"name": repo, "storage_integration": "s3-main", "adopt_storage": True},
            )

    def granted(self, repo: str) -> list[str]:
        from domain.ml_repo import Grant, MlRepo

        grants: dict[str, Grant] = self.service.repository.get(MlRepo.create_id(repo)).grants
        return [s for s in grants if grants[s].role != "admin"]


def _repo_id(name: str) -> Any:
    from domain.ml_repo import MlRepo

    return MlRepo.create_id(name)


def _team_id(name: str) -> Any:
    from domain.team import Team

    return Team.create_id(name)


def _history(events: int) -> TenancyService:
    """An in-memory service whose log holds at least `events` published events."""
    # Cached aggregates: the history is made four times faster (repos gather many events).
    service = TenancyService(
        {"PERSISTENCE_MODULE": "eventsourcing.popo", "AGGREGATE_CACHE_MAXSIZE": "5000"}
    )
    tenancy = _Tenancy(service)
    tenancy.set_up()
    published, seen = 0, 0
    while published < events:
        for _ in range(200):
            tenancy.step()
        while batch := service.recorder.select_notifications(seen, 5000, inclusive_of_start=False):
            published += sum(1 for n in batch if n.topic not in INTERNAL_TOPICS)
            seen = batch[-1].id
    return service


def _copy(source: TenancyService, folder: Path) -> TenancyService:
    """The same log in a SQLite event store, as `tenantry replay` reads it."""
    target = TenancyService(event_store_env(Settings(state_dir=folder)))
    after = 0
    while batch := source.recorder.select_notifications(after, 5000, inclusive_of_start=False):
        target.recorder.insert_events(
            [StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in batch]
        )
        after = batch[-1].id
    return target


def _query(store: ViewStore, name: str, **params: Any) -> Any:
    model = QUERIES[name].params.model_validate_json(json.dumps(params))
    return answer(store, name, model)[1]


def run(quick: bool) -> Result:
    events = 20_000 if quick else 100_000
    rounds = 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        memory = _history(events)
        service = _copy(memory, folder / "state")
        memory.close()
        live = ViewStore.from_url(f"sqlite:///{folder / 'views.sqlite'}")
        live.create_tables()
        with stopwatch() as projecting:
            ProjectionRunner(service.recorder, live, batch_size=1000).catch_up()
        with live.snapshot() as conn:
            audit = schema.audit_events.c
            published = conn.execute(select(func.count()).select_from(schema.audit_events)).scalar()
            # The latest time any event bears: a replay to it replays everything.
            latest = conn.execute(select(func.max(audit.occurred_at))).scalar()
            assert latest is not None, "the views hold no event"
            moment = datetime.fromisoformat(latest)
        repos = sorted({r["repo"] for r in _query(live, "access_report", as_of=moment.isoformat())})
        assert repos, f"no repo has any access at {moment}: the history lost every grant"
        replays, rates = [], []
        for round_ in range(rounds):  # alternating rounds, medians: the machine is shared
            repo = repos[round_ % len(repos)]
            scratch = ViewStore.in_memory()
            with stopwatch() as replaying:
                Replay(service.recorder, scratch, batch_size=1000).until(moment)
                with scratch.snapshot() as conn:
                    replayed = access_in_force(conn, repo, at=moment)
            scratch.close()
            replays.append(replaying[0])
            temporal = _query(live, "access_report", as_of=moment.isoformat(), repo=repo)
            assert temporal == replayed, f"the temporal view and the replay differ on {repo}"
            calls = 0
            started = time.perf_counter()
            while calls < 200 or time.perf_counter() - started < (0.5 if quick else 1.0):
                name = repos[calls % len(repos)]
                _query(live, "access_report", as_of=moment.isoformat(), repo=name)
                calls += 1
            rates.append(calls / (time.perf_counter() - started))
        with stopwatch() as whole:
            everything = _query(live, "access_report", as_of=moment.isoformat())
        stored = service.recorder.max_notification_id()
        live.close()
        service.close()
    replay_seconds = statistics.median(replays)
    return Result(
        "as_of_query",
        statistics.median(rates),
        1 / replay_seconds,
        "queries/s",
        10,
        1000,
        {
            "published_events": published,
            "stored_notifications": stored,
            "replay_s": round(replay_seconds, 2),
            "projection_s": round(projecting[0], 2),
            "rows_in_force": len(everything),
            "unfiltered_report_ms": round(whole[0] * 1000, 1),
            "repos": len(repos),
            "rounds": rounds,
        },
    )
