"""Lists of any size over a bus with a small `max_payload`: pages with `limit`/`after` add up to
the whole answer, an answer too big for one message is refused with a hint (not dropped), and
`tenantry.Client` pages by itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenantry.sdk.client import Client
from tenantry.server.nats_server import NatsServer
from tests.integration.views import Views
from tests.integration.world import ADMIN

MAX_PAYLOAD = 16 * 1024
REPOS = 120  # list_ml_repos is ~35 KB then: over MAX_PAYLOAD


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """This module's bus carries at most 16 KiB per message (the default is 1 MiB)."""
    config = tmp_path / "nats.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = NatsServer(tmp_path / "nats", config=config).start()
    yield server
    server.stop()


async def _many_repos(views: Views) -> int:
    position = await views.build_world()
    for i in range(REPOS):
        await views.send(
            "create_ml_repo", {"name": f"repo-{i:03d}", "storage_integration": "s3-main"}
        )
        position = await views.send(
            "grant_repo_access",
            {"repo": f"repo-{i:03d}", "subject": "team:risk", "role": "viewer", "reason": "r"},
        )
    return position


async def _page(views: Views, name: str, params: dict[str, Any]) -> dict[str, Any]:
    reply = json.loads((await views.raw(name, params)).data)
    assert reply["ok"], reply
    assert set(reply) == {"ok", "position", "data", "next"}
    return reply


async def _all_pages(views: Views, name: str, params: dict[str, Any], limit: int) -> list[Any]:
    rows: list[Any] = []
    after = None
    pages = 0
    while True:
        reply = await _page(views, name, {**params, "limit": limit, "after": after})
        pages += 1
        assert len(reply["data"]) <= limit
        rows += reply["data"]
        if reply["next"] is None:
            break
        assert len(reply["data"]) == limit  # only the last page may be short
        after = reply["next"]
    assert pages == max(1, -(-len(rows) // limit))
    return rows


LISTS: list[tuple[str, dict[str, Any]]] = [
    ("list_environments", {}),
    ("list_clusters", {}),
    ("list_workspaces", {}),
    ("repo_access", {"repo": "fraud-models"}),
    ("subject_access", {"subject": "user:bo@example.com"}),
    ("environment_tags", {}),
    ("access_report", {"as_of": "2999-01-01T00:00:00Z", "repo": "fraud-models"}),
    ("access_changes", {"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}),
    ("list_teams", {}),
    ("list_storage_integrations", {}),
]


@pytest.mark.parametrize("limit", [1, 2, 7])
async def test_pages_add_up_to_the_whole_answer(views: Views, limit: int) -> None:
    last = await views.build_world()
    await views.query("list_environments", {"min_position": last})
    for name, params in LISTS:
        whole = await views.data(name, **params)
        assert whole, name  # something to page through
        assert await _all_pages(views, name, params, limit) == whole, name


async def test_an_answer_too_big_for_the_bus_is_refused_with_a_hint(
    views: Views,
) -> None:
    last = await _many_repos(views)
    reply = await views.raw("list_ml_repos", {"min_position": last})
    answer = json.loads(reply.data)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "validation_error"
    assert "limit" in answer["error"]["message"]
    details = answer["error"]["details"]
    assert details["max_payload"] == MAX_PAYLOAD
    assert details["bytes"] > MAX_PAYLOAD
    assert details["rows"] == REPOS + 2
    # Page by page, the same list comes through.
    repos = await _all_pages(views, "list_ml_repos", {}, 25)
    assert [r["name"] for r in repos] == sorted(
        ["churn-models", "fraud-models", *(f"repo-{i:03d}" for i in range(REPOS))]
    )
    # The access report of all those grants too (each repo's grant to team:risk, its members).
    report = await _all_pages(views, "access_report", {"as_of": "2999-01-01T00:00:00Z"}, 40)
    assert {r["repo"] for r in report if r["via"] == "team:risk"} >= {
        f"repo-{i:03d}" for i in range(REPOS)
    }
    keys = [(r["repo"], r["subject"], r["via"]) for r in report]
    assert keys == sorted(set(keys))  # in order, no row twice


async def test_the_client_pages_by_itself(views: Views, nats_server: NatsServer) -> None:
    await _many_repos(views)
    async with await Client.connect(nats_server.url, actor=ADMIN) as client:
        await client.wait_for(views.bus.service.recorder.max_notification_id() or 0)
        repos = await client.list_ml_repos()
        assert len(repos) == REPOS + 2
        assert len({r.name for r in repos}) == REPOS + 2
        subject_rows = await client.subject_access(subject="user:bo@example.com")
        assert {a.repo for a in subject_rows} >= {f"repo-{i:03d}" for i in range(REPOS)}


@pytest.mark.parametrize(
    ("name", "after"),
    [
        ("list_ml_repos", "not json"),
        ("list_ml_repos", '{"name": "x"}'),
        ("list_ml_repos", "[true]"),
        ("list_ml_repos", "[[1]]"),
        ("list_ml_repos", '[3, "fraud-models", "user:a", "direct", "granted"]'),  # another's
    ],
)
async def test_a_cursor_not_given_by_the_query_is_refused(
    views: Views,
    name: str,
    after: str,
) -> None:
    last = await views.build_world()
    answer = await views.query(name, {"min_position": last, "limit": 1, "after": after})
    assert answer["ok"] is False
    assert answer["error"]["code"] == "validation_error"
    # Refused by the query's model, as any other invalid parameter (tests/unit/test_query_cursor).
    assert [e["loc"] for e in answer["error"]["details"]["errors"]] == [["after"]]


async def test_a_query_that_is_not_a_list_takes_no_limit(views: Views) -> None:
    answer = await views.query("get_ml_repo", {"name": "fraud-models", "limit": 1})
    assert answer["ok"] is False
    assert answer["error"]["code"] == "validation_error"


async def test_tenantry_access_report_pages_a_report_bigger_than_one_message(
    views: Views, nats_server: NatsServer, tmp_path: Path
) -> None:
    """`tenantry access-report` used to send one unpaged request: a report bigger than the bus
    carries was refused. It follows the query's paging now and prints the whole report."""
    last = await _many_repos(views)
    as_of = "2999-01-01T00:00:00Z"
    unpaged = json.loads((await views.raw("access_report", {"as_of": as_of})).data)
    assert unpaged["ok"] is False and unpaged["error"]["code"] == "validation_error"
    assert unpaged["error"]["details"]["bytes"] > MAX_PAYLOAD
    whole = await _all_pages(views, "access_report", {"as_of": as_of, "min_position": last}, 40)
    env = {
        **os.environ,
        "TENANTRY_NATS_URL": nats_server.url,
        "TENANTRY_STATE_DIR": str(tmp_path / "cli-state"),
        "TENANTRY_LOG_LEVEL": "warning",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tenantry.cli", "access-report", "--as-of", as_of, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == whole
    assert len(whole) > REPOS  # a page of this bus holds far fewer
