"""`service:` actors are Tenantry's own workers: automation that sends one is told, in the
refusal, to act as a `user:` instead — with authorization on or off."""

from __future__ import annotations

import pytest

from domain.authorization import Authorization
from domain.errors import Forbidden

from .support import make_tenancy


@pytest.mark.parametrize("admins", [None, frozenset({"user:ana@example.com"})])
def test_a_service_actor_is_told_that_automation_acts_as_a_user(
    admins: frozenset[str] | None,
) -> None:
    tenancy = make_tenancy(authorization=Authorization(admins))
    refused = tenancy.refuse(
        "create_team", {"name": "ci"}, Forbidden, "forbidden", actor="service:ci"
    )
    message = refused.message
    assert "reserved for Tenantry's own workers" in message, message
    assert "act as user:<email>" in message, message
