"""Replies and refusals as bytes on the bus (DESIGN §3), built from tenantry.protocol's
headers and error classes: what the server's endpoints share."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from tenantry.protocol import (
    SERVICE_ERROR_CODE_HEADER,
    SERVICE_ERROR_HEADER,
    InternalError,
    InvalidRequest,
    TenantryError,
)

MAX_BODY_BYTES = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def is_valid_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def require_body_size(data: bytes) -> None:
    """Refuse a body over MAX_BODY_BYTES before parsing it."""
    if len(data) > MAX_BODY_BYTES:
        raise InvalidRequest(
            f"the body is {len(data)} bytes; at most {MAX_BODY_BYTES} are accepted",
        )


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def ok_reply(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return dumps({"ok": True, **payload}), {}


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
