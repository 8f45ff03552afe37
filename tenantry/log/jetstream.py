"""A JetStream stream made sure of: created if missing, else brought to Tenantry's configuration."""

from __future__ import annotations

from typing import NamedTuple

from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo
from nats.js.errors import NotFoundError


class Ensured(NamedTuple):
    """Whether the stream was created (else updated), and what the server answered of it."""

    created: bool
    info: StreamInfo


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> Ensured:
    """Create the stream `config` names, or update the one there to `config`."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        return Ensured(True, await js.add_stream(config))
    return Ensured(False, await js.update_stream(config))
