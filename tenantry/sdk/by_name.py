"""`client.<name>(**fields)`: a command or query of `tenantry.Client` asked by name, built from
its model (the model's fields are the keyword arguments), so no field list is copied by hand."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from projections.query_params import PARAMS
from tenantry.protocol import CommandReply, InvalidRequest
from tenantry.server import wire

if TYPE_CHECKING:
    from tenantry.sdk.client import Client

M = TypeVar("M", bound=BaseModel)


def by_name(client: Client, name: str) -> Callable[..., Awaitable[Any]]:
    query = PARAMS.get(name)
    if query is not None:
        fields = query.model_fields

        async def ask(**arguments: Any) -> Any:
            params = {k: v for k, v in arguments.items() if k in fields}
            options = {k: v for k, v in arguments.items() if k not in params}
            wire_names = {f: info.alias or f for f, info in fields.items()}
            body = {wire_names.get(k, k): v for k, v in params.items()}
            return await client.query(valid(query, name, "query", body), **options)

        paging = ("limit", "after") if query.pages else ()  # a list comes whole
        return _signed(ask, name, fields, skip=("min_position", "min_position_timeout", *paging))
    from domain.commands import COMMANDS

    model = COMMANDS.get(name)
    if model is None:
        raise AttributeError(f"Client has no command or query {name!r}")

    async def send(**arguments: Any) -> CommandReply:
        options = {k: arguments.pop(k) for k in ("command_id", "correlation_id") if k in arguments}
        return await client.command(name, arguments, **options)

    return _signed(send, name, model.model_fields, skip=())


def _signed(
    call: Callable[..., Awaitable[Any]], name: str, fields: Mapping[str, Any], skip: tuple[str, ...]
) -> Callable[..., Awaitable[Any]]:
    """`call` with the model's fields as its signature (keyword-only; required where the model
    requires them), for help(), editors and tests."""
    parameters = [
        inspect.Parameter(
            field,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if info.is_required() else None,
        )
        for field, info in fields.items()
        if field not in skip
    ]
    parameters.append(inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD))
    call.__name__ = call.__qualname__ = name
    call.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return call


def valid(model: type[M], name: str, kind: str, body: Mapping[str, Any]) -> M:
    try:
        return model.model_validate_json(as_json(body))
    except ValidationError as exc:
        raise InvalidRequest(
            f"the {name} {kind} is not valid", {"errors": wire.validation_errors(exc)}
        ) from exc


def as_json(value: Any) -> str:
    """JSON of a body: None fields left out (the server's default applies), models and times
    as on the wire."""
    if isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if v is not None}
    return json.dumps(value, default=_wire_value, ensure_ascii=False)


def _wire_value(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be sent on the bus")
