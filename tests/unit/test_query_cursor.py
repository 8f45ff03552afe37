"""The `after` cursor of a paged query is judged by the query's model, the one place: what the
model accepts the query answers, what the query could not place the model refuses (the client
validates with the same model, so the two cannot disagree)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from projections.queries import QUERIES
from projections.query_params import Paged

PAGED = {name: q.params for name, q in QUERIES.items() if issubclass(q.params, Paged)}
# What each paged query needs besides `limit` and `after`.
REQUIRED: dict[str, dict[str, str]] = {
    "repo_access": {"repo": "fraud-models"},
    "subject_access": {"subject": "user:ana@example.com"},
    "access_report": {"as_of": "2026-01-01T00:00:00Z"},
    "access_changes": {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
}
NOT_A_PLACE = [
    "00",  # not JSON (found by tests/integration/test_fuzz.py)
    "not json",
    '{"name": "x"}',
    '"x"',
    "[true]",
    "[[1]]",
    "[null]",
    "[1.5]",
    "[]",
]


@pytest.mark.parametrize("after", NOT_A_PLACE)
@pytest.mark.parametrize("name", sorted(PAGED))
def test_a_cursor_that_is_no_place_is_refused_by_the_model(name: str, after: str) -> None:
    with pytest.raises(ValidationError, match="after"):
        _validate(name, after)


def _validate(name: str, after: str, params: type[Paged] | None = None) -> Paged:
    body = {**REQUIRED.get(name, {}), "limit": 1, "after": after}
    return (params or PAGED[name]).model_validate_json(json.dumps(body))


def _next_of(params: type[Paged], shift: int = 0) -> str:
    """A `next` as the query gives it: the values of its order's fields, as a JSON array."""
    order = params.order[shift:] + params.order[:shift]
    return json.dumps([1 if kind is int else "x" for _, kind in order])


@pytest.mark.parametrize("name", sorted(PAGED))
def test_the_next_a_query_gives_is_accepted(name: str) -> None:
    params = _validate(name, _next_of(PAGED[name]))
    assert params.place() == tuple(1 if kind is int else "x" for _, kind in PAGED[name].order)


def test_a_cursor_of_another_query_is_refused_by_the_model() -> None:
    changes, repos = "access_changes", "list_ml_repos"
    for name, other in [(repos, changes), (changes, repos), (changes, changes)]:
        shift = 1 if name == other else 0  # its own fields in another order
        with pytest.raises(ValidationError, match="after"):
            _validate(name, _next_of(PAGED[other], shift))
