"""Events per second through all projections from position zero, against reading and decoding
the same notifications without applying them, in the same run. The product is the product's
rebuild (`projections.runner.rebuild`, what `tenantry rebuild-views` runs: tables created, the
history indexes built at the end), 2,000 notifications a transaction, its default."""

from __future__ import annotations

import statistics
import tempfile
import uuid
from pathlib import Path

from bench.harness import Result, stopwatch
from domain.base import CommandContext
from domain.commands import COMMANDS, Command
from domain.event_log import INTERNAL_TOPICS, unchained_body
from domain.service import TenancyService
from projections.runner import rebuild
from projections.store import ViewStore
from tenantry.server.store import event_store_env
from tenantry.settings import Settings

ADMIN = "user:ana@example.com"


def _history(service: TenancyService, workspaces: int) -> None:
    """Set-up, not measured: clusters, repos, teams, workspaces with grants, applications."""
    service.seed_default_environments()

    def run(batch: list[Command]) -> None:
        context = [CommandContext(ADMIN, str(uuid.uuid4()), "bench") for _ in batch]
        service.handle_batch(list(zip(batch, context, strict=True)))

    def cmd(command: str, **body: object) -> Command:
        return COMMANDS[command].model_validate(body)

    run(
        [
            cmd(
                "register_storage_integration",
                name="local",
                provider="local",
                storage_root="file:///srv/ml",
            )
        ]
    )
    for start in range(0, workspaces, 50):
        c = f"c-{start}"
        run(
            [
                cmd(
                    "register_cluster",
                    name=c,
                    region="eu-west-1",
                    provider="generic",
                    environments=["dev", "prod"],
                ),
                cmd("create_team", name=f"team-{start}", members=["ana@example.com"]),
            ]
        )
        run(
            [
                cmd("create_ml_repo", name=f"repo-{i}", storage_integration="local")
                for i in range(start, min(start + 50, workspaces))
            ]
        )
        run(
            [
                cmd(
                    "create_workspace",
                    cluster=c,
                    name=f"ws-{i}",
                    environment="dev",
                    ml_repo_access=[{"repo": f"repo-{i}", "role": "editor"}],
                )
                for i in range(start, min(start + 50, workspaces))
            ]
        )
        run(
            [
                cmd(
                    "grant_repo_access",
                    repo=f"repo-{i}",
                    subject=f"team:team-{start}",
                    role="viewer",
                    reason="bench",
                )
                for i in range(start, min(start + 50, workspaces))
            ]
        )
        run(
            [
                cmd("register_application", workspace=f"{c}:ws-{i}", name="scorer")
                for i in range(start, min(start + 50, workspaces), 5)
            ]
        )


def _baseline(service: TenancyService, batch: int) -> tuple[float, int]:
    events = 0
    position = 0
    with stopwatch() as elapsed:
        while True:
            notifications = service.recorder.select_notifications(
                position, batch, inclusive_of_start=False
            )
            if not notifications:
                break
            for notification in notifications:
                if notification.topic not in INTERNAL_TOPICS:
                    unchained_body(notification)
                    events += 1
            position = notifications[-1].id
    return events / elapsed[0], events


def _product(service: TenancyService, folder: Path, round_: int, batch: int) -> float:
    # A scratch store, as `tenantry rebuild-views` builds into (its copy into the live file,
    # the swap, is not measured here).
    store = ViewStore.from_url(f"sqlite:///{folder / f'views-{round_}.sqlite'}", scratch=True)
    with stopwatch() as elapsed:
        rebuild(service.recorder, store, batch_size=batch)
    events = store.position()
    store.close()
    assert events == service.recorder.max_notification_id()
    return _published(service) / elapsed[0]


def _published(service: TenancyService) -> int:
    return sum(
        n.topic not in INTERNAL_TOPICS
        for n in service.recorder.select_notifications(None, 10_000_000)
    )


# Five: a round is short (under a second at the quick size) and the machines here are noisy.
ROUNDS = 5


def run(quick: bool) -> Result:
    workspaces = 400 if quick else 3000
    batch = 2_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        service = TenancyService(event_store_env(Settings(state_dir=folder / "state")))
        _history(service, workspaces)
        raws, ours, events = [], [], 0
        for round_ in range(ROUNDS):  # alternating rounds, medians: the machine is shared
            rate, events = _baseline(service, batch)
            raws.append(rate)
            ours.append(_product(service, folder, round_, batch))
        service.close()
    return Result(
        "projection_rebuild",
        statistics.median(ours),
        statistics.median(raws),
        "events/s",
        0.3,
        0.6,
        {"events": events, "rounds": ROUNDS},
    )
