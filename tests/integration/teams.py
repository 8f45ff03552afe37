"""A team created straight through the command application (no bus): the smallest commit."""

from __future__ import annotations

import uuid

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService


def create_team(service: TenancyService, name: str) -> None:
    context = CommandContext("user:ana@example.com", str(uuid.uuid4()), "tests")
    body = {"name": name, "members": ["ana@example.com"]}
    service.handle(COMMANDS["create_team"].model_validate(body), context)
