"""Access requests against a real `tenantry up` with authorization on (issue 15): with `prod`
asking for two approvals, a production editor grant requested by A and approved by B and C is
usable at once and refused from its deadline on, to the millisecond; A approving their own
request is forbidden and writes nothing; a direct production grant is precondition_failed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats

from tests.e2e.conftest import Tenantry

ROOT = "user:root@example.com"  # the tenant admin
A = "user:ana@example.com"
B = "user:bo@example.com"
C = "user:cy@example.com"
WORKSPACE = "workspace:prod-eu:fraud"
MILLI = timedelta(milliseconds=1)


def _stored(instance: Tenantry) -> int:
    """The last position in the event store (MAX(rowid): the library's own)."""
    with sqlite3.connect(instance.state_dir / "events.sqlite") as db:
        return int(db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0] or 0)


class _Bus:
    def __init__(self, nc: nats.aio.client.Client) -> None:
        self.nc = nc

    async def command(self, name: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
        reply = await self.nc.request(
            f"tenantry.cmd.{name}",
            json.dumps(body).encode(),
            timeout=10,
            headers={"Tenantry-Actor": actor},
        )
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    async def ok(self, name: str, body: dict[str, Any], actor: str = ROOT) -> dict[str, Any]:
        answer = await self.command(name, body, actor)
        assert answer["ok"], (name, answer)
        return answer

    async def query(self, name: str, **params: Any) -> Any:
        reply = await self.nc.request(
            f"tenantry.query.{name}", json.dumps(params).encode(), timeout=10
        )
        answer = json.loads(reply.data)
        assert answer["ok"], (name, answer)
        return answer["data"]


async def test_two_approvals_grant_a_production_editor_until_its_deadline(
    tenantry_up: Tenantry, tmp_path: Path
) -> None:
    tenantry_up.extra_env = {"TENANTRY_ADMINS": ROOT, "TENANTRY_AUTH": "header"}
    tenantry_up.start()
    await tenantry_up.wait_ready()
    nc = await nats.connect(tenantry_up.url)
    bus = _Bus(nc)
    try:
        await bus.ok("update_environment", {"name": "prod", "access_approvals": 2})
        await bus.ok(
            "register_cluster",
            {"name": "prod-eu", "region": "eu-west-1", "provider": "generic",
             "environments": ["prod"]},
        )  # fmt: skip
        await bus.ok(
            "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
        )
        await bus.ok(
            "register_storage_integration",
            {"name": "local", "provider": "local", "storage_root": f"file://{tmp_path}/repos"},
        )
        await bus.ok("create_ml_repo", {"name": "fraud-models", "storage_integration": "local"})
        for admin in (B, C):
            await bus.ok(
                "grant_repo_access", {"repo": "fraud-models", "subject": admin, "role": "admin"}
            )

        # A direct production grant: precondition_failed, naming the request flow.
        before = _stored(tenantry_up)
        direct = {"repo": "fraud-models", "subject": WORKSPACE, "role": "editor"}
        refused = await bus.command("grant_repo_access", direct, ROOT)
        assert refused["error"]["code"] == "precondition_failed", refused
        assert refused["error"]["details"]["flow"] == "request_repo_access"
        assert _stored(tenantry_up) == before

        opened = await bus.ok(
            "request_repo_access", {**direct, "reason": "retrain", "duration": "1m"}, A
        )
        request = opened["fqn"]

        # A approving their own request: forbidden, nothing written.
        before = _stored(tenantry_up)
        own = await bus.command("approve_access_request", {"request": request}, A)
        assert own["error"]["code"] == "forbidden", own
        assert _stored(tenantry_up) == before

        await bus.ok("approve_access_request", {"request": request}, B)
        last = await bus.ok("approve_access_request", {"request": request, "comment": "ok"}, C)
        assert "ml_repo.access_granted" in last["events"]

        # Usable at once (read-your-writes at the approval's position).
        check = {"subject": WORKSPACE, "repo": "fraud-models", "action": "write"}
        now = await bus.query("check_access", **check, min_position=last["position"])
        assert now["allowed"] is True, now
        shown = await bus.query("get_access_request", request=request)
        assert shown["status"] == "approved"
        assert [a["approver"] for a in shown["approvals"]] == [B, C]
        deadline = datetime.fromisoformat(shown["grant_expires_at"].replace("Z", "+00:00"))

        # To the millisecond: in force a millisecond before its deadline, not at it.
        def report(at: datetime) -> Any:
            return bus.query(
                "access_report", as_of=at.isoformat(), repo="fraud-models", subject=WORKSPACE
            )

        assert [r["role"] for r in await report(deadline - MILLI)] == ["editor"]
        assert await report(deadline) == []

        # Refused once the deadline has passed (waited for on the wall clock, then asked).
        remaining = (deadline - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, remaining) + 0.01)
        assert datetime.now(UTC) > deadline
        after = await bus.query("check_access", **check)
        assert after["allowed"] is False, after
    finally:
        await nc.close()
        assert tenantry_up.stop() == 0
