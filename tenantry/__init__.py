"""Tenantry: the product front (settings, composition root, bus endpoints, client, CLI).

`tenantry.Client` is the async Python client of the bus; `tenantry.TenantryError` is what its
refusals raise. Both are imported on first use, so that `import tenantry` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tenantry.sdk.client import Client
    from tenantry.sdk.errors import TenantryError

__all__ = ["Client", "TenantryError"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from tenantry.sdk.client import Client

        return Client
    if name == "TenantryError":
        from tenantry.sdk.errors import TenantryError

        return TenantryError
    raise AttributeError(f"module 'tenantry' has no attribute {name!r}")
