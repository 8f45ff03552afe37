"""A JetStream stream made sure of: created if missing, else brought to Tenantry's configuration."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> bool:
    """Create the stream `config` names, or update the one there to `config`; True if created."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return True
    await js.update_stream(config)
    return False
