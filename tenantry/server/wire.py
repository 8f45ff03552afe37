"""Replies and refusals as bytes on the bus (DESIGN §3), built from tenantry.protocol's
headers and error classes: what the server's endpoints share."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tenantry.protocol import (
    SERVICE_ERROR_CODE_HEADER,
    SERVICE_ERROR_HEADER,
    InternalError,
    InvalidRequest,
    TenantryError,
)

if TYPE_CHECKING:
    from domain.commands import Command

MAX_BODY_BYTES = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def is_valid_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def require_body_size(data: bytes, what: str = "the body", hint: str = "") -> None:
    """Refuse a body over MAX_BODY_BYTES before parsing it."""
    if len(data) > MAX_BODY_BYTES:
        raise InvalidRequest(
            f"{what} is {len(data)} bytes; at most {MAX_BODY_BYTES} are accepted{hint}",
            bytes=len(data),
            max_bytes=MAX_BODY_BYTES,
        )


# --- apply: many commands in one request (docs/design.md) ---------------------------------

_APPLY_TOO_BIG = (
    ": an apply is one request, decided and saved all or nothing, so it is not split; "
    "apply the manifests in smaller parts"
)


class _ApplyItem(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    command: Annotated[str, StringConstraints(max_length=64)]
    body: dict[str, Any] = Field(default_factory=dict)


class _ApplyRequest(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    commands: list[_ApplyItem]
    dry_run: bool = False


def apply_body(commands: Sequence[Command], dry_run: bool) -> bytes:
    """The body of an apply request; refused here as on the server when over the limit."""
    body = dumps(
        {
            "commands": [
                {"command": c.wire_name, "body": c.model_dump(mode="json", exclude_none=True)}
                for c in commands
            ],
            "dry_run": dry_run,
        }
    )
    require_body_size(body, "the apply", _APPLY_TOO_BIG)
    return body


def read_apply(data: bytes) -> tuple[list[Command], bool]:
    """The commands of an apply request, each validated as if sent alone, and `dry_run`."""
    from domain.commands import COMMANDS

    require_body_size(data, "the apply", _APPLY_TOO_BIG)
    request = _ApplyRequest.model_validate_json(data or b"{}")
    commands: list[Command] = []
    for index, item in enumerate(request.commands):
        model = COMMANDS.get(item.command)
        if model is None:
            raise InvalidRequest(
                f"command {index}: unknown command {item.command!r}",
                index=index,
                commands=sorted(COMMANDS),
            )
        try:
            # Through JSON, as a command alone is read: strict models take JSON's forms.
            commands.append(model.model_validate_json(dumps(item.body)))
        except ValidationError as exc:
            raise InvalidRequest(
                f"command {index} ({item.command}) is not valid",
                index=index,
                command=item.command,
                errors=validation_errors(exc),
            ) from exc
    return commands, request.dry_run


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def ok_reply(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return dumps({"ok": True, **payload}), {}


# orjson, told to refuse what the json module refuses too (dates, dataclasses, subclasses of
# the JSON types), so that those go through `dumps` and fail as they always did.
_ORJSON_PLAIN = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def command_ok_reply(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """`ok_reply` for a command's or an apply's reply (text, integers, booleans, null and lists
    of them): orjson writes the bytes `dumps` does for those, several times faster. Anything it
    refuses (an integer over 64 bits, …) goes through `dumps`."""
    body = {"ok": True, **payload}
    try:
        return orjson.dumps(body, option=_ORJSON_PLAIN), {}
    except orjson.JSONEncodeError:
        return dumps(body), {}


def error_reply(error: TenantryError) -> tuple[bytes, dict[str, str]]:
    body = dumps(
        {
            "ok": False,
            "error": {"code": error.code, "message": error.message, "details": error.details},
        }
    )
    # Header values are single lines of limited size.
    header_message = " ".join(error.message.split())[:512]
    return body, {SERVICE_ERROR_HEADER: header_message, SERVICE_ERROR_CODE_HEADER: error.status}


def error_of(exc: Exception) -> TenantryError:
    """The refusal a failed request is answered with: a TenantryError as it is, a model's
    validation as `validation_error`, anything else as `internal` (its text kept private)."""
    if isinstance(exc, TenantryError):
        return exc
    if isinstance(exc, ValidationError):
        return InvalidRequest("the request is not valid", errors=validation_errors(exc))
    return InternalError("internal error; the request was not applied")


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without echoing the (possibly huge or hostile) input back."""
    return [
        {"loc": [str(part) for part in e["loc"]], "type": e["type"], "msg": e["msg"][:300]}
        for e in exc.errors(include_url=False, include_input=False)[:20]
    ]
