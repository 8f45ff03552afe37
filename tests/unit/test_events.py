"""What every stored event carries: who asked, under which ids; and the order it is stored in."""

from __future__ import annotations

import json
import math
from typing import Any

from domain.mapper import JsonTranscoder

from .support import ADMIN, Tenancy


def _world(t: Tenancy) -> int:
    t.cluster("prod-eu", ("prod",))
    t.integration()
    t.repo("fraud-models")
    return t.position()


def test_every_event_of_a_command_records_its_actor_command_id_and_correlation_id(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    before = _world(t)

    t.run(
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "ml_repo_access": [{"repo": "fraud-models", "role": "editor"}],
        },
        actor="user:ops@example.com",
        command_id="cmd-42",
        correlation_id="corr-7",
    )

    events = t.events(before)
    assert len(events) == 5
    assert {(e["actor"], e["command_id"], e["correlation_id"]) for e in events} == {
        ("user:ops@example.com", "cmd-42", "corr-7")
    }


def test_a_workers_report_records_the_worker_as_actor(tenancy: Tenancy) -> None:
    _world(tenancy)
    tenancy.workspace("prod-eu", "fraud", "prod")
    before = tenancy.position()

    tenancy.run(
        "record_namespace_provisioned",
        {"workspace": "prod-eu:fraud", "namespace": "fraud", "detail": "applied"},
        actor="service:namespaces",
        command_id="ns-1",
        correlation_id="corr-ws",
    )

    [provisioned] = [e for e in tenancy.events(before) if e["type"] != "command_record.handled"]
    assert (provisioned["type"], provisioned["actor"], provisioned["detail"]) == (
        "workspace.namespace_provisioned",
        "service:namespaces",
        "applied",
    )
    assert (provisioned["command_id"], provisioned["correlation_id"]) == ("ns-1", "corr-ws")


def test_a_commands_events_are_stored_in_the_order_they_happened_record_last(
    tenancy_on_each_store: Tenancy,
) -> None:
    t = tenancy_on_each_store
    before = _world(t)

    result = t.run(
        "create_workspace",
        {
            "cluster": "prod-eu",
            "name": "fraud",
            "environment": "prod",
            "ml_repo_access": [{"repo": "fraud-models", "role": "viewer"}],
        },
    )

    assert t.types(before) == result.events
    assert result.events == [
        "workspace.created",
        "cluster.workspace_attached",
        "workspace.repo_linked",
        "ml_repo.access_granted",
    ]
    events = t.events(before)
    assert events[-1]["type"] == "command_record.handled"
    assert result.position == events[-1]["position"] == t.position()


def test_the_position_is_that_of_the_last_event_written(tenancy_on_each_store: Tenancy) -> None:
    t = tenancy_on_each_store
    first = t.run("create_environment", {"name": "qa"})
    second = t.run("create_environment", {"name": "uat"}, actor=ADMIN)

    assert first.position < second.position == t.position()


def test_the_transcoder_writes_and_reads_what_the_json_module_does() -> None:
    # Every kind of value a stored event holds, the json module's corner cases among them.
    values: list[Any] = [
        {"name": "risk", "members": ["ana@example.com"], "version": 3, "live": True, "x": None},
        {"text": '\x01\x1f\x7f\b\f\n\r\t"\\/ \u2028 é 😀 中'},
        {"nested": [{"a": [1, -1, 0]}, [], {}], "big": 2**63 - 1, "small": -(2**63)},
        {"over_64_bits": 2**64, "minus": -(2**70)},
    ]
    transcoder = JsonTranscoder()
    for value in values:
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        assert transcoder.encode(value) == expected
        assert transcoder.decode(expected) == json.loads(expected)
    assert math.isnan(transcoder.decode(b'{"x":NaN}')["x"])
