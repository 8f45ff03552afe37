"""A resource that failed says why: `tenantry get … -o yaml` and the table show the reason the
worker reported, not only `failed`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from tests.e2e.conftest import Tenantry


def _get(instance: Tenantry, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    env["TENANTRY_NATS_URL"] = instance.url
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "get", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done
    return done.stdout


async def test_a_failed_repo_says_why_in_yaml_and_in_the_table(tenantry_up: Tenantry) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    # `tenantry up`'s storage worker serves file:// roots: an s3:// one fails, for good.
    for name, body in [
        (
            "register_storage_integration",
            {"name": "s3-main", "provider": "s3", "storage_root": "s3://ml-bucket/repos"},
        ),
        ("create_ml_repo", {"name": "fraud-models", "storage_integration": "s3-main"}),
    ]:
        answer = await tenantry_up.command(name, body)
        assert answer["ok"], answer
    deadline = time.monotonic() + 60
    while True:
        repo = json.loads(
            await asyncio.to_thread(_get, tenantry_up, "ml-repos", "fraud-models", "-o", "json")
        )
        if repo["status"] == "failed":
            break
        assert time.monotonic() < deadline, tenantry_up.log()
        await asyncio.sleep(0.1)
    reason = "this storage worker has no backend for s3:// locations"
    assert reason in repo["failure"], repo
    shown = await asyncio.to_thread(_get, tenantry_up, "ml-repos", "fraud-models", "-o", "yaml")
    assert "failure: " in shown and reason in shown, shown
    table = await asyncio.to_thread(_get, tenantry_up, "ml-repos", "-o", "table")
    assert "failed: " + reason in " ".join(table.split()), table
    assert tenantry_up.stop() == 0, tenantry_up.log()
