"""The read side as history grows: one history grown in steps (25k, 100k, 250k, 1M published
events; 25k and 100k with --quick) and, at each step, what a tenancy of that age costs.

The history: the tenancy of `bench.as_of_query` (200 repos, 40 teams, 1,500 users, 80 workspaces
with applications) set up through commands, then grown fast: grants given, changed and revoked
(to users, teams and workspaces), team members joining and leaving, written by the domain's own
aggregates (`MlRepo.grant`, `Team.add_member`, …, so the real event classes, stored by the
application's mapper as commands store them) and saved 20,000 events a transaction into a
SQLite event store. Those events project and replay like any others.

At each step (SQLite views, the views fed by one runner from position zero, step by step):
- the rebuild rate: published events / seconds the runner spent, from zero to this size, and
  the rate of this step's events alone (the live runner's rate at this size);
- `access_report` at the latest moment and at the middle of the history, one repo per call, and
  `check_access`: p50 and p99 in ms;
- command throughput on top of that history: `grant_repo_access` through
  `TenancyService.handle` in this process (commands/s; the bus is `command_throughput`'s);
- the process's peak resident memory so far (history generation included) and the bytes on
  disk of the views and of the event store.

Result: the rate of the largest step's events / the rate at 25k (1.0: flat, the issue's floor
0.7). The table is in the notes."""

from __future__ import annotations

import contextlib
import json
import random
import resource
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.as_of_query import _Tenancy
from bench.harness import Result
from domain.base import CommandContext, acting_as
from domain.commands import COMMANDS
from domain.errors import DomainError
from domain.event_log import INTERNAL_TOPICS
from domain.ml_repo import MlRepo
from domain.service import TenancyService
from domain.team import Team
from projections import schema
from projections.queries import QUERIES, answer
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.server.store import event_store_env
from tenantry.settings import Settings

ADMIN = "user:root@example.com"
STEPS = (25_000, 100_000, 250_000, 1_000_000)
QUICK_STEPS = (25_000, 100_000)
SAVE_EVERY = 20_000
GRANTS = 25  # direct grants per repo, about, at any time
TEAM = 8  # members per team, about
REASONS = (None, "on call", "project onboarding", "INC-4711", "review")


class _Grower:
    """Grows the log by events of the domain's aggregates, held here between saves."""

    def __init__(self, service: TenancyService, tenancy: _Tenancy, seed: int = 11) -> None:
        self.service = service
        self.tenancy = tenancy
        self.random = random.Random(seed)
        get = service.repository.get
        self.repos: dict[str, MlRepo] = {
            name: get(MlRepo.create_id(name)) for name in tenancy.repos
        }
        self.teams: dict[str, Team] = {name: get(Team.create_id(name)) for name in tenancy.teams}
        self.published = _published(service)

    def grow_to(self, events: int) -> None:
        while self.published < events:
            target = min(SAVE_EVERY, events - self.published)
            made = 0
            while made < target:
                made += self._step()
            changed = [a for a in (*self.repos.values(), *self.teams.values()) if a.pending_events]
            self.service.save(*changed)
            self.published += made

    def _step(self) -> int:
        r, pick = self.random, self.random.choice
        kind = r.random()
        context = CommandContext(ADMIN, str(uuid.uuid4()), "bench")
        with acting_as(context):
            try:
                if kind < 0.7:
                    # A steady state, as a tenancy of some age is: each repo keeps about
                    # GRANTS grants (more given than revoked below it, fewer above).
                    repo = self.repos[pick(self.tenancy.repos)]
                    # (An admin's revoke is refused while it is the last admin: then no event.)
                    held = list(repo.grants)
                    if held and r.random() < len(held) / (2 * GRANTS):
                        return _count(repo, lambda: repo.revoke(pick(held), "review"))
                    subject = pick(
                        [f"user:{pick(self.tenancy.users)}"] * 3
                        + [
                            f"team:{pick(self.tenancy.teams)}",
                            f"workspace:bench-eu:{pick(self.tenancy.workspaces)}",
                        ]
                    )
                    roles = ("viewer", "editor") + (
                        () if subject.startswith("workspace:") else ("admin",)
                    )
                    return _count(repo, lambda: repo.grant(subject, pick(roles), pick(REASONS)))
                team = self.teams[pick(self.tenancy.teams)]
                # Teams keep about TEAM members (a walk that only bounced off zero grew them).
                if r.random() < TEAM / (TEAM + len(team.members)):
                    return _count(team, lambda: team.add_member(pick(self.tenancy.users)))
                return _count(team, lambda: team.remove_member(pick(team.members)))
            except DomainError:
                return 0


def _count(aggregate: Any, change: Any) -> int:
    before = len(aggregate.pending_events)
    change()
    return len(aggregate.pending_events) - before


def _published(service: TenancyService) -> int:
    count, after = 0, 0
    while batch := service.recorder.select_notifications(after, 10_000, inclusive_of_start=False):
        count += sum(1 for n in batch if n.topic not in INTERNAL_TOPICS)
        after = batch[-1].id
    return count


def _query(store: ViewStore, name: str, **params: Any) -> Any:
    model = QUERIES[name].params.model_validate_json(json.dumps(params))
    return answer(store, name, model)[1]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return (
        round(samples[len(samples) // 2] * 1000, 2),
        round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000, 2),
    )


def _timed(calls: int, call: Any) -> tuple[float, float]:
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return _percentiles(samples)


def _reads(store: ViewStore, tenancy: _Tenancy, calls: int) -> dict[str, Any]:
    with store.snapshot() as conn:
        c = schema.audit_events.c
        first, last = conn.execute(select(func.min(c.occurred_at), func.max(c.occurred_at))).one()
    start, end = datetime.fromisoformat(first), datetime.fromisoformat(last)
    middle = (start + (end - start) / 2).isoformat()
    repos, users = tenancy.repos, tenancy.users
    latest = _timed(
        calls,
        lambda i: _query(store, "access_report", as_of=end.isoformat(), repo=repos[i % len(repos)]),
    )
    past = _timed(
        calls, lambda i: _query(store, "access_report", as_of=middle, repo=repos[i % len(repos)])
    )
    check = _timed(
        calls,
        lambda i: _query(
            store,
            "check_access",
            subject=f"user:{users[(i * 7) % len(users)]}",
            repo=repos[i % len(repos)],
            action="read",
        ),
    )
    return {
        "access_report_p50_ms": latest[0],
        "access_report_p99_ms": latest[1],
        "access_report_middle_p50_ms": past[0],
        "access_report_middle_p99_ms": past[1],
        "check_access_p50_ms": check[0],
        "check_access_p99_ms": check[1],
    }


def _commands(service: TenancyService, tenancy: _Tenancy, count: int) -> float:
    pick = random.Random(5).choice
    started = time.perf_counter()
    for _ in range(count):
        body = {
            "repo": pick(tenancy.repos),
            "subject": f"user:{pick(tenancy.users)}",
            "role": pick(("viewer", "editor")),
        }
        context = CommandContext(ADMIN, str(uuid.uuid4()), "bench")
        with contextlib.suppress(DomainError):  # a grant already held: refused, as it would be
            service.handle(COMMANDS["grant_repo_access"].model_validate(body), context)
    return count / (time.perf_counter() - started)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _rows_in_force(store: ViewStore) -> int:
    """The temporal view's open rows: the current state, which a steady tenancy keeps level."""
    with store.snapshot() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.access_open)).scalar_one())


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(quick: bool) -> Result:
    steps = QUICK_STEPS if quick else STEPS
    calls = 200 if quick else 500
    commands = 200 if quick else 1000
    table: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = Settings(state_dir=folder / "state")
        service = TenancyService(event_store_env(settings))
        tenancy = _Tenancy(service)
        tenancy.set_up()
        grower = _Grower(service, tenancy)
        views_path = folder / "views.sqlite"
        store = ViewStore.from_url(f"sqlite:///{views_path}")
        store.create_tables()
        runner = ProjectionRunner(service.recorder, store, batch_size=500)
        applying, applied = 0.0, 0
        for step in steps:
            grower.grow_to(step)
            started = time.perf_counter()
            runner.catch_up()
            spent = time.perf_counter() - started
            applying += spent
            events = _published(service)
            segment = events - applied
            applied = events
            row = {
                "events": events,
                "rebuild_events_per_s": round(events / applying),
                "step_events_per_s": round(segment / spent),
                **_reads(store, tenancy, calls),
                "commands_per_s": round(_commands(service, tenancy, commands)),
                "peak_rss_mb": _peak_mb(),
                "rows_in_force": _rows_in_force(store),
                "views_mb": round(_size(views_path) / 2**20, 1),
                "events_mb": round(_size(settings.state_dir / "events.sqlite") / 2**20, 1),
            }
            row["views_per_event_store"] = round(row["views_mb"] / row["events_mb"], 2)
            table.append(row)
            # The commands' events are projected in the next step (and counted there); they
            # changed repos the grower holds: it takes them afresh.
            grower = _Grower(service, tenancy)
        store.close()
        service.close()
    first, last = table[0], table[-1]
    reference = next((row for row in table if row["events"] >= 100_000), first)
    notes = {
        "steps": table,
        "rebuild_rate_largest_vs_25k": round(
            last["rebuild_events_per_s"] / first["rebuild_events_per_s"], 3
        ),
        "access_report_p99_largest_vs_100k": round(
            last["access_report_p99_ms"] / reference["access_report_p99_ms"], 2
        ),
        "live_rate_vs_commands": round(last["step_events_per_s"] / last["commands_per_s"], 2),
    }
    return Result(
        "scale",
        last["step_events_per_s"],
        first["step_events_per_s"],
        "events/s",
        0.7,
        0.9,
        notes,
    )
