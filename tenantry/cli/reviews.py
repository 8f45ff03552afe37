"""`tenantry review open|list|show|decide|close|export`: access reviews (campaigns) over the bus,
and their evidence as a verifiable audit export."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantry.cli.sanitize import for_rich, for_terminal
from tenantry.settings import Settings

if TYPE_CHECKING:
    from tenantry.sdk.client import Client


def register(verbs: Any) -> None:
    from tenantry.cli import CLIENT_ENV, described

    review = verbs.add_parser("review", help="access reviews: who keeps which access")
    review_verbs = review.add_subparsers(dest="review_verb", required=True)

    opened = review_verbs.add_parser(
        "open",
        help="open a review of the grants in a scope (a tenant admin)",
        **described(
            "Snapshot the grants in force (and the members of the teams holding them) on the "
            "repos named, on the repos an environment's workspaces use, or on every repo; "
            "reviewers decide each item until DUE, when the undecided get --on-undecided.",
            CLIENT_ENV,
        ),
    )
    opened.add_argument("name", help="the review's name (a DNS label)")
    scope = opened.add_mutually_exclusive_group(required=True)
    scope.add_argument("--repos", help="comma-separated ML repo names")
    scope.add_argument("--environment", help="the repos this environment's workspaces use")
    scope.add_argument("--all", action="store_true", help="every ML repo")
    opened.add_argument(
        "--due", required=True, help="RFC 3339 (no offset: UTC), or a duration from now: 14d"
    )
    opened.add_argument("--on-undecided", choices=["keep", "revoke"], default="keep")
    opened.set_defaults(handler=_open)

    listed = review_verbs.add_parser("list", help="the reviews and their progress")
    listed.add_argument("--status", choices=["open", "closed"])
    listed.add_argument("-o", "--output", choices=["table", "json"])
    listed.set_defaults(handler=_list)

    show = review_verbs.add_parser("show", help="a review and its items")
    show.add_argument("name")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--undecided", action="store_true", help="only the undecided items")
    which.add_argument("--decided", action="store_true", help="only the decided items")
    which.add_argument(
        "--mine",
        action="store_true",
        help="only the items waiting for me (TENANTRY_ACTOR) as a tenant admin or an admin of "
        "their repos",
    )
    show.add_argument("-o", "--output", choices=["table", "json"])
    show.set_defaults(handler=_show)

    decide = review_verbs.add_parser("decide", help="keep or revoke one item (a reviewer)")
    decide.add_argument("name")
    decide.add_argument("item", help="the item's id (i1, i2, …: `review show`)")
    decide.add_argument("decision", choices=["keep", "revoke"])
    decide.add_argument("--reason", required=True)
    decide.set_defaults(handler=_decide)

    close = review_verbs.add_parser(
        "close", help="close now: the undecided items get the review's on-undecided"
    )
    close.add_argument("name")
    close.set_defaults(handler=_close)

    export = review_verbs.add_parser(
        "export",
        help="write the review's evidence: an audit export from its opening to its closing "
        "(verifiable with `tenantry audit verify`) and a summary beside it",
    )
    export.add_argument("name")
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the export (JSON lines); FILE.evidence.json, the verifier and the public key "
        "go beside it",
    )
    export.add_argument(
        "--sign-key", type=Path, help="an Ed25519 private key (PEM): end with a signed checkpoint"
    )
    export.set_defaults(handler=_export)


def parse_due(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time (no offset: UTC), or a duration from now (`90m`, `12h`, `30d`)."""
    if text[:1].isdigit() and text[-1:] in ("m", "h", "d") and text[:-1].isdigit():
        from domain.names import parse_duration

        moment: datetime = (now or datetime.now(UTC)) + parse_duration(text)
        return moment
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--due is an RFC 3339 time or a duration (14d), not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _run(settings: Settings, work: Any) -> int:
    from tenantry.cli.output import run_with_client

    return run_with_client(settings, work, failure=1)


def _open(args: argparse.Namespace, settings: Settings) -> int:
    try:
        due = parse_due(args.due)
    except ValueError as exc:
        print(f"tenantry review open: {exc}", file=sys.stderr)
        return 2
    if args.repos is not None:
        scope: dict[str, Any] = {"repos": [r for r in args.repos.split(",") if r]}
    elif args.environment is not None:
        scope = {"environment": args.environment}
    else:
        scope = {"all": True}

    async def work(client: Client) -> int:
        reply = await client.open_access_review(
            name=args.name, scope=scope, due=due.isoformat(), on_undecided=args.on_undecided
        )
        review = await client.get_access_review(name=args.name, min_position=reply.position)
        print(
            f"opened access review {args.name}: {review.progress.items} items, due "
            f"{review.due.isoformat()}, undecided items then: {review.on_undecided}"
        )
        return 0

    return _run(settings, work)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import chosen_format

    async def work(client: Client) -> int:
        reviews = await client.list_access_reviews(status=args.status)
        if chosen_format(args.output) == "json":
            print(json.dumps([r.model_dump(mode="json") for r in reviews], indent=2))
            return 0
        _table(
            ("NAME", "STATUS", "SCOPE", "DUE", "DECIDED", "UNDECIDED", "REVOKED"),
            [
                (
                    r.name,
                    r.status,
                    _scope(r),
                    r.due.isoformat(),
                    str(r.progress.decided),
                    str(r.progress.undecided),
                    str(r.progress.revoked),
                )
                for r in reviews
            ],
        )
        return 0

    return _run(settings, work)


def _scope(review: Any) -> str:
    if review.scope == "environment":
        return f"environment {review.environment}"
    if review.scope == "repos":
        return "repos " + ",".join(review.repos)
    return "all"


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import chosen_format

    status = "undecided" if args.undecided or args.mine else "decided" if args.decided else None

    async def work(client: Client) -> int:
        review = await client.get_access_review(name=args.name)
        reviewer = None
        if args.mine:
            reviewer = client.actor or "user:anonymous@localhost"
        items = await client.list_access_review_items(
            review=args.name, status=status, reviewer=reviewer
        )
        if chosen_format(args.output) == "json":
            print(
                json.dumps(
                    {
                        "review": review.model_dump(mode="json"),
                        "items": [i.model_dump(mode="json") for i in items],
                    },
                    indent=2,
                )
            )
            return 0
        p = review.progress
        print(
            for_terminal(
                f"{review.name}: {review.status}, {_scope(review)}, due {review.due.isoformat()}"
                f" (undecided then: {review.on_undecided}); {p.decided}/{p.items} decided, "
                f"{p.kept} kept, {p.revoked} revoked"
            )
        )
        _table(
            ("ITEM", "ACCESS", "DECISION", "BY", "REASON", "OUTCOME"),
            [
                (
                    i.item,
                    _access(i),
                    i.decision or "",
                    (i.decided_by or "") + (" (automatic)" if i.automatic else ""),
                    i.reason or "",
                    i.outcome or "",
                )
                for i in items
            ],
        )
        return 0

    return _run(settings, work)


def _access(item: Any) -> str:
    if item.kind == "membership":
        return f"{item.subject} member of team:{item.team} ({','.join(item.repos)})"
    until = f" until {item.expires_at.isoformat()}" if item.expires_at else ""
    return f"{item.subject} {item.role} on {item.repo}{until}"


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.table import Table

    from tenantry.cli.output import console

    table = Table(*columns, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*(for_rich(cell) for cell in row))
    console().print(table)


def _decide(args: argparse.Namespace, settings: Settings) -> int:
    async def work(client: Client) -> int:
        reply = await client.decide_access_review_item(
            review=args.name, item=args.item, decision=args.decision, reason=args.reason
        )
        print(f"{args.item}: {args.decision} (events: {', '.join(reply.events)})")
        return 0

    return _run(settings, work)


def _close(args: argparse.Namespace, settings: Settings) -> int:
    async def work(client: Client) -> int:
        reply = await client.close_access_review(review=args.name)
        review = await client.get_access_review(name=args.name, min_position=reply.position)
        p = review.progress
        print(f"closed access review {args.name}: {p.kept} kept, {p.revoked} revoked")
        return 0

    return _run(settings, work)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.audit.checkpoint import load_private_key
    from tenantry.cli import audit_proofs

    try:
        key = load_private_key(args.sign_key) if args.sign_key else None
    except ValueError as exc:
        print(f"tenantry review export: {exc}", file=sys.stderr)
        return 2
    span: dict[str, Any] = {}

    async def work(client: Client) -> int:
        review = await client.get_access_review(name=args.name)
        span["since"] = review.opened_position
        span["until"] = None if review.closed_position is None else review.closed_position + 1
        # The views answered this, and the stream may not have the closing yet: wait for it.
        span["through"] = review.closed_position
        if review.closed_position is None:
            print(
                f"tenantry review export: access review {args.name} is still open: the export "
                "holds its events so far",
                file=sys.stderr,
            )
        return 0

    code = _run(settings, work)
    if code != 0:
        return code
    from tenantry.cli.audit import _write_export

    partial = args.output.with_name(args.output.name + ".partial")
    with partial.open("wb") as out:
        code = asyncio.run(
            _write_export(settings, out, span["since"], span["until"], key, span["through"])
        )
    if code != 0:
        partial.unlink(missing_ok=True)
        return code
    from tenantry.audit.review_evidence import review_evidence

    with partial.open("rb") as lines:
        evidence = review_evidence(lines, args.name)
    os.replace(partial, args.output)
    summary = args.output.with_name(args.output.name + ".evidence.json")
    summary.write_text(json.dumps(evidence, indent=2, ensure_ascii=False) + "\n")
    for path in (summary, *audit_proofs.write_verifier(args.output, key)):
        print(f"wrote {path}", file=sys.stderr)
    decided = len(evidence["decisions"])
    print(
        f"access review {args.name}: {len(evidence['snapshot'])} items, {decided} decisions, "
        f"{sum(len(d['remediation']) for d in evidence['decisions'])} remediation events",
        file=sys.stderr,
    )
    return 0
