"""`tenantry up`, `tenantry serve <role>`, `tenantry health`: running Tenantry itself."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tenantry.bootstrap import ROLES, run_until_signalled, serve, up
from tenantry.cli.common import nats_url_for_client
from tenantry.settings import Settings

_ROLE_HELP = {
    "command": "the command service on tenantry.cmd.* (a queue group: run several)",
    "relay": "publish stored events to the JetStream stream (one publishes at a time)",
    "projections": "the read models and the queries on tenantry.query.*",
}


def register(verbs: Any) -> None:
    verbs.add_parser(
        "up",
        help="run everything in one process (starts nats-server unless TENANTRY_NATS_URL is set)",
    ).set_defaults(handler=_up)
    verbs.add_parser(
        "health", help="exit 0 if a command service answers on the bus (container health checks)"
    ).set_defaults(handler=_health)
    serve_parser = verbs.add_parser("serve", help="run one role, for the production layout")
    roles = serve_parser.add_subparsers(dest="role", required=True)
    for role in ROLES:
        roles.add_parser(role, help=_ROLE_HELP.get(role, role)).set_defaults(handler=_serve)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    run_until_signalled(lambda stop: up(settings, stop))
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.nats_url is None:
        print(f"tenantry serve {args.role}: set TENANTRY_NATS_URL", file=sys.stderr)
        return 2
    nats_url = settings.nats_url
    run_until_signalled(lambda stop: serve(settings, stop, nats_url, [args.role]))
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_probe(nats_url_for_client(settings)))


async def _probe(url: str) -> int:
    import nats

    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        print(f"unhealthy: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        # A deliberately invalid command: any live command service refuses it, writing nothing.
        reply = await nc.request("tenantry.cmd.create_environment", b"{", timeout=3)
        if json.loads(reply.data)["error"]["code"] == "validation_error":
            print("healthy")
            return 0
        print(f"unhealthy: unexpected reply {reply.data[:200]!r}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"unhealthy: no command service answered: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
