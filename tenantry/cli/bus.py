"""Connecting a one-shot CLI verb to the bus: give up quickly, and say why in one line."""

from __future__ import annotations

import sys

from nats.aio.client import Client

from tenantry.cli.common import nats_url_for_client
from tenantry.inboxes import inbox_options
from tenantry.settings import Settings


async def _quiet(_: Exception) -> None:
    pass  # nats-py logs each failed attempt with a traceback; the caller says it once


async def connect_or_explain(settings: Settings, verb: str) -> Client | None:
    """A connection, or None after printing `tenantry <verb>: cannot reach …` on stderr.

    (nats-py retries a failed first connection forever when `max_reconnect_attempts` is 0.)"""
    import nats

    url = nats_url_for_client(settings)
    try:
        return await nats.connect(
            url,
            connect_timeout=5,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            error_cb=_quiet,
            **inbox_options(url),
        )
    except Exception as exc:
        print(f"tenantry {verb}: cannot reach the bus at {url}: {exc}", file=sys.stderr)
        return None
