"""The client's exceptions: one per wire error code (DESIGN §3), all `TenantryError`."""

from __future__ import annotations

from typing import Any


class TenantryError(Exception):
    """A refusal or failure, with the wire's `code`, `message` and `details`."""

    code: str = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidRequest(TenantryError):
    """`validation_error`: the body does not fit the command or query (checked by the client
    before sending, and by the server)."""

    code = "validation_error"


class NotFound(TenantryError):
    code = "not_found"


class AlreadyExists(TenantryError):
    code = "already_exists"


class Conflict(TenantryError):
    """An `expected_version` that did not match, or a command id reused for another command."""

    code = "conflict"


class PreconditionFailed(TenantryError):
    """A domain rule refused the command."""

    code = "precondition_failed"


class Forbidden(TenantryError):
    code = "forbidden"


class QueryTimeout(TenantryError):
    """`timeout`: the views had not reached `min_position` in time (`details.position` says
    where they stood)."""

    code = "timeout"


class InternalError(TenantryError):
    code = "internal"


class Unavailable(TenantryError):
    """No answer from the bus after every retry (client side; never sent on the wire). A
    command may or may not have been applied: send it again with the same command id
    (`details.command_id`) to find out, it cannot apply twice."""

    code = "unavailable"


ERRORS: dict[str, type[TenantryError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        NotFound,
        AlreadyExists,
        Conflict,
        PreconditionFailed,
        Forbidden,
        QueryTimeout,
        InternalError,
        Unavailable,
    )
}


def error_from_wire(error: dict[str, Any]) -> TenantryError:
    """The exception for a reply's `error` object; an unknown code keeps its code."""
    code = str(error.get("code", "internal"))
    message = str(error.get("message", ""))
    details = error.get("details") or {}
    cls = ERRORS.get(code)
    if cls is None:
        unknown = TenantryError(message, details)
        unknown.code = code
        return unknown
    return cls(message, details)
