"""Access reviews over a real nats-server, a SQLite store, the relay, the views and the scheduler:
decisions by several reviewers, the separation of duties answered `forbidden` with nothing
written, the queries (progress, the items waiting for me), the auto-close at `due` by the
scheduler, and the evidence export verified by `tenantry audit verify`, a tampered copy failing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient

from domain.access_review import AccessReview
from domain.authorization import Authorization
from domain.base import CommandContext
from domain.commands import Command
from domain.service import TenancyService
from projections.runner import ProjectionRunner
from projections.store import ViewStore
from tenantry.log.relay import Relay
from tenantry.protocol import CommandReply, Forbidden, PreconditionFailed
from tenantry.sdk.client import Client
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import QueryEndpoint
from tenantry.server.scheduler import Scheduler
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.clock import ControlledClock
from tests.integration.cli import cli

ANA = "user:ana@example.com"  # the tenant admin
ZED = "user:zed@example.com"  # a tenant admin too, of no repo
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DUE = START + timedelta(days=14)


def user(n: int) -> str:
    return f"user:u{n:03d}@example.com"


@dataclass
class Governed:
    """Every role of `tenantry up` in this process, on a clock the test moves."""

    service: TenancyService
    clock: ControlledClock
    nc: NatsClient
    url: str
    runner: ProjectionRunner

    def as_(self, actor: str) -> Client:
        return Client(self.nc, actor=actor)

    def review(self, name: str) -> AccessReview:
        found: AccessReview = self.service.repository.get(AccessReview.create_id(name))
        return found


@pytest.fixture
async def governed(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Governed]:
    settings = Settings(state_dir=tmp_path / "state")
    clock = ControlledClock(START)
    authorization = Authorization(admins=frozenset({ANA, ZED}))
    service = TenancyService(event_store_env(settings), authorization=authorization, clock=clock)
    service.seed_default_environments()
    service_nc = await nats.connect(nats_server.url)
    commands = CommandEndpoint(service_nc, service)
    await commands.start()
    relay = Relay(service.recorder, service_nc, poll_interval=0.02)
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    store.create_tables()
    runner = ProjectionRunner(service.recorder, store)
    queries = QueryEndpoint(
        service_nc, store, runner.position, progress=runner.progress, authorization=authorization
    )
    await queries.start()

    async def send(command: Command, context: CommandContext) -> CommandReply:
        return await asyncio.to_thread(service.handle, command, context)

    # The scheduler as a command service runs it, every second (TENANTRY_EXPIRY_INTERVAL).
    scheduler = Scheduler(service.recorder, send, clock)
    stop, wakeup = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(runner.run(stop, wakeup, 0.05)),
        asyncio.create_task(scheduler.run(stop, 1.0)),
    ]
    nc = await nats.connect(nats_server.url)
    monkeypatch.setenv("TENANTRY_NATS_URL", nats_server.url)
    monkeypatch.setenv("TENANTRY_LOG_LEVEL", "warning")
    yield Governed(service, clock, nc, nats_server.url, runner)
    stop.set()
    await asyncio.gather(*tasks)
    await nc.close()
    await queries.stop()
    await commands.stop()
    await service_nc.drain()
    store.close()
    service.close()


async def _world(g: Governed, repos: int, users_per_repo: int) -> list[str]:
    """`repos` repos created by ANA; repo k administered by a reviewer (`user:rev0`, `user:rev1`,
    alternately), `users_per_repo` viewers each."""
    ana = g.as_(ANA)
    await ana.register_storage_integration(
        name="files", provider="local", storage_root="file:///srv/tenantry"
    )
    names = []
    for k in range(repos):
        name = f"models-{k:02d}"
        names.append(name)
        await ana.create_ml_repo(name=name, storage_integration="files")
        await ana.grant_repo_access(repo=name, subject=f"user:rev{k % 2}@example.com", role="admin")
        for n in range(users_per_repo):
            await ana.grant_repo_access(repo=name, subject=user(k * 100 + n), role="viewer")
    return names


async def test_reviewers_decide_their_repos_items_and_never_their_own(governed: Governed) -> None:
    g = governed
    repos = await _world(g, 2, 3)
    ana, rev0, rev1 = g.as_(ANA), g.as_("user:rev0@example.com"), g.as_("user:rev1@example.com")

    opened = await ana.open_access_review(
        name="q4", scope={"repos": repos}, due=DUE.isoformat(), on_undecided="keep"
    )
    review = await ana.get_access_review(name="q4", min_position=opened.position)
    assert (review.status, review.progress.items, review.progress.undecided) == ("open", 10, 10)
    mine = await rev0.list_access_review_items(review="q4", reviewer="user:rev0@example.com")
    # rev0 administers models-00: its items but rev0's own grant.
    assert [(i.repo, i.subject) for i in mine] == [
        ("models-00", ANA),
        ("models-00", user(0)),
        ("models-00", user(1)),
        ("models-00", user(2)),
    ]

    own = next(
        i
        for i in await ana.list_access_review_items(review="q4")
        if i.subject == "user:rev0@example.com"
    )
    before = g.service.recorder.max_notification_id()
    with pytest.raises(Forbidden):
        await rev0.decide_access_review_item(
            review="q4", item=own.item, decision="keep", reason="me"
        )
    with pytest.raises(Forbidden):  # not rev1's repo
        await rev1.decide_access_review_item(
            review="q4", item=mine[1].item, decision="keep", reason="x"
        )
    assert g.service.recorder.max_notification_id() == before

    revoked = await rev0.decide_access_review_item(
        review="q4", item=mine[1].item, decision="revoke", reason="left the team"
    )
    assert revoked.events == ["ml_repo.access_revoked", "access_review.item_decided"]
    check = await ana.check_access(
        subject=user(0), repo="models-00", action="read", min_position=revoked.position
    )
    assert not check.allowed
    with pytest.raises(PreconditionFailed):
        await rev0.decide_access_review_item(
            review="q4", item=mine[1].item, decision="keep", reason="x"
        )
    decided = await ana.list_access_review_items(review="q4", status="decided")
    assert [(i.item, i.decision, i.decided_by, i.reason, i.outcome) for i in decided] == [
        (mine[1].item, "revoke", "user:rev0@example.com", "left the team", "revoked")
    ]
    # The decision's event, as the audit log has it: its position and chain hash.
    assert decided[0].decided_position is not None
    page = await ana.audit_log(after=decided[0].decided_position - 1, limit=1)
    event = page.events[0]
    assert (event["type"], event["hash"]) == ("access_review.item_decided", decided[0].decided_hash)
    assert event["command_id"] == revoked.command_id
    review = await ana.get_access_review(name="q4")
    assert (review.progress.decided, review.progress.revoked) == (1, 1)
    assert [r.name for r in await ana.list_access_reviews(status="open")] == ["q4"]


async def test_a_tenant_admin_of_no_repo_has_every_item_waiting_but_their_own(
    governed: Governed,
) -> None:
    """A tenant admin may decide any item (`ReviewerOf`), not one about their own access: the
    items waiting for them say so too, without their being an admin of any repo."""
    g = governed
    repos = await _world(g, 2, 2)
    ana, zed = g.as_(ANA), g.as_(ZED)
    await ana.grant_repo_access(repo=repos[0], subject=ZED, role="viewer")
    opened = await ana.open_access_review(
        name="q4", scope={"repos": repos}, due=DUE.isoformat(), on_undecided="keep"
    )
    items = await ana.list_access_review_items(review="q4", min_position=opened.position)
    assert len(items) == 9  # per repo ana, its reviewer, two viewers; and zed's
    (own,) = [i for i in items if i.subject == ZED]

    waiting = await zed.list_access_review_items(review="q4", reviewer=ZED)
    assert [i.item for i in waiting] == [i.item for i in items if i.subject != ZED]
    # What the list says, the command does: any other item, not their own.
    with pytest.raises(Forbidden):
        await zed.decide_access_review_item(
            review="q4", item=own.item, decision="keep", reason="me"
        )
    other = next(i for i in waiting if i.repo == repos[1])
    decided = await zed.decide_access_review_item(
        review="q4", item=other.item, decision="keep", reason="checked"
    )
    assert decided.events == ["access_review.item_decided"]
    left = await zed.list_access_review_items(
        review="q4", reviewer=ZED, min_position=decided.position
    )
    assert [i.item for i in left] == [i.item for i in waiting if i.item != other.item]
    # A reviewer of one repo still has that repo's items only.
    rev1 = "user:rev1@example.com"
    theirs = await g.as_(rev1).list_access_review_items(review="q4", reviewer=rev1)
    assert {i.repo for i in theirs} == {repos[1]}


async def test_a_review_of_200_grants_closes_at_due_and_its_export_verifies(
    governed: Governed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = governed
    repos = await _world(g, 10, 18)  # per repo: ana, its reviewer, 18 viewers: 200 grants
    ana = g.as_(ANA)
    opened = await ana.open_access_review(
        name="q4", scope={"all": True}, due=DUE.isoformat(), on_undecided="revoke"
    )
    review = await ana.get_access_review(name="q4", min_position=opened.position)
    assert review.progress.items == 200 and review.repos == repos

    decided = {}
    for reviewer in ("user:rev0@example.com", "user:rev1@example.com"):
        client = g.as_(reviewer)
        waiting = await client.list_access_review_items(review="q4", reviewer=reviewer)
        assert len(waiting) == 5 * 19  # five repos, each item but their own grant
        for n, item in enumerate(waiting[:60]):
            decision = "revoke" if n % 6 == 0 else "keep"
            await client.decide_access_review_item(
                review="q4", item=item.item, decision=decision, reason=f"checked by {reviewer}"
            )
            decided[item.item] = decision
    await ana.decide_access_review_item(
        review="q4", item=waiting[70].item, decision="keep", reason="tenant admin"
    )
    # The reviewers' own grants are left to the tenant admin: ana decides rev0's.
    rev0_grant = next(
        i
        for i in await ana.list_access_review_items(review="q4", status="undecided")
        if i.subject == "user:rev0@example.com"
    )
    await ana.decide_access_review_item(
        review="q4", item=rev0_grant.item, decision="keep", reason="owner"
    )

    g.clock.set(DUE)  # the scheduler closes it at its next tick
    closed = await _until(lambda: g.review("q4").closed)
    assert closed
    review = await ana.get_access_review(
        name="q4", min_position=g.service.recorder.max_notification_id()
    )
    assert review.status == "closed" and review.closed_by == "service:tenantry"
    assert review.closed_at_due
    assert review.progress.decided == 200 and review.progress.undecided == 0
    automatic = [i for i in await ana.list_access_review_items(review="q4") if i.automatic]
    assert len(automatic) == 200 - 122
    assert {i.decided_by for i in automatic} == {"service:tenantry"}
    assert {i.decision for i in automatic} == {"revoke"}

    key = tmp_path / "review.key"
    assert cli(["audit", "keygen", "-o", str(key)]) == 0
    export = tmp_path / "q4.jsonl"
    code = await asyncio.to_thread(
        cli, ["review", "export", "q4", "-o", str(export), "--sign-key", str(key)]
    )
    assert code == 0
    capsys.readouterr()
    assert cli(["audit", "verify", str(export), "--public-key", f"{key}.pub"]) == 0
    assert "OK:" in capsys.readouterr().out
    evidence = json.loads(Path(f"{export}.evidence.json").read_text())
    assert len(evidence["snapshot"]) == 200 and len(evidence["decisions"]) == 200
    assert evidence["closed"]["by"] == "service:tenantry"
    by_item = {d["item"]: d for d in evidence["decisions"]}
    for item, decision in decided.items():
        assert by_item[item]["decision"] == decision
        assert len(by_item[item]["remediation"]) == (decision == "revoke")
    lines = export.read_bytes().splitlines(keepends=True)
    events = [json.loads(line) for line in lines[:-1]]
    assert evidence["checkpoint"]["last_hash"] == events[-1]["hash"]
    assert events[0]["type"] == "access_review.opened"
    assert events[-1]["type"] == "access_review.closed"

    # A copy with one decision's reason changed fails, naming its position.
    index = next(n for n, e in enumerate(events) if e["type"] == "access_review.item_decided")
    tampered = tmp_path / "tampered.jsonl"
    lines[index] = lines[index].replace(b"checked by", b"checkd by")
    tampered.write_bytes(b"".join(lines))
    capsys.readouterr()
    assert cli(["audit", "verify", str(tampered), "--public-key", f"{key}.pub"]) == 1
    assert f"FAILED at position {events[index]['position']}" in capsys.readouterr().out


async def _until(condition: Any, timeout: float = 30.0) -> bool:
    """Wait (polling) until `condition()` holds; False after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True
