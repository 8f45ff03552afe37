"""`tenantry up` SIGKILLed between a grant's deadline and its expiry event: after the restart,
the expiry is recorded exactly once (and access had ended at the deadline all along)."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta

from domain.service import TenancyService
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.e2e.conftest import Tenantry

ADMIN = "user:ana@example.com"
BO = "user:bo@example.com"


def _expiries(state_dir: object) -> list[dict[str, object]]:
    service = TenancyService(event_store_env(Settings(state_dir=state_dir)))  # type: ignore[arg-type]
    try:
        return [
            json.loads(n.state)
            for n in service.recorder.select_notifications(None, 1_000_000)
            if n.topic.endswith("MlRepo.AccessExpired")
        ]
    finally:
        service.close()


async def _ok(up: Tenantry, name: str, body: dict[str, object]) -> None:
    answer = await up.command(name, body, **{"Tenantry-Actor": ADMIN})
    assert answer["ok"], answer


async def test_an_expiry_missed_by_a_killed_tenantry_up_is_recorded_once_after_it(
    tenantry_up: Tenantry,
) -> None:
    up = tenantry_up
    # The first run looks for due work when it starts, then not for an hour.
    up.extra_env = {"TENANTRY_EXPIRY_INTERVAL": "3600"}
    up.start()
    await up.wait_ready()
    root = f"file://{up.state_dir}/repos"
    await _ok(
        up,
        "register_storage_integration",
        {"name": "files", "provider": "local", "storage_root": root},
    )
    await _ok(up, "create_ml_repo", {"name": "fraud-models", "storage_integration": "files"})
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    await _ok(up, "grant_repo_access", {
        "repo": "fraud-models", "subject": BO, "role": "viewer",
        "expires_at": deadline.isoformat()})  # fmt: skip
    async with asyncio.timeout(30):
        while datetime.now(UTC) <= deadline:  # noqa: ASYNC110 (the wall clock)
            await asyncio.sleep(0.05)
    check = await up.command(
        "create_environment", {"name": "x"}, **{"Tenantry-Actor": ADMIN}
    )  # a write after the deadline: the store is live, the expiry still unrecorded
    assert check["ok"]
    assert _expiries(up.state_dir) == []
    assert up.stop(signal.SIGKILL) == -signal.SIGKILL

    up.extra_env = {"TENANTRY_EXPIRY_INTERVAL": "0.2"}
    up.start()
    await up.wait_ready()
    async with asyncio.timeout(30):
        while not _expiries(up.state_dir):  # noqa: ASYNC110 (the store, polled)
            await asyncio.sleep(0.1)
    # Killed again, and started again: the scheduler reads the log and finds it done.
    assert up.stop(signal.SIGKILL) == -signal.SIGKILL
    up.start()
    await up.wait_ready()
    assert up.stop(signal.SIGTERM) == 0
    [expired] = _expiries(up.state_dir)
    assert expired["actor"] == "service:tenantry"
    assert datetime.fromisoformat(str(expired["expires_at"])) == deadline
