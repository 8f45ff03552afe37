"""Connecting a one-shot CLI verb to the bus: give up quickly, and say why in one line."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from tenantry.cli.common import nats_url_for_client
from tenantry.inboxes import inbox_options
from tenantry.settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client

# The exit code of every verb that could not reach the bus.
UNREACHABLE = 2
# How long a verb tries before saying so.
CONNECT_WITHIN = 3.0


def unreachable(url: str, why: object = None) -> str:
    """The one line every verb prints when it cannot reach Tenantry."""
    because = f" ({why})" if why is not None and str(why) else ""
    return (
        f"tenantry: cannot reach Tenantry at {url}{because}: is `tenantry up` running? "
        "(or set TENANTRY_NATS_URL)"
    )


def say_unreachable(url: str, why: object = None) -> int:
    print(unreachable(url, why), file=sys.stderr)
    return UNREACHABLE


async def _quiet(_: Exception) -> None:
    pass  # nats-py logs each failed attempt with a traceback; the caller says it once


async def connect_or_explain(settings: Settings, verb: str) -> Client | None:
    """A connection, or None after printing the `cannot reach` line on stderr.

    (nats-py retries a failed first connection forever when `max_reconnect_attempts` is 0.)"""
    import nats

    url = nats_url_for_client(settings)
    try:
        async with asyncio.timeout(CONNECT_WITHIN):
            return await nats.connect(
                url.split(","),
                connect_timeout=2,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_quiet,
                **inbox_options(url),
            )
    except Exception as exc:
        say_unreachable(url, reason(exc))
        return None


def reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_WITHIN:g} s"
    return str(exc) or type(exc).__name__
