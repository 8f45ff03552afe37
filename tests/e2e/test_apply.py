"""`tenantry apply` against a real `tenantry up`: manifests applied in dependency order, a second
apply that writes nothing (the store's and the stream's last positions stay put), a dry run
that shows a change and writes nothing, and an invalid manifest refused with its location."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nats
import pytest

from domain.event_log import INTERNAL_TOPICS
from tests.e2e.conftest import Tenantry

PLATFORM = """\
# Referred to by the other file: applied first whatever the order of files and documents.
type: cluster
name: prod-eu
region: eu-west-1
provider: aws-eks
environments: [prod, dev]
labels: {tier: gold}
---
type: storage-integration
name: s3-main
provider: s3
storage_root: s3://ml-bucket/repos
---
type: environment
name: gpu-dev
optimize_for: cost
color: "#3366ff"
"""

TEAM = """\
type: workspace
cluster: prod-eu
name: fraud
environment: prod
labels: {team: risk}
ml_repo_access:
  - {repo: fraud-models, role: editor}
---
type: ml-repo
name: fraud-models
storage_integration: s3-main
description: Fraud detection models
collaborators:
  - {subject: "user:ana@example.com", role: admin}
  - {subject: team:risk, role: viewer}
---
type: team
name: risk
members: [bo@example.com, cy@example.com]
"""


async def _cli(
    instance: Tenantry, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TENANTRY_STATE_DIR": str(instance.state_dir)}
    env.pop("TENANTRY_NATS_URL", None)  # found through <state dir>/nats.url, as on a laptop
    env.pop("TENANTRY_ACTOR", None)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tenantry.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _store_position(instance: Tenantry) -> tuple[int, int]:
    """(the last position in the event store, the last position of a published event)."""
    with sqlite3.connect(instance.state_dir / "events.sqlite") as db:
        # MAX(rowid) is the library's own "max notification id" on SQLite.
        last = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()[0]
        marks = ",".join("?" * len(INTERNAL_TOPICS))
        published = db.execute(
            f"SELECT MAX(rowid) FROM stored_events WHERE topic NOT IN ({marks})",
            list(INTERNAL_TOPICS),
        ).fetchone()[0]
    return last or 0, published or 0


async def _stream_last(instance: Tenantry) -> tuple[int, int]:
    """(the stream's last sequence, the position of its last event)."""
    nc = await nats.connect(instance.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("TENANTRY_EVENTS")
        last_seq = info.state.last_seq
        if not last_seq:
            return 0, 0
        message = await js.get_msg("TENANTRY_EVENTS", last_seq)
        return last_seq, json.loads(message.data or b"{}")["position"]
    finally:
        await nc.close()


async def _positions_settled(instance: Tenantry) -> tuple[int, int]:
    """The store's last position and the stream's last sequence, once the relay has published
    everything the store holds."""
    deadline = time.monotonic() + 20
    while True:
        last, published = _store_position(instance)
        seq, position = await _stream_last(instance)
        if position == published:
            return last, seq
        assert time.monotonic() < deadline, (published, position)
        await asyncio.sleep(0.1)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    # Named so that the file needing the other one is read first.
    (folder / "10-team.yaml").write_text(TEAM)
    (folder / "20-platform.yml").write_text(PLATFORM)
    return folder


async def test_apply_twice_dry_run_and_an_invalid_manifest(
    tenantry_up: Tenantry, manifests: Path, tmp_path: Path
) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()

    first = await _cli(
        tenantry_up, "apply", "-f", str(manifests), "--actor", "user:ana@example.com"
    )
    assert first.returncode == 0, first.stderr + first.stdout
    for line in (
        "+ environment gpu-dev (create)",
        "+ cluster prod-eu (create)",
        "+ ml-repo fraud-models (create)",
        '    collaborators[team:risk]: "viewer"',
        "+ workspace prod-eu:fraud (create)",
        "Plan: 6 to create, 0 to update, 0 unchanged; 7 command(s).",
        "Applied 7 command(s)",
    ):
        assert line in first.stdout, first.stdout

    # What was applied is there, read right after (apply waited for the views).
    got = await _cli(tenantry_up, "get", "workspaces", "prod-eu:fraud", "-o", "json")
    assert got.returncode == 0, got.stderr
    workspace = json.loads(got.stdout)
    assert (workspace["environment"], workspace["labels"]) == ("prod", {"team": "risk"})
    allowed = await _cli(
        tenantry_up, "check-access", "workspace:prod-eu:fraud", "fraud-models", "write"
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert json.loads(allowed.stdout) == {"allowed": True, "role": "editor", "via": "direct"}
    denied = await _cli(tenantry_up, "check-access", "user:bo@example.com", "fraud-models", "write")
    assert denied.returncode == 1
    assert json.loads(denied.stdout) == {"allowed": False, "role": "viewer", "via": "team:risk"}

    before = await _positions_settled(tenantry_up)
    again = await _cli(
        tenantry_up, "apply", "-f", str(manifests), "--actor", "user:ana@example.com"
    )
    assert again.returncode == 0, again.stderr
    assert "Plan: 0 to create, 0 to update, 6 unchanged; 0 command(s). Nothing to change." in (
        again.stdout
    )
    assert await _positions_settled(tenantry_up) == before, "the second apply wrote events"

    # A dry run of a changed manifest shows the change field by field, and writes nothing.
    changed = TEAM.replace("labels: {team: risk}", "labels: {team: fraud}").replace(
        "{subject: team:risk, role: viewer}", "{subject: team:risk, role: editor}"
    )
    (manifests / "10-team.yaml").write_text(changed)
    dry = await _cli(tenantry_up, "apply", "-f", str(manifests), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for line in (
        "~ workspace prod-eu:fraud (update)",
        '    labels.team: "risk" → "fraud"',
        "~ ml-repo fraud-models (update)",
        '    collaborators[team:risk]: "viewer" → "editor"',
        "= cluster prod-eu",
        "Plan: 0 to create, 2 to update, 4 unchanged; 2 command(s).",
        "Dry run: nothing was written.",
    ):
        assert line in dry.stdout, dry.stdout
    as_json = await _cli(tenantry_up, "apply", "-f", str(manifests), "--dry-run", "-o", "json")
    plan = json.loads(as_json.stdout)
    assert [c["command"] for c in plan["commands"]] == ["update_workspace", "grant_repo_access"]
    assert plan["applied"] == []
    assert await _positions_settled(tenantry_up) == before, "the dry run wrote events"

    # An invalid manifest: reported with file, document and field; nothing of it is written,
    # not even its valid documents.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            type: team
            name: audit
            ---
            type: workspace
            cluster: prod-eu
            name: sandbox
            environment: dev
            labels:
              team: 42
            """
        )
    )
    refused = await _cli(tenantry_up, "apply", "-f", str(bad))
    assert refused.returncode == 1
    assert f"{bad}: document 2 (line 9): labels.team: Input should be a valid string" in (
        refused.stderr
    )
    assert "nothing was applied" in refused.stderr
    assert await _positions_settled(tenantry_up) == before, "an invalid manifest wrote events"

    # From standard input, the change is applied; then there is nothing left to do.
    applied = await _cli(tenantry_up, "apply", "-f", "-", stdin=changed + "---\n" + PLATFORM)
    assert applied.returncode == 0, applied.stderr
    assert "Applied 2 command(s)" in applied.stdout
    got = await _cli(tenantry_up, "get", "workspace", "prod-eu:fraud", "-o", "yaml")
    assert "team: fraud" in got.stdout
    settled = await _positions_settled(tenantry_up)
    assert settled > before
    last = await _cli(tenantry_up, "apply", "-f", str(manifests))
    assert "Nothing to change." in last.stdout
    assert await _positions_settled(tenantry_up) == settled
    assert tenantry_up.stop() == 0, tenantry_up.log()


async def test_prune_revokes_only_what_apply_granted_and_summary_counts(
    tenantry_up: Tenantry, manifests: Path
) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    ana = ("--actor", "user:ana@example.com")
    first = await _cli(tenantry_up, "apply", "-f", str(manifests), *ana)
    assert first.returncode == 0, first.stderr + first.stdout
    # A grant made on the bus, which no manifest names: nobody's to take away.
    made = await tenantry_up.command(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": "user:eve@example.com", "role": "viewer"},
        **{"Tenantry-Actor": "user:ana@example.com"},
    )
    assert made["ok"], made
    untouched = await _cli(tenantry_up, "apply", "-f", str(manifests), "--prune", *ana)
    assert untouched.returncode == 0, untouched.stderr
    assert "eve@example.com" not in untouched.stdout, untouched.stdout
    assert "Nothing to change." in untouched.stdout, untouched.stdout
    check = await _cli(tenantry_up, "check-access", "user:eve@example.com", "fraud-models")
    assert check.returncode == 0, "apply --prune revoked a grant made on the bus"

    # A grant the manifests declared (apply granted it), then taken out of them.
    (manifests / "10-team.yaml").write_text(
        TEAM.replace("  - {subject: team:risk, role: viewer}\n", "")
    )
    kept = await _cli(tenantry_up, "apply", "-f", str(manifests), *ana)
    assert kept.returncode == 0, kept.stderr
    assert (
        '    - revoke collaborators[team:risk]: "viewer"  (kept: --prune revokes it)' in kept.stdout
    ), kept.stdout
    assert "eve@example.com" not in kept.stdout, kept.stdout
    assert "1 grant(s) the manifests do not name: kept (--prune revokes them)." in kept.stdout
    summary = await _cli(tenantry_up, "apply", "-f", str(manifests), "--summary", *ana)
    assert summary.stdout.strip().splitlines() == [
        "Plan: 0 to create, 0 to update, 6 unchanged; 0 command(s). 1 grant(s) the manifests "
        "do not name: kept (--prune revokes them). Nothing to change."
    ], summary.stdout
    check = await _cli(tenantry_up, "check-access", "user:bo@example.com", "fraud-models")
    assert check.returncode == 0, "a grant taken out of the manifests survived without --prune"

    pruned = await _cli(tenantry_up, "apply", "-f", str(manifests), "--prune", *ana)
    assert pruned.returncode == 0, pruned.stderr
    assert "Applied 1 command(s)" in pruned.stdout, pruned.stdout
    check = await _cli(tenantry_up, "check-access", "user:bo@example.com", "fraud-models")
    assert check.returncode == 1, "--prune revokes what apply granted and the manifests dropped"
    check = await _cli(tenantry_up, "check-access", "user:eve@example.com", "fraud-models")
    assert check.returncode == 0, "apply --prune revoked a grant made on the bus"
    assert tenantry_up.stop() == 0, tenantry_up.log()


# The third document names an environment nobody has: the command service refuses the third
# command (index 2), which the first two would otherwise have been written before.
REFUSED_THIRD = """\
type: environment
name: gpu-dev
---
type: storage-integration
name: s3-main
provider: s3
storage_root: s3://ml-bucket/repos
---
type: cluster
name: gpu-eu
region: eu-west-1
provider: generic
environments: [gpu-dev, nowhere]
"""


async def test_a_manifest_refused_at_its_third_document_writes_nothing(
    tenantry_up: Tenantry, tmp_path: Path
) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    manifest = tmp_path / "refused.yaml"
    manifest.write_text(REFUSED_THIRD)
    before = await _positions_settled(tenantry_up)
    views_before = [
        (await _cli(tenantry_up, "get", kind, "-o", "json")).stdout
        for kind in ("environments", "storage-integrations", "clusters")
    ]

    # The dry run asks the command service: its refusal, at the third document.
    dry = await _cli(tenantry_up, "apply", "-f", str(manifest), "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert f"{manifest}: document 3 (line 9): register_cluster gpu-eu:" in dry.stderr
    assert "precondition_failed" in dry.stderr and "'nowhere' does not exist" in dry.stderr
    dry_json = await _cli(tenantry_up, "apply", "-f", str(manifest), "--dry-run", "-o", "json")
    assert dry_json.returncode == 1
    dry_refused = json.loads(dry_json.stdout)["refused"]
    assert (dry_refused["code"], dry_refused["index"]) == ("precondition_failed", 2)
    assert dry_refused["source"] == {"file": str(manifest), "index": 3, "line": 9}

    # Applied: the same refusal, and nothing written — not the first two documents either.
    real = await _cli(tenantry_up, "apply", "-f", str(manifest), "-o", "json")
    assert real.returncode == 1
    refused = json.loads(real.stdout)
    assert refused["refused"] == dry_refused
    assert refused["applied"] == []
    assert "nothing was applied" in real.stderr
    assert await _positions_settled(tenantry_up) == before, "a refused apply wrote events"
    views_after = [
        (await _cli(tenantry_up, "get", kind, "-o", "json")).stdout
        for kind in ("environments", "storage-integrations", "clusters")
    ]
    assert views_after == views_before
    assert "gpu-dev" not in views_after[0]

    # Mended, the same three documents go in as one apply.
    manifest.write_text(REFUSED_THIRD.replace(", nowhere]", "]"))
    applied = await _cli(tenantry_up, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "Applied 3 command(s)" in applied.stdout
    assert tenantry_up.stop() == 0, tenantry_up.log()
