"""`tenantry rebuild-views`: every view rebuilt from the event log beside the live ones, then
swapped in at once (`projections.swap`), while `tenantry serve` goes on answering from them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tenantry.settings import Settings


def register(verbs: Any) -> None:
    from tenantry.cli import described

    rebuild = verbs.add_parser(
        "rebuild-views",
        help="rebuild every view from the event store beside the live ones and swap them in",
        **described(
            "Builds the views from position zero into a fresh store beside the live one "
            "(views.sqlite.rebuild, or the schema <schema>_rebuild on PostgreSQL) while the "
            "live views keep answering, then swaps it in in one transaction: readers see the "
            "old views or the new ones, never half-built ones. Run it beside a running "
            "`tenantry serve` or without one.",
            "TENANTRY_STATE_DIR (the SQLite event store and views.sqlite), or "
            "TENANTRY_DATABASE_URL (PostgreSQL; ?schema=<name> for the schema of the views).",
        ),
    )
    rebuild.add_argument(
        "--batch", type=int, default=2_000, help="notifications a transaction (default 2000)"
    )
    rebuild.set_defaults(handler=_rebuild_views, logs=True)


def _rebuild_views(args: argparse.Namespace, settings: Settings) -> int:
    from projections.swap import rebuild_beside
    from tenantry.cli.event_store import NoEventStore, open_event_store
    from tenantry.server.store import view_store_url

    if args.batch < 1:
        print("tenantry rebuild-views: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        service = open_event_store(settings)
    except NoEventStore as exc:
        print(f"tenantry rebuild-views: {exc}", file=sys.stderr)
        return 2
    try:
        position = rebuild_beside(service.recorder, view_store_url(settings), batch_size=args.batch)
    except ValueError as exc:
        print(f"tenantry rebuild-views: {exc}", file=sys.stderr)
        return 2
    finally:
        service.close()
    print(f"views rebuilt to position {position} and swapped in")
    return 0
