"""`tenantry audit …`: reading the audit stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tenantry.cli.common import nats_url_for_client
from tenantry.settings import Settings


def register(verbs: Any) -> None:
    audit = verbs.add_parser("audit", help="the audit stream")
    audit_verbs = audit.add_subparsers(dest="audit_verb", required=True)
    tail = audit_verbs.add_parser(
        "tail", help="print events from the stream: a line each on a terminal, JSON lines piped"
    )
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--since", help="a position (1234) or an RFC 3339 time")
    tail.add_argument("--type", dest="type_filter", help="an event type; workspace.* works")
    tail.add_argument("--fqn", help="only events of this FQN")
    tail.add_argument("-o", "--output", choices=["text", "json"], help="default: text on a tty")
    tail.set_defaults(handler=_tail)


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_audit_tail(nats_url_for_client(settings), args))


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
