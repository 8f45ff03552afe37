"""Domain errors: the wire's error classes (tenantry.protocol, one per code) under the names
the domain speaks, so a refusal raised here is answered with its code without any mapping."""

from __future__ import annotations

from tenantry.protocol import COMMAND_ERROR_CODES as ERROR_CODES
from tenantry.protocol import (
    AlreadyExists,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
)
from tenantry.protocol import InvalidRequest as ValidationFailed
from tenantry.protocol import TenantryError as DomainError

__all__ = [
    "ERROR_CODES",
    "AlreadyExists",
    "Conflict",
    "DomainError",
    "Forbidden",
    "NotFound",
    "PreconditionFailed",
    "ValidationFailed",
]
