"""`tenantry.Client` offers `client.<name>(**fields)` for every command and query, built from
the model: its keyword arguments are the model's fields (required where the model requires
them), so a field added to a command or a query is there without anyone copying it; and each
query's answer is read into the one result model the query declares."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import tenantry
from domain.commands import COMMANDS
from projections.queries import QUERIES
from projections.query_params import Paged
from tenantry.sdk.client import Client

_OPTIONS = {"options"}


def _client() -> Client:
    return Client(None)  # type: ignore[arg-type]  # never connects: only its methods are read


def _arguments(name: str) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(getattr(_client(), name)).parameters
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in parameters.items() if n not in _OPTIONS
    ), name
    return {n: p for n, p in parameters.items() if n not in _OPTIONS}


def _check(name: str, arguments: dict[str, inspect.Parameter], fields: dict[str, Any]) -> None:
    assert set(arguments) == set(fields), name
    for field_name, info in fields.items():
        required = arguments[field_name].default is inspect.Parameter.empty
        assert required == info.is_required(), (name, field_name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_method_per_command_with_the_models_fields(name: str) -> None:
    _check(name, _arguments(name), dict(COMMANDS[name].model_fields))


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_a_method_per_query_with_the_models_parameters(name: str) -> None:
    params = QUERIES[name].params
    # A list's `limit` and `after` are the client's business: its methods page by themselves.
    paging = ("limit", "after") if issubclass(params, Paged) else ()
    fields = {
        f: info
        for f, info in params.model_fields.items()
        if f not in ("min_position", "min_position_timeout", *paging)
    }
    _check(name, _arguments(name), fields)


def test_a_name_that_is_neither_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no command or query 'create_wrokspace'"):
        _ = _client().create_wrokspace


def test_the_client_is_exported_from_the_package() -> None:
    assert tenantry.Client is Client
    assert issubclass(tenantry.TenantryError, Exception)
