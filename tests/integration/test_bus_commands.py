"""Every command over a real nats-server: answers, error codes, concurrency, idempotency."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from domain.commands import COMMANDS
from tests.integration.conftest import Bus

ADMIN = "user:root@example.com"

# One valid request for every command, in an order that builds the world each one needs.
# The access request the step names: the one the last request_repo_access opened.
LAST_REQUEST = "<last request>"
# Who sends a step, when not the admin: Bo asks for access (and cancels his request).
ACTORS = {
    "request_repo_access": "user:bo@example.com",
    "cancel_access_request": "user:bo@example.com",
}
EVERY_COMMAND: list[tuple[str, dict[str, object]]] = [
    ("create_environment", {"name": "qa", "optimize_for": "cost", "color": "#00ff00"}),
    ("update_environment", {"name": "qa", "is_production": False, "color": "#0000ff"}),
    (
        "register_cluster",
        {
            "name": "prod-eu",
            "region": "eu-west-1",
            "provider": "aws-eks",
            "environments": ["prod", "dev"],
            "labels": {"team": "ml"},
        },
    ),
    ("add_cluster_environment", {"cluster": "prod-eu", "environment": "qa"}),
    ("remove_cluster_environment", {"cluster": "prod-eu", "environment": "qa"}),
    ("delete_environment", {"name": "qa"}),
    (
        "register_storage_integration",
        {"name": "s3-main", "provider": "s3", "storage_root": "s3://ml-bucket/repos"},
    ),
    (
        "create_ml_repo",
        {"name": "fraud-models", "storage_integration": "s3-main", "description": "fraud models"},
    ),
    ("update_ml_repo", {"name": "fraud-models", "description": "fraud detection models"}),
    ("create_team", {"name": "risk", "members": ["ana@example.com"]}),
    ("add_team_member", {"team": "risk", "user": "bo@example.com"}),
    ("remove_team_member", {"team": "risk", "user": "bo@example.com"}),
    (
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "labels": {"cost-center": "42"},
            "annotations": {"owner": "risk"},
            "ml_repo_access": [{"repo": "fraud-models", "role": "editor"}],
        },
    ),
    ("record_namespace_provisioned", {"workspace": "prod-eu:fraud", "namespace": "fraud"}),
    ("set_workspace_environment", {"workspace": "prod-eu:fraud", "environment": "dev"}),
    ("update_workspace", {"workspace": "prod-eu:fraud", "labels": {"cost-center": "43"}}),
    ("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"}),
    ("remove_application", {"workspace": "prod-eu:fraud", "name": "scorer"}),
    (
        "grant_repo_access",
        {
            "repo": "fraud-models",
            "subject": "team:risk",
            "role": "viewer",
            "reason": "quarterly review",
            "expires_at": "2999-01-01T00:00:00Z",
        },
    ),
    # Access requests (issue 15): Bo asks (three times), an admin approves, denies; Bo cancels.
    ("request_repo_access", {"repo": "fraud-models", "role": "viewer", "reason": "a look"}),
    ("approve_access_request", {"request": LAST_REQUEST, "comment": "ok"}),
    ("request_repo_access", {"repo": "fraud-models", "role": "editor", "reason": "a fix"}),
    ("deny_access_request", {"request": LAST_REQUEST, "reason": "not now"}),
    ("request_repo_access", {"repo": "fraud-models", "role": "editor", "reason": "again"}),
    ("cancel_access_request", {"request": LAST_REQUEST}),
    (
        "break_glass_repo_access",
        {
            "repo": "fraud-models",
            "subject": "user:dee@example.com",
            "role": "editor",
            "reason": "incident",
            "duration": "1h",
        },
    ),
    ("set_repo_access_policy", {"repo": "fraud-models", "approvals": 2, "max_duration": "30d"}),
    (
        "open_access_review",
        {"name": "q4", "scope": {"repos": ["fraud-models"]}, "due": "2999-01-01T00:00:00Z"},
    ),
    # i1: team:risk's grant (items by repo, then subject).
    (
        "decide_access_review_item",
        {"review": "q4", "item": "i1", "decision": "keep", "reason": "still on call"},
    ),
    ("close_access_review", {"review": "q4"}),
    ("revoke_repo_access", {"repo": "fraud-models", "subject": "team:risk", "reason": "done"}),
    (
        "record_storage_provisioned",
        {"repo": "fraud-models", "location": "s3://ml-bucket/repos/fraud-models/"},
    ),
    (
        "record_storage_failed",
        {"repo": "fraud-models", "location": "s3://ml-bucket/repos/x/", "detail": "AccessDenied"},
    ),
    ("delete_workspace", {"workspace": "prod-eu:fraud"}),
    ("record_namespace_failed", {"workspace": "prod-eu:fraud", "namespace": "fraud"}),
    ("record_namespace_deleted", {"workspace": "prod-eu:fraud", "namespace": "fraud"}),
    ("deregister_cluster", {"cluster": "prod-eu"}),
    ("delete_ml_repo", {"name": "fraud-models", "delete_storage": True}),
    (
        "record_storage_deleted",
        {"repo": "fraud-models", "location": "s3://ml-bucket/repos/fraud-models/"},
    ),
    ("remove_storage_integration", {"name": "s3-main"}),
]
# Not every step above can succeed: a failed namespace on a deleting workspace is refused.
EXPECTED_REFUSALS = {"record_namespace_failed": "precondition_failed"}


def test_the_list_covers_every_command() -> None:
    assert sorted({name for name, _ in EVERY_COMMAND}) == sorted(COMMANDS)


async def test_every_command_answers(bus: Bus) -> None:
    last_request = None
    for name, body in EVERY_COMMAND:
        actor = "service:namespaces" if name.startswith("record_") else ACTORS.get(name, ADMIN)
        if body.get("request") == LAST_REQUEST:
            body = {**body, "request": last_request}
        answer = await bus.command(name, body, actor=actor)
        if name == "request_repo_access":
            last_request = answer["fqn"]
        if name in EXPECTED_REFUSALS:
            assert answer["error"]["code"] == EXPECTED_REFUSALS[name], (name, answer)
            continue
        assert answer["ok"], (name, answer)
        assert answer["events"], name
        assert answer["position"] == bus.stored_positions(), name
        assert answer["replayed"] is False


async def test_reply_envelope_is_exactly_as_specified(bus: Bus) -> None:
    answer = await bus.command(
        "create_environment", {"name": "qa"}, command_id="cmd-1", correlation_id="corr-1"
    )
    assert set(answer) == {
        "ok",
        "command_id",
        "fqn",
        "aggregate_id",
        "version",
        "position",
        "events",
        "replayed",
    }
    assert answer["command_id"] == "cmd-1"
    assert answer["fqn"] == "qa"
    assert answer["version"] == 1
    assert answer["events"] == ["environment.created"]
    error = await bus.command("create_environment", {"name": "qa"})
    assert set(error) == {"ok", "error"}
    assert set(error["error"]) == {"code", "message", "details"}


async def test_events_record_actor_command_and_correlation_ids(bus: Bus) -> None:
    await bus.command(
        "create_environment",
        {"name": "qa"},
        command_id="c-7",
        correlation_id="k-7",
        actor="user:ana@example.com",
    )
    last = bus.service.recorder.select_notifications(None, 1000)[-2]  # before its command record
    state = json.loads(last.state)
    assert (state["actor"], state["command_id"], state["correlation_id"]) == (
        "user:ana@example.com",
        "c-7",
        "k-7",
    )


@pytest.mark.parametrize("admins", [frozenset({ADMIN})])
async def test_every_error_code_is_produced(bus: Bus) -> None:
    codes: dict[str, str] = {}

    async def note(name: str, body: dict[str, object] | bytes, **kw: str) -> None:
        answer = await bus.command(name, body, **kw)
        assert not answer["ok"], answer
        codes.setdefault(answer["error"]["code"], name)

    await note("create_environment", {"name": "Not A Label"}, actor=ADMIN)
    await note("update_environment", {"name": "nowhere"}, actor=ADMIN)
    await note("create_environment", {"name": "dev"}, actor=ADMIN)
    await note("update_environment", {"name": "dev", "expected_version": 99}, actor=ADMIN)
    await note(
        "register_cluster",
        {"name": "c-one", "region": "r", "provider": "generic", "environments": ["nope"]},
        actor=ADMIN,
    )
    await note("create_environment", {"name": "qa"}, actor="user:eve@example.com")
    # An internal error: the store loses its table under the running service.
    with sqlite3.connect(bus.store_env["SQLITE_DBNAME"]) as db:
        db.execute("DROP TABLE stored_events")
    await note("create_environment", {"name": "qa"}, actor=ADMIN)
    assert sorted(codes) == sorted(
        [
            "validation_error",
            "not_found",
            "already_exists",
            "conflict",
            "precondition_failed",
            "forbidden",
            "internal",
        ]
    )


@pytest.mark.parametrize("admins", [frozenset({ADMIN})])
async def test_a_refused_command_is_visible_on_the_denied_audit_subject(bus: Bus) -> None:
    denied = await bus.nc.subscribe("tenantry.audit.denied.>")
    answer = await bus.command(
        "create_environment", {"name": "qa"}, actor="user:eve@example.com", command_id="evil-1"
    )
    assert answer["error"]["code"] == "forbidden"
    msg = await denied.next_msg(timeout=5)
    assert msg.subject == "tenantry.audit.denied.create_environment"
    record = json.loads(msg.data)
    assert record["actor"] == "user:eve@example.com"
    assert record["command_id"] == "evil-1"


@pytest.mark.parametrize("admins", [frozenset({ADMIN})])
async def test_a_command_refused_in_an_apply_is_visible_on_the_denied_audit_subject(
    bus: Bus,
) -> None:
    """Creating a team takes a tenant admin: eve's apply is refused at its first command, the
    audit names that command (not `apply`), and nothing is written."""
    denied = await bus.nc.subscribe("tenantry.audit.denied.>")
    before = bus.stored_positions()
    body = {
        "commands": [
            {"command": "create_team", "body": {"name": "eve-team", "members": []}},
            {"command": "deregister_cluster", "body": {"cluster": "prod-eu"}},
        ]
    }
    answer = await bus.command("apply", body, actor="user:eve@example.com", command_id="evil-2")
    assert answer["error"]["code"] == "forbidden"
    assert (answer["error"]["details"]["index"], answer["error"]["details"]["command"]) == (
        0,
        "create_team",
    )
    msg = await denied.next_msg(timeout=5)
    assert msg.subject == "tenantry.audit.denied.create_team"
    record = json.loads(msg.data)
    assert (record["actor"], record["command_id"]) == ("user:eve@example.com", "evil-2")
    assert bus.stored_positions() == before


async def test_eight_concurrent_creates_of_one_name_give_exactly_one_success(bus: Bus) -> None:
    before = bus.stored_positions()
    answers = await asyncio.gather(
        *[
            bus.command(
                "register_cluster",
                {
                    "name": "race",
                    "region": "eu-west-1",
                    "provider": "generic",
                    "environments": ["dev"],
                },
            )
            for _ in range(8)
        ]
    )
    assert sum(a["ok"] for a in answers) == 1
    assert sorted(a["error"]["code"] for a in answers if not a["ok"]) == ["already_exists"] * 7
    # cluster.registered + environment.cluster_linked + the command record: one command's worth.
    assert bus.stored_positions() - before == 3


async def test_the_same_command_id_twice_writes_once(bus: Bus) -> None:
    body = {"name": "qa", "is_production": True}
    first = await bus.command("create_environment", body, command_id="once")
    written = bus.stored_positions()
    second = await bus.command("create_environment", body, command_id="once")
    assert bus.stored_positions() == written
    assert second["replayed"] is True
    assert {**first, "replayed": True} == second


async def test_concurrent_retries_of_one_command_id_write_once(bus: Bus) -> None:
    before = bus.stored_positions()
    answers = await asyncio.gather(
        *[
            bus.command("create_environment", {"name": "qa"}, command_id="retry-storm")
            for _ in range(8)
        ]
    )
    assert all(a["ok"] for a in answers), answers
    assert len({a["position"] for a in answers}) == 1
    assert sum(not a["replayed"] for a in answers) == 1
    assert bus.stored_positions() - before == 2


BAD_INPUTS: list[tuple[str, bytes, dict[str, str] | None]] = [
    ("create_environment", b"not json", None),
    ("create_environment", b"\xff\xfe\xfd", None),
    ("create_environment", b'"a string"', None),
    ("create_environment", b"[1, 2]", None),
    ("create_environment", b'{"name": 42}', None),
    ("create_environment", b'{"name": "qa", "is_production": "yes"}', None),
    ("create_environment", b'{"name": "qa", "unknown": 1}', None),
    ("create_environment", json.dumps({"name": "a" * 100_000}).encode(), None),
    ("create_environment", json.dumps({"name": "q" * 64}).encode(), None),
    ("create_environment", b'{"name": "qa", "color": "' + b"[" * 5000 + b'"}', None),
    ("register_cluster", b'{"labels": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", None),
    (
        "create_workspace",
        b'{"cluster": "c-1", "name": "ws1", "environment": "dev", "labels": {"bad key!": "x"}}',
        None,
    ),
    ("no_such_command", b"{}", None),
    # Tenantry's own commands (the scheduler's) are not on the bus, whoever claims to send them.
    (
        "expire_repo_access",
        b'{"repo": "fraud-models", "subject": "user:bo@example.com", '
        b'"expires_at": "2020-01-01T00:00:00Z"}',
        {"Tenantry-Actor": "service:tenantry"},
    ),
    (
        "grant_repo_access",
        b'{"repo": "r1x", "subject": "user:a@b.co", "role": "viewer", '
        b'"duration": "12h", "expires_at": "2999-01-01T00:00:00Z"}',
        None,
    ),
    (
        "grant_repo_access",
        b'{"repo": "r1x", "subject": "user:a@b.co", "role": "viewer", '
        b'"expires_at": "2999-01-01T00:00:00"}',
        None,
    ),
    (
        "grant_repo_access",
        b'{"repo": "r1x", "subject": "user:a@b.co", "role": "viewer", "duration": "12 h"}',
        None,
    ),
    ("set_repo_access_policy", b'{"repo": "r1x", "approvals": 4}', None),
    ("set_repo_access_policy", b'{"repo": "r1x", "max_duration": "0d"}', None),
    ("create_environment", b'{"name": "qa"}', {"Tenantry-Actor": "root"}),
    ("create_environment", b'{"name": "qa"}', {"Tenantry-Command-Id": "x" * 500}),
    ("create_environment", b'{"name": "qa\\u0000"}', None),
]


async def test_bad_input_is_refused_writes_nothing_and_the_service_stays_up(bus: Bus) -> None:
    before = bus.stored_positions()
    for name, data, headers in BAD_INPUTS:
        reply = await bus.nc.request(f"tenantry.cmd.{name}", data, timeout=10, headers=headers)
        answer = json.loads(reply.data)
        assert answer["ok"] is False, (name, data[:60])
        assert answer["error"]["code"] == "validation_error", (name, data[:60], answer)
        assert len(reply.data) < 16_000  # errors never echo a huge input back
    assert bus.stored_positions() == before
    still_up = await bus.command("create_environment", {"name": "qa"})
    assert still_up["ok"]


async def test_two_command_services_share_the_load_in_a_queue_group(bus: Bus, nats_server) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.conftest import start_bus

    service_nc, endpoint, client = await start_bus(nats_server, bus.service)
    try:
        answers = await asyncio.gather(
            *[bus.command("create_team", {"name": f"team-{i}"}) for i in range(40)]
        )
        assert all(a["ok"] for a in answers)
        # Each request was answered once: 40 teams, 40 commands, nothing doubled.
        assert bus.stored_positions() == 4 + 80
    finally:
        await client.close()
        await endpoint.stop()
        await service_nc.drain()


async def test_a_started_command_service_is_known_to_the_server(bus: Bus, nats_server) -> None:  # type: ignore[no-untyped-def]
    """`start` returns once the server has the subscription (flushed), as the query service's
    does: a request another connection sends next finds a responder. Without it, one did not
    (`NoRespondersError` in a grant-expiry test under load)."""
    import nats

    from tenantry.server.command_endpoint import CommandEndpoint

    service_nc = await nats.connect(nats_server.url)
    endpoint = CommandEndpoint(service_nc, bus.service, queue_group="started-check")
    try:
        await endpoint.start()
        assert service_nc.pending_data_size == 0  # the SUB is on the server, not in a buffer
    finally:
        await endpoint.stop()
        await service_nc.drain()
