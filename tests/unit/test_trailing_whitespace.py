"""No validated string takes a trailing newline (or other whitespace): Python's `re.match`
with `$` accepts `value\\n`, which made `user:eve@example.com\\n` a second subject that looks
like the first. Property-tested over every shaped string of every command (names, references,
subjects, emails, label keys and values, annotation keys, storage roots, regions, colours,
roles): free text (descriptions, reasons, details, locations, annotation values) takes any
character but NUL, and is left out."""

from __future__ import annotations

import copy
import types
import typing
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, TypeAdapter, ValidationError

from domain.commands import COMMANDS
from domain.names import Actor, Subject, WorkspaceFqn, is_valid_actor
from projections.queries import QUERIES
from tenantry.server.wire import is_valid_id

from .bodies import VALID_BODIES

# Free text: anything but NUL is data, not a name.
FREE_TEXT = {"description", "reason", "detail", "location"}


def _kinds(annotation: Any) -> set[Any]:
    """The types a field's annotation allows, through Annotated, unions and None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _kinds(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in args if a is not type(None)))
    return {annotation}


def _no_text(model: type[BaseModel]) -> set[str]:
    """Fields that hold no string at all (flags, versions; times are parsed, not names)."""
    plain = {bool, int, datetime, AwareDatetime}
    return {n for n, info in model.model_fields.items() if _kinds(info.annotation) <= plain}


# A body of every command with every optional shaped field present, so that each is tried.
FULL_BODIES: dict[str, dict[str, Any]] = {
    **VALID_BODIES,
    "create_environment": {"name": "qa", "optimize_for": "cost", "color": "#aabbcc"},
    "update_environment": {"name": "dev", "optimize_for": "availability", "color": "#00ff00"},
    "register_cluster": {
        "name": "prod-us",
        "region": "eu-west-1",
        "provider": "aws-eks",
        "environments": ["dev"],
        "labels": {"example.com/team": "risk"},
    },
    "create_workspace": {
        "cluster": "prod-eu",
        "name": "churn",
        "environment": "dev",
        "labels": {"example.com/team": "risk"},
        "annotations": {"example.com/note": "free text\n"},
        "ml_repo_access": [{"repo": "fraud-models", "role": "viewer", "managed_by": "apply"}],
    },
    "update_workspace": {
        "workspace": "prod-eu:fraud",
        "labels": {"team": "risk"},
        "annotations": {"example.com/note": "n"},
    },
    "register_storage_integration": {
        "name": "s3-new",
        "provider": "s3",
        "storage_root": "s3://ml-bucket/repos",
        "region": "eu-west-1",
    },
    "update_ml_repo": {"name": "fraud-models", "description": "d", "storage_integration": "s3"},
    "grant_repo_access": {
        "repo": "fraud-models",
        "subject": "user:bob@example.com",
        "role": "editor",
        "reason": "r",
        "managed_by": "apply",
        "duration": "12h",
    },
    "revoke_repo_access": {"repo": "fraud-models", "subject": "team:risk", "reason": "r"},
}
FULL_BODIES["register_storage_integration_local"] = {
    "name": "files",
    "provider": "local",
    "storage_root": "file:///srv/tenantry",
    "region": "local",
}
# Whitespace a reader does not see at the end of a line.
TRAILING = ["\n", "\r\n", "\r", " ", "\t", "\x0b", "\x0c", "\x85", "\u00a0", "\u2028", "\u3000"]

Slot = tuple[Any, ...]


def _model(name: str) -> type[BaseModel]:
    return COMMANDS[name.removesuffix("_local")]


def _slots(body: dict[str, Any], path: Slot = ()) -> list[Slot]:
    """Paths to every shaped string in `body`: fields, list items, label keys and values,
    annotation keys (("key", k) / ("value", k) address a mapping's key or value)."""
    slots: list[Slot] = []
    for field, value in body.items():
        here = (*path, field)
        if isinstance(value, str) and field not in FREE_TEXT:
            slots.append(here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    slots.append((*here, index))
                elif isinstance(item, dict):
                    slots.extend(_slots(item, (*here, index)))
        elif isinstance(value, dict):
            for key in value:
                slots.append((*here, ("key", key)))
                if field == "labels":
                    slots.append((*here, ("value", key)))
    return slots


ALL_SLOTS = [(name, slot) for name, body in FULL_BODIES.items() for slot in _slots(body)]


def _changed(body: dict[str, Any], slot: Slot, change: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = slot
    holder: Any = body
    for part in parents:
        holder = holder[part]
    if isinstance(last, tuple):
        which, key = last
        if which == "key":
            holder[change(key)] = holder.pop(key)
        else:
            holder[key] = change(holder[key])
    else:
        holder[last] = change(holder[last])
    return body


def test_the_full_bodies_are_valid_and_name_every_string_field() -> None:
    for name, body in FULL_BODIES.items():
        model = _model(name)
        model.model_validate(body)
        missing = set(model.model_fields) - _no_text(model) - FREE_TEXT - set(body)
        assert not missing, (name, missing)
    assert {_model(name) for name in FULL_BODIES} == set(COMMANDS.values())
    assert len(ALL_SLOTS) > 60


@given(
    target=st.sampled_from(ALL_SLOTS),
    suffix=st.lists(st.sampled_from(TRAILING), min_size=1, max_size=3).map("".join),
    leading=st.booleans(),
)
def test_no_shaped_string_of_any_command_takes_surrounding_whitespace(
    target: tuple[str, Slot], suffix: str, leading: bool
) -> None:
    name, slot = target
    body = _changed(FULL_BODIES[name], slot, lambda s: suffix + s if leading else s + suffix)
    with pytest.raises(ValidationError):
        _model(name).model_validate(body)


@pytest.mark.parametrize(("name", "slot"), ALL_SLOTS, ids=[f"{n}:{s}" for n, s in ALL_SLOTS])
def test_a_trailing_newline_is_refused_in_every_shaped_string(name: str, slot: Slot) -> None:
    body = _changed(FULL_BODIES[name], slot, lambda s: s + "\n")
    with pytest.raises(ValidationError):
        _model(name).model_validate(body)


@pytest.mark.parametrize(
    "value",
    [
        "user:eve@example.com\n",
        "team:risk\n",
        "workspace:prod-eu:fraud\n",
    ],
)
def test_a_subject_with_a_trailing_newline_is_not_a_second_subject(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Subject).validate_python(value)


def test_actors_fqns_and_command_ids_take_no_trailing_newline() -> None:
    assert not is_valid_actor("user:eve@example.com\n")
    assert not is_valid_actor("service:namespaces\n")
    with pytest.raises(ValidationError):
        TypeAdapter(Actor).validate_python("user:eve@example.com\n")
    with pytest.raises(ValidationError):
        TypeAdapter(WorkspaceFqn).validate_python("prod-eu:fraud\n")
    assert not is_valid_id("retry-1\n")


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("subject_access", {"subject": "app:prod-eu:fraud:trainer\n"}),
        ("subject_access", {"subject": "user:eve@example.com\n"}),
        ("check_access", {"subject": "team:risk\n", "repo": "fraud-models", "action": "read"}),
        ("get_workspace", {"fqn": "prod-eu:fraud\n"}),
    ],
)
def test_query_subjects_take_no_trailing_newline(query: str, params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        QUERIES[query].params.model_validate(params)
