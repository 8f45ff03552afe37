"""`tenantry.Client` has one typed method per command and per query, whose keyword arguments
are the model's fields (required where the model requires them): a field added to a command or
a query without its method fails here."""

from __future__ import annotations

import inspect

import pytest

import tenantry
from domain.commands import COMMANDS
from projections.queries import QUERIES, Paged
from tenantry.sdk.client import Client

_OPTIONS = {"options", "self"}
# Python names for wire fields that are keywords.
_WIRE = {"from_": "from"}
# Queries of DESIGN §5, whether or not projections.queries answers them yet.
_DESIGN_QUERIES = {"access_report", "access_changes"}


def _arguments(name: str) -> dict[str, inspect.Parameter]:
    method = getattr(Client, name, None)
    assert method is not None, f"Client has no method {name}"
    parameters = inspect.signature(method).parameters
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in parameters.items() if n not in _OPTIONS
    ), name
    return {_WIRE.get(n, n): p for n, p in parameters.items() if n not in _OPTIONS}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_method_per_command_with_the_models_fields(name: str) -> None:
    model = COMMANDS[name]
    arguments = _arguments(name)
    assert set(arguments) == set(model.model_fields), name
    for field_name, info in model.model_fields.items():
        required = arguments[field_name].default is inspect.Parameter.empty
        assert required == info.is_required(), (name, field_name)


@pytest.mark.parametrize("name", sorted(set(QUERIES) | _DESIGN_QUERIES))
def test_a_method_per_query_with_the_models_parameters(name: str) -> None:
    arguments = _arguments(name)
    if name not in QUERIES:
        return  # its parameters are checked by the server (and the integration tests)
    # A list's `limit` and `after` are the client's business: its methods page by themselves.
    paging = ("limit", "after") if issubclass(QUERIES[name].params, Paged) else ()
    fields = {
        info.alias or f: info
        for f, info in QUERIES[name].params.model_fields.items()
        if f not in ("min_position", "min_position_timeout", *paging)
    }
    assert set(arguments) == set(fields), name
    for field_name, info in fields.items():
        required = arguments[field_name].default is inspect.Parameter.empty
        assert required == info.is_required(), (name, field_name)


def test_the_client_is_exported_from_the_package() -> None:
    assert tenantry.Client is Client
    assert issubclass(tenantry.TenantryError, Exception)
