"""The client's exceptions: the wire's, one class per error code (tenantry.protocol), all
`TenantryError`; the domain raises the very same classes."""

from __future__ import annotations

from tenantry.protocol import (
    ERRORS,
    AlreadyExists,
    Conflict,
    Forbidden,
    InternalError,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    QueryTimeout,
    TenantryError,
    Unavailable,
    error_from_wire,
)

__all__ = [
    "ERRORS",
    "AlreadyExists",
    "Conflict",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "NotFound",
    "PreconditionFailed",
    "QueryTimeout",
    "TenantryError",
    "Unavailable",
    "error_from_wire",
]
