"""The `tenantry` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tenantry.bootstrap import run_until_signalled, serve, up
from tenantry.logs import configure_logging
from tenantry.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenantry",
        description="Event-sourced control plane for ML-platform tenancy.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser(
        "up",
        help="run everything in one process (starts nats-server unless TENANTRY_NATS_URL is set)",
    )
    sub.add_parser(
        "health",
        help="exit 0 if a command service answers on the bus (for container health checks)",
    )
    audit = sub.add_parser("audit", help="the audit stream")
    audit_verbs = audit.add_subparsers(dest="audit_verb", required=True)
    tail = audit_verbs.add_parser(
        "tail", help="print events from the stream: a line each on a terminal, JSON lines piped"
    )
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--since", help="a position (1234) or an RFC 3339 time")
    tail.add_argument("--type", dest="type_filter", help="an event type; workspace.* works")
    tail.add_argument("--fqn", help="only events of this FQN")
    tail.add_argument("-o", "--output", choices=["text", "json"], help="default: text on a tty")
    serve = sub.add_parser("serve", help="run one role, for the production layout")
    roles = serve.add_subparsers(dest="role", required=True)
    roles.add_parser("command", help="the command service on tenantry.cmd.* (a queue group)")
    roles.add_parser("relay", help="publish stored events to the JetStream stream (one at a time)")
    roles.add_parser("projections", help="the read models and the queries on tenantry.query.*")
    return parser


def nats_url_for_client(settings: Settings) -> str:
    """TENANTRY_NATS_URL, else the server a local `tenantry up` started, else the default."""
    if settings.nats_url:
        return settings.nats_url
    if settings.nats_url_file.exists():
        return settings.nats_url_file.read_text().strip()
    return "nats://127.0.0.1:4222"


async def _health(url: str) -> int:
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


async def _audit_tail(url: str, args: argparse.Namespace) -> int:
    import nats

    from tenantry.audit_tail import human_line, parse_since, tail

    as_json = args.output == "json" or (args.output is None and not sys.stdout.isatty())

    def emit(body: dict[str, object]) -> None:
        line = json.dumps(body, ensure_ascii=False) if as_json else human_line(body)
        print(line, flush=True)

    nc = await nats.connect(url)
    try:
        await tail(
            nc,
            emit,
            follow=args.follow,
            since=parse_since(args.since),
            type_filter=args.type_filter,
            fqn=args.fqn,
        )
    finally:
        await nc.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    if args.verb == "up":
        run_until_signalled(lambda stop: up(settings, stop))
        return 0
    if args.verb == "audit" and args.audit_verb == "tail":
        try:
            return asyncio.run(_audit_tail(nats_url_for_client(settings), args))
        except KeyboardInterrupt:
            return 130
    if args.verb == "health":
        return asyncio.run(_health(nats_url_for_client(settings)))
    if args.verb == "serve":
        if settings.nats_url is None:
            print(f"tenantry serve {args.role}: set TENANTRY_NATS_URL", file=sys.stderr)
            return 2
        nats_url = settings.nats_url
        run_until_signalled(lambda stop: serve(settings, stop, nats_url, [args.role]))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
