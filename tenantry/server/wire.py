"""The wire format of replies and errors on the bus (DESIGN §3), in one place."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from domain.errors import DomainError

COMMAND_ID_HEADER = "Tenantry-Command-Id"
ACTOR_HEADER = "Tenantry-Actor"
CORRELATION_ID_HEADER = "Tenantry-Correlation-Id"
# How many seconds the sender waits for the reply, from when it sent the request: a query
# service drops a request older than that, unanswered (docs/decisions.md).
TIMEOUT_HEADER = "Tenantry-Timeout"
SERVICE_ERROR_HEADER = "Nats-Service-Error"
SERVICE_ERROR_CODE_HEADER = "Nats-Service-Error-Code"

MAX_BODY_BYTES = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

# The micro-service convention carries a numeric status; our own code is in the body.
_STATUS: dict[str, str] = {
    "validation_error": "400",
    "forbidden": "403",
    "not_found": "404",
    "already_exists": "409",
    "conflict": "409",
    "precondition_failed": "412",
    "timeout": "504",
    "internal": "500",
}


class WireError(Exception):
    """A refusal detected on the wire before the domain sees the command."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def is_valid_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def require_body_size(data: bytes) -> None:
    """Refuse a body over MAX_BODY_BYTES before parsing it."""
    if len(data) > MAX_BODY_BYTES:
        raise WireError(
            "validation_error",
            f"the body is {len(data)} bytes; at most {MAX_BODY_BYTES} are accepted",
        )


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def ok_reply(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return dumps({"ok": True, **payload}), {}


def error_reply(
    code: str, message: str, details: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    body = dumps(
        {"ok": False, "error": {"code": code, "message": message, "details": details or {}}}
    )
    # Header values are single lines of limited size.
    header_message = " ".join(message.split())[:512]
    return body, {
        SERVICE_ERROR_HEADER: header_message,
        SERVICE_ERROR_CODE_HEADER: _STATUS.get(code, "500"),
    }


def error_of(exc: Exception) -> tuple[str, str, dict[str, Any]]:
    """The (code, message, details) a refused request is answered with."""
    if isinstance(exc, DomainError):
        return exc.code, exc.message, exc.details
    if isinstance(exc, WireError):
        return exc.code, exc.message, exc.details
    if isinstance(exc, ValidationError):
        return "validation_error", "the request is not valid", {"errors": validation_errors(exc)}
    return "internal", "internal error; the request was not applied", {}


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without echoing the (possibly huge or hostile) input back."""
    return [
        {"loc": [str(part) for part in e["loc"]], "type": e["type"], "msg": e["msg"][:300]}
        for e in exc.errors(include_url=False, include_input=False)[:20]
    ]
