"""Domain errors, each carrying the wire error code it is answered with."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A command was refused; nothing was written."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    code = "validation_error"


class NotFound(DomainError):
    code = "not_found"


class AlreadyExists(DomainError):
    code = "already_exists"


class Conflict(DomainError):
    code = "conflict"


class PreconditionFailed(DomainError):
    code = "precondition_failed"


class Forbidden(DomainError):
    code = "forbidden"


ERROR_CODES: tuple[str, ...] = (
    "validation_error",
    "not_found",
    "already_exists",
    "conflict",
    "precondition_failed",
    "forbidden",
    "internal",
)
