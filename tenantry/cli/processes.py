"""`tenantry up`, `tenantry serve <role>`, `tenantry health`: running Tenantry itself."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tenantry.cli.bus import connect_or_explain
from tenantry.settings import Settings

# What `tenantry serve` runs (tenantry.server.roles.ROLES; a unit test holds them equal): named
# here so that `tenantry --help` need not import the roles themselves.
WORKER_KINDS = ("namespaces", "storage")

_ROLE_HELP = {
    "command": "the command service on tenantry.cmd.* (a queue group: run several)",
    "relay": "publish stored events to the JetStream stream (one publishes at a time)",
    "projections": "the read models and the queries on tenantry.query.*",
    "checkpoints": "sign checkpoints of the log on TENANTRY_CHECKPOINTS; answer Merkle proofs",
}


def register(verbs: Any) -> None:
    from tenantry.cli import described

    verbs.add_parser(
        "up",
        help="run everything in one process (starts nats-server unless TENANTRY_NATS_URL is set)",
        **described(
            "Run Tenantry on this machine, in one process: a nats-server on loopback (unless "
            "TENANTRY_NATS_URL is set), the command service, the relay, the read models and "
            "queries, and both workers on local backends (namespace manifests committed to "
            "<state>/gitops, storage as folders under file:// roots). One per state folder. "
            "Prints where everything is once it answers; Ctrl-C drains and stops.",
            "TENANTRY_STATE_DIR (./.tenantry), TENANTRY_NATS_URL, TENANTRY_NATS_PORT (4223), "
            "TENANTRY_METRICS_PORT (9464, 0: off), TENANTRY_METRICS_HOST (127.0.0.1), "
            "TENANTRY_ADMINS (unset: authorization off), TENANTRY_AUTH, TENANTRY_DATABASE_URL, "
            "TENANTRY_NAMESPACE_BACKEND, TENANTRY_GITOPS_ROOT, TENANTRY_KUBECONFIG, "
            "TENANTRY_STORAGE_BACKEND, TENANTRY_S3_*, TENANTRY_LOG_FORMAT, TENANTRY_LOG_LEVEL; "
            "see README.md, Settings.",
        ),
    ).set_defaults(handler=_up, logs=True)
    health = verbs.add_parser(
        "health", help="exit 0 if a command service answers on the bus (container health checks)"
    )
    health.add_argument(
        "--process",
        action="store_true",
        help="check this container's own process instead: its metrics port answers",
    )
    health.set_defaults(handler=_health)
    serve_parser = verbs.add_parser(
        "serve",
        help="run one role, for the production layout",
        **described(
            "Run one role of Tenantry in this process, against a bus and an event store that "
            "already exist (the production layout: docker-compose.yml). Command services and "
            "projections scale out; one relay publishes at a time; workers of a kind share a "
            "durable consumer.",
            "TENANTRY_NATS_URL (required), TENANTRY_NATS_USER, TENANTRY_NATS_PASSWORD, "
            "TENANTRY_DATABASE_URL (unset: SQLite in TENANTRY_STATE_DIR), TENANTRY_AUTH, "
            "TENANTRY_ADMINS, TENANTRY_CLIENT_ACCOUNT, TENANTRY_QUEUE_GROUP, "
            "TENANTRY_MAX_IN_FLIGHT, TENANTRY_STREAM_REPLICAS, TENANTRY_POLL_INTERVAL, "
            "TENANTRY_METRICS_PORT, TENANTRY_METRICS_HOST, the workers' TENANTRY_NAMESPACE_* / "
            "TENANTRY_GITOPS_ROOT / TENANTRY_KUBECONFIG / TENANTRY_STORAGE_BACKEND / "
            "TENANTRY_S3_*, TENANTRY_LOG_FORMAT, TENANTRY_LOG_LEVEL; see README.md, Settings.",
        ),
    )
    roles = serve_parser.add_subparsers(dest="role", required=True)
    for role, role_help in _ROLE_HELP.items():
        roles.add_parser(role, help=role_help).set_defaults(handler=_serve, logs=True)
    worker = roles.add_parser("worker", help="a provisioning worker (shares a durable consumer)")
    worker.add_argument(
        "kind",
        choices=sorted(WORKER_KINDS),
        help="namespaces: Kubernetes namespaces (gitops or kubernetes); storage: ML repo storage",
    )
    worker.set_defaults(handler=_serve, logs=True)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.server.bootstrap import AlreadyRunning, run_until_signalled, up
    from tenantry.server.identity import UntrustedBus
    from tenantry.server.nats_server import PortInUse

    try:
        run_until_signalled(lambda stop: up(settings, stop))
    except (AlreadyRunning, PortInUse) as exc:
        print(f"tenantry up: {exc}", file=sys.stderr)
        return 1
    except UntrustedBus as exc:
        print(f"tenantry up: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.server.bootstrap import run_until_signalled, serve
    from tenantry.server.identity import UntrustedBus
    from tenantry.server.nats_server import PortInUse

    if settings.nats_url is None:
        print(f"tenantry serve {args.role}: set TENANTRY_NATS_URL", file=sys.stderr)
        return 2
    nats_url = settings.nats_url
    role = f"worker {args.kind}" if args.role == "worker" else args.role
    try:
        run_until_signalled(lambda stop: serve(settings, stop, nats_url, [role]))
    except PortInUse as exc:
        print(f"tenantry serve {args.role}: {exc}", file=sys.stderr)
        return 1
    except UntrustedBus as exc:
        print(f"tenantry serve {args.role}: {exc}", file=sys.stderr)
        return 2
    return 0


def _health(args: argparse.Namespace, settings: Settings) -> int:
    if args.process:
        return _probe_process(settings.metrics_port)
    return asyncio.run(_probe(settings))


async def _stream_health(nc: Any) -> int:
    """Unhealthy while the relay's newest alert about the event stream is critical (a message
    on it that the store never held): see `tenantry.log.stream_check`."""
    from tenantry.log.stream_check import standing_alert

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


async def _probe(settings: Settings) -> int:
    from tenantry.protocol import InvalidRequest, command_subject

    nc = await connect_or_explain(settings, "health")
    if nc is None:
        return 1  # Docker's "unhealthy"
    try:
        # A deliberately invalid command: any live command service refuses it, writing nothing.
        reply = await nc.request(command_subject("create_environment"), b"{", timeout=3)
        if json.loads(reply.data)["error"]["code"] == InvalidRequest.code:
            return await _stream_health(nc)
        print(f"unhealthy: unexpected reply {reply.data[:200]!r}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"unhealthy: no command service answered: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
