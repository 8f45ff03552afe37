"""A command's reply is written with orjson: the bytes the json module writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tenantry.protocol import ApplyReply, CommandReply
from tenantry.server import wire


def _replies() -> list[dict[str, Any]]:
    command = CommandReply(
        command_id="cmd-1",
        fqn="prod-eu:ws-é😀",
        aggregate_id="9c1d6b3e-1f0a-5d4a-9e57-7c2b1f0a9d13",
        version=3,
        position=2**63 - 1,
        events=["team.created", 'odd "quoted" \\ \x01 \u2028'],
        replayed=False,
    )
    applied = ApplyReply(
        apply_id="apply-1",
        position=None,
        commands=[
            {
                "command": "create_team",
                "fqn": "risk",
                "aggregate_id": "a",
                "version": 1,
                "events": ["team.created"],
            }
        ],
        dry_run=True,
        replayed=False,
    )
    return [command.model_dump(), applied.model_dump(), {"big": 2**64}]


@pytest.mark.parametrize("payload", _replies())
def test_a_command_reply_is_the_bytes_of_ok_reply(payload: dict[str, Any]) -> None:
    assert wire.command_ok_reply(payload) == wire.ok_reply(payload)


def test_what_the_json_module_refuses_it_refuses() -> None:
    @dataclass
    class Odd:
        x: int

    for odd in (datetime.now(UTC), Odd(1)):
        with pytest.raises(TypeError):
            wire.command_ok_reply({"odd": odd})
