"""`tenantry up`, `tenantry serve <role>`, `tenantry health`: running Tenantry itself."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tenantry.bootstrap import ROLES, run_until_signalled, serve, up
from tenantry.cli.common import nats_url_for_client
from tenantry.identity import UntrustedBus
from tenantry.settings import Settings
from workers import WORKER_KINDS

_ROLE_HELP = {
    "command": "the command service on tenantry.cmd.* (a queue group: run several)",
    "relay": "publish stored events to the JetStream stream (one publishes at a time)",
    "projections": "the read models and the queries on tenantry.query.*",
    "checkpoints": "sign checkpoints of the log on TENANTRY_CHECKPOINTS; answer Merkle proofs",
}


def register(verbs: Any) -> None:
    verbs.add_parser(
        "up",
        help="run everything in one process (starts nats-server unless TENANTRY_NATS_URL is set)",
    ).set_defaults(handler=_up)
    health = verbs.add_parser(
        "health", help="exit 0 if a command service answers on the bus (container health checks)"
    )
    health.add_argument(
        "--process",
        action="store_true",
        help="check this container's own process instead: its metrics port answers",
    )
    health.set_defaults(handler=_health)
    serve_parser = verbs.add_parser("serve", help="run one role, for the production layout")
    roles = serve_parser.add_subparsers(dest="role", required=True)
    for role in ROLES:
        if not role.startswith("worker "):
            roles.add_parser(role, help=_ROLE_HELP[role]).set_defaults(handler=_serve)
    worker = roles.add_parser("worker", help="a provisioning worker (shares a durable consumer)")
    worker.add_argument(
        "kind",
        choices=sorted(WORKER_KINDS),
        help="namespaces: Kubernetes namespaces (gitops or kubernetes); storage: ML repo storage",
    )
    worker.set_defaults(handler=_serve)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    try:
        run_until_signalled(lambda stop: up(settings, stop))
    except UntrustedBus as exc:
        print(f"tenantry up: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.nats_url is None:
        print(f"tenantry serve {args.role}: set TENANTRY_NATS_URL", file=sys.stderr)
        return 2
    nats_url = settings.nats_url
    role = f"worker {args.kind}" if args.role == "worker" else args.role
    try:
        run_until_signalled(lambda stop: serve(settings, stop, nats_url, [role]))
    except UntrustedBus as exc:
        print(f"tenantry serve {args.role}: {exc}", file=sys.stderr)
        return 2
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    if args.process:
        return _probe_process(settings.metrics_port)
    return asyncio.run(_probe(nats_url_for_client(settings)))


async def _stream_health(nc: Any) -> int:
    """Unhealthy while the relay's newest alert about the event stream is critical (a message
    on it that the store never held): see `tenantry.stream_check`."""
    from tenantry.stream_check import standing_alert

    alert = await standing_alert(nc)
    if alert is not None:
        print(
            f"unhealthy: the event stream holds a message the store never wrote: seq "
            f"{alert.get('seq')} ({alert.get('kind')}: {alert.get('detail')}); see "
            "`tenantry audit verify`",
            file=sys.stderr,
        )
        return 1
    print("healthy")
    return 0


def _probe_process(port: int) -> int:
    """A role process serves /metrics for as long as its event loop runs."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            healthy = response.status == 200 and b"tenantry_" in response.read()
    except OSError as exc:
        print(f"unhealthy: metrics port {port}: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else "unhealthy: no tenantry metrics")
    return 0 if healthy else 1


async def _quiet(exc: Exception) -> None:
    """The probe reports failures itself, in one line."""


async def _probe(url: str) -> int:
    import nats

    try:
        # allow_reconnect=False: nats-py's max_reconnect_attempts=0 means "retry forever".
        async with asyncio.timeout(5):
            nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, error_cb=_quiet)
    except Exception as exc:
        print(f"unhealthy: cannot reach {url}: {type(exc).__name__} {exc}", file=sys.stderr)
        return 1
    try:
        # A deliberately invalid command: any live command service refuses it, writing nothing.
        reply = await nc.request("tenantry.cmd.create_environment", b"{", timeout=3)
        if json.loads(reply.data)["error"]["code"] == "validation_error":
            return await _stream_health(nc)
        print(f"unhealthy: unexpected reply {reply.data[:200]!r}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"unhealthy: no command service answered: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
