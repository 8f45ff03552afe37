"""Access over time through the bus: `access_report` and `access_changes` asked on
`tenantry.query.*` after commands sent on `tenantry.cmd.*`, and the CLI verbs built on them,
`tenantry access-report` (table, CSV, JSON) and `tenantry replay` (the same answer from the event
store itself)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from projections.store import ViewStore
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import serve_views
from tenantry.server.wakeups import wake_on_save
from tenantry.settings import Settings
from tests.integration.conftest import Bus
from tests.integration.world import ADMIN, WORLD

ANA = "user:ana@example.com"
BO = "user:bo@example.com"


@dataclass
class History:
    bus: Bus
    t0: datetime
    t1: datetime
    t2: datetime
    last: int

    async def query(self, name: str, **params: Any) -> Any:
        body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        reply = await self.bus.nc.request(
            f"tenantry.query.{name}",
            # A loaded machine may take a while to project: wait as long as the service allows.
            json.dumps({**body, "min_position": self.last, "min_position_timeout": 30}).encode(),
            timeout=40,
        )
        answer = json.loads(reply.data)
        assert answer["ok"], answer
        return answer["data"]


async def _send(bus: Bus, name: str, body: dict[str, Any], actor: str = ADMIN) -> int:
    answer = await bus.command(name, body, actor=actor)
    assert answer["ok"], answer
    position: int = answer["position"]
    return position


@pytest.fixture
async def history(
    bus: Bus,
    nats_server: NatsServer,
    sqlite_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[History]:
    """The query service over the bus fixture's store; a grant to ana at t1 (after the world is
    built at t0), revoked by bo at t2."""
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views' / 'views.sqlite'}")
    wakeup, stop = asyncio.Event(), asyncio.Event()
    bus.service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
    nc = await nats.connect(nats_server.url)
    serving = asyncio.create_task(serve_views(bus.service.recorder, store, nc, stop, wakeup))
    for name, body, actor in WORLD:
        await _send(bus, name, body, actor)
    t0 = datetime.now(UTC)
    grant = {"repo": "fraud-models", "subject": ANA, "role": "editor", "reason": "INC-7 on call"}
    await _send(bus, "grant_repo_access", grant)
    t1 = datetime.now(UTC)
    revoke = {"repo": "fraud-models", "subject": ANA, "reason": "INC-7 closed"}
    last = await _send(bus, "revoke_repo_access", revoke, actor=BO)
    t2 = datetime.now(UTC)
    monkeypatch.setenv("TENANTRY_NATS_URL", nats_server.url)
    monkeypatch.setenv("TENANTRY_STATE_DIR", str(sqlite_settings.state_dir))
    monkeypatch.setenv("TENANTRY_LOG_LEVEL", "warning")
    yield History(bus, t0, t1, t2, last)
    stop.set()
    await serving
    await nc.drain()
    store.close()


async def test_a_grant_and_its_revoke_absent_present_absent_with_who_and_why(
    history: History,
) -> None:
    ana = {"repo": "fraud-models", "subject": ANA}
    assert await history.query("access_report", as_of=history.t0, **ana) == []
    present = await history.query("access_report", as_of=history.t1, **ana)
    assert [(r["role"], r["granted_by"], r["reason"], r["via"]) for r in present] == [
        ("editor", ADMIN, "INC-7 on call", "direct")
    ]
    assert await history.query("access_report", as_of=history.t2, **ana) == []
    changes = await history.query("access_changes", **{"from": history.t0, "to": history.t2}, **ana)
    assert [
        (c["change"], c["role"], c["previous_role"], c["actor"], c["reason"]) for c in changes
    ] == [
        ("granted", "editor", None, ADMIN, "INC-7 on call"),
        ("revoked", None, "editor", BO, "INC-7 closed"),
    ]
    assert history.t0 < datetime.fromisoformat(changes[0]["at"]) <= history.t1
    assert history.t1 < datetime.fromisoformat(changes[1]["at"]) <= history.t2
    # Every way anyone held a role at t1: direct grants, the team's members, the application.
    everyone = await history.query("access_report", as_of=history.t1, repo="fraud-models")
    assert {(r["subject"], r["via"]) for r in everyone} >= {
        (ANA, "direct"),
        ("team:risk", "direct"),
        (BO, "team:risk"),
        (BO, "direct"),
        ("app:prod-eu:fraud:scorer", "workspace:prod-eu:fraud"),
    }


async def _tenantry(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tenantry.cli", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_access_report_on_the_command_line(history: History) -> None:
    at = history.t1.isoformat()

    async def run(*args: str) -> str:
        done = await _tenantry("access-report", "--as-of", at, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    wanted = await history.query("access_report", as_of=history.t1)
    assert json.loads(await run()) == wanted  # piped: JSON, the query's data
    rows = list(csv.DictReader(io.StringIO(await run("-o", "csv", "--subject", ANA))))
    assert [(r["repo"], r["role"], r["via"], r["reason"]) for r in rows] == [
        ("fraud-models", "editor", "direct", "INC-7 on call")
    ]
    table = await run("-o", "table", "--repo", "fraud-models")
    assert "INC-7 on call" in table and "team:risk" in table
    refused = await _tenantry("access-report", "--as-of", at, "--repo", "nope-repo")
    assert refused.returncode == 1
    assert "not_found" in refused.stderr


async def test_replay_prints_what_the_temporal_view_answers(
    history: History, tmp_path: Path
) -> None:
    for moment in (history.t0, history.t1, history.t2):
        done = await _tenantry("replay", "--until", moment.isoformat())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == await history.query("access_report", as_of=moment)
        assert "replayed" in done.stderr
    # The rebuilt views can be kept, and a kept store is not replayed into twice.
    kept = tmp_path / "at-t1.sqlite"
    args = ["replay", "--until", history.t1.isoformat(), "--store", str(kept), "-o", "csv"]
    assert (await _tenantry(*args)).returncode == 0
    assert kept.exists()
    again = await _tenantry(*args)
    assert again.returncode == 2
    assert "already holds views" in again.stderr


async def test_hostile_reasons_reach_no_terminal_and_no_spreadsheet(history: History) -> None:
    """A reason is free text anyone granting may write: `[/]` used to crash `access-report`
    for everyone (rich markup), `ESC[2J` cleared the reader's screen, `=HYPERLINK(…)` ran in
    the spreadsheet of whoever opened the CSV."""
    reason = '[/] \x1b[2J\x9b31m =HYPERLINK("http://evil.example.com")'
    grant = {"repo": "fraud-models", "subject": ANA, "role": "viewer", "reason": reason}
    position = await _send(history.bus, "grant_repo_access", grant)
    history.last = position
    now = datetime.now(UTC).isoformat()
    await history.query("access_report", as_of=now)  # the views have the grant

    table = await _tenantry("access-report", "--as-of", now, "--subject", ANA, "-o", "table")
    assert table.returncode == 0, table.stderr
    assert "[/]" in table.stdout
    assert "\\x1b[2J" in table.stdout
    assert "\x1b" not in table.stdout and "\x9b" not in table.stdout
    sheet = await _tenantry("access-report", "--as-of", now, "--subject", ANA, "-o", "csv")
    assert sheet.returncode == 0, sheet.stderr
    [row] = csv.DictReader(io.StringIO(sheet.stdout))
    assert row["reason"] == reason  # not neutralised: it starts with '['
    hostile = {**grant, "reason": '=HYPERLINK("http://evil.example.com","x")'}
    history.last = await _send(history.bus, "grant_repo_access", {**hostile, "role": "editor"})
    later = datetime.now(UTC).isoformat()
    sheet = await _tenantry("access-report", "--as-of", later, "--subject", ANA, "-o", "csv")
    [row] = csv.DictReader(io.StringIO(sheet.stdout))
    assert row["reason"] == "'" + hostile["reason"]
