"""What every client verb of the CLI shares: finding the bus."""

from __future__ import annotations

from tenantry.settings import Settings


def nats_url_for_client(settings: Settings) -> str:
    """TENANTRY_NATS_URL, else the server a local `tenantry up` started, else the default."""
    if settings.nats_url:
        return settings.nats_url
    if settings.nats_url_file.exists():
        return settings.nats_url_file.read_text().strip()
    return "nats://127.0.0.1:4222"
