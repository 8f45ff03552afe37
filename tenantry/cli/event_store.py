"""For the verbs that read the event store itself (`replay`, `audit verify`): opening it with
the server's settings (the SQLite state directory, or TENANTRY_DATABASE_URL), never creating one."""

from __future__ import annotations

from domain.service import TenancyService
from tenantry.server.bootstrap import build_service
from tenantry.settings import Settings


class NoEventStore(Exception):
    pass


def open_event_store(settings: Settings) -> TenancyService:
    if not settings.database_url:
        path = settings.state_dir / "events.sqlite"
        if not path.exists():
            raise NoEventStore(
                f"no event store at {path} (set TENANTRY_STATE_DIR, or TENANTRY_DATABASE_URL)"
            )
    return build_service(settings, seed=False)
