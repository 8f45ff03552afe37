"""Group commit is serializable: what `TenancyService.handle_batch` writes for a batch of
concurrent commands is exactly what handling its successful commands one by one, in the order
of their positions, writes (the same events, with the same data, in the same order, and each of
them succeeding). Commands are drawn from small pools of names so that batches are full of
commands that read or write the same aggregates (run alone after the group) and of refusals.

Derandomized, like the other property tests; `TENANTRY_PROPERTY_SEED=<n>` explores others."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService
from tenantry.protocol import CommandReply

ADMIN = "user:ana@example.com"
REPOS = ("fraud-models", "churn-data")
TEAMS = ("risk", "ops")
USERS = ("bo@example.com", "cy@example.com")
INTEGRATIONS = ("s3-main", "files")

Item = tuple[str, dict[str, Any]]

_commands: st.SearchStrategy[Item] = st.one_of(
    st.builds(
        lambda name: (
            "register_storage_integration",
            {"name": name, "provider": "s3", "storage_root": "s3://ml-bucket/repos"},
        ),
        st.sampled_from(INTEGRATIONS),
    ),
    st.builds(
        lambda name: ("remove_storage_integration", {"name": name}),
        st.sampled_from(INTEGRATIONS),
    ),
    st.builds(
        lambda name, integration: (
            "create_ml_repo",
            {"name": name, "storage_integration": integration},
        ),
        st.sampled_from(REPOS),
        st.sampled_from(INTEGRATIONS),
    ),
    st.builds(
        lambda name: ("delete_ml_repo", {"name": name}),
        st.sampled_from(REPOS),
    ),
    st.builds(
        lambda repo, subject, role: (
            "grant_repo_access",
            {"repo": repo, "subject": subject, "role": role},
        ),
        st.sampled_from(REPOS),
        st.sampled_from([f"team:{t}" for t in TEAMS] + [f"user:{u}" for u in USERS]),
        st.sampled_from(("viewer", "editor")),
    ),
    st.builds(
        lambda repo, subject: ("revoke_repo_access", {"repo": repo, "subject": subject}),
        st.sampled_from(REPOS),
        st.sampled_from([f"team:{t}" for t in TEAMS] + [f"user:{u}" for u in USERS]),
    ),
    st.builds(
        lambda name, members: ("create_team", {"name": name, "members": members}),
        st.sampled_from(TEAMS),
        st.lists(st.sampled_from(USERS), max_size=2, unique=True),
    ),
    st.builds(
        lambda team, user: ("add_team_member", {"team": team, "user": user}),
        st.sampled_from(TEAMS),
        st.sampled_from(USERS),
    ),
    st.builds(
        lambda team, user: ("remove_team_member", {"team": team, "user": user}),
        st.sampled_from(TEAMS),
        st.sampled_from(USERS),
    ),
)


def _service() -> TenancyService:
    service = TenancyService({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    service.seed_default_environments()
    return service


def _log(service: TenancyService) -> list[tuple[str, str, int, dict[str, Any]]]:
    """Every stored event, without the time it was stored at (nor the seeding's correlation
    id, a new one at each seeding)."""
    rows = []
    for n in service.recorder.select_notifications(None, 100_000):
        state = json.loads(n.state)
        state.pop("timestamp", None)
        if str(state.get("command_id", "")).startswith("seed:"):
            state.pop("correlation_id", None)
        rows.append((n.topic, str(n.originator_id), n.originator_version, state))
    return rows


_SEED = os.environ.get("TENANTRY_PROPERTY_SEED")


@settings(
    max_examples=60,
    deadline=None,
    derandomize=_SEED is None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.lists(_commands, min_size=1, max_size=8), min_size=1, max_size=5))
@seed(int(_SEED or 0))
def test_a_batch_writes_what_its_successes_write_one_by_one(batches: list[list[Item]]) -> None:
    grouped = _service()
    succeeded: list[tuple[int, str, dict[str, Any], CommandContext]] = []
    for batch in batches:
        items = [(COMMANDS[name].model_validate(body), _context()) for name, body in batch]
        results = grouped.handle_batch(items)
        assert len(results) == len(items)
        for (name, body), (_, context), result in zip(batch, items, results, strict=True):
            if isinstance(result, CommandReply):
                succeeded.append((result.position, name, body, context))
    positions = [position for position, *_ in succeeded]
    assert len(set(positions)) == len(positions)  # each success its own place in the log

    one_by_one = _service()
    for position, name, body, context in sorted(succeeded, key=lambda s: s[0]):
        result = one_by_one.handle(COMMANDS[name].model_validate(body), context)
        assert result.position == position, (name, body)
    assert _log(one_by_one) == _log(grouped)


def _context() -> CommandContext:
    command_id = str(uuid.uuid4())
    return CommandContext(ADMIN, command_id, command_id)
