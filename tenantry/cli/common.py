"""What every client verb of the CLI shares: finding the bus."""

from __future__ import annotations

from tenantry.settings import Settings


def nats_url_for_client(settings: Settings) -> str:
    """TENANTRY_NATS_URL, else the server a local `tenantry up` started, else the default."""
    return settings.client_nats_url()
