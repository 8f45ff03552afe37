"""Tenantry: the product front (settings, composition root, bus endpoints, CLI)."""
