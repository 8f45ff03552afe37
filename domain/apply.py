"""An apply: many commands decided in turn in one session and saved in one transaction, or
refused whole. Its answer, what makes its id replay, and how a refusal names its command."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from domain.commands import Command
from domain.errors import DomainError
from tenantry.protocol import AppliedCommand, ApplyReply

__all__ = ["AppliedCommand", "ApplyReply", "applied_command", "apply_fingerprint", "refused_at"]


def applied_command(fields: dict[str, Any]) -> AppliedCommand:
    """From its fields as an event stores them."""
    return AppliedCommand.model_validate(fields)


def apply_fingerprint(commands: Sequence[Command], actor: str) -> str:
    """What must match for an apply id to be replayed: the same commands, in the same order,
    from the same actor."""
    digest = hashlib.sha256(f"apply\n{actor}\n".encode())
    for command in commands:
        digest.update(f"{command.wire_name}\n{command.model_dump_json()}\n".encode())
    return digest.hexdigest()


def refused_at(refusal: DomainError, index: int, command: Command) -> DomainError:
    """The refusal of one command of an apply, as the whole apply's: same code, and where."""
    return type(refusal)(
        f"command {index} ({command.wire_name}) was refused, so the apply was: {refusal.message}",
        **{**refusal.details, "index": index, "command": command.wire_name},
    )
