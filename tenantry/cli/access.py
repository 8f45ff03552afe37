"""`tenantry access request|approve|deny|cancel|list|show|break-glass`: access requests and
their approvals (issue 15), as a client of the bus."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from tenantry.cli.sanitize import for_rich
from tenantry.settings import Settings

if TYPE_CHECKING:
    from tenantry.sdk.client import Client

OK, FAILED = 0, 1
_COLUMNS = ("request", "status", "repo", "subject", "role", "requester", "approvals", "expires")


def register(verbs: Any) -> None:
    from tenantry.cli import CLIENT_ENV, described

    access = verbs.add_parser(
        "access",
        help="ask for a grant, approve or deny one, list the requests",
        **described(
            "Access requests: a grant asked for (`request`) is given once enough people other "
            "than its requester and its subject approve it (`approve`); it can be denied "
            "(`deny`) or cancelled by its requester (`cancel`), and expires unanswered. "
            "`break-glass` is a tenant admin's emergency grant (at most 24h).",
            CLIENT_ENV,
        ),
    )
    steps = access.add_subparsers(dest="step", required=True)

    request = steps.add_parser("request", help="ask for a grant on REPO; prints the request id")
    request.add_argument("repo")
    request.add_argument("--role", required=True, choices=["viewer", "editor", "admin"])
    request.add_argument("--reason", required=True)
    request.add_argument("--subject", help="who gets it (default: you)")
    request.add_argument("--duration", help="how long the grant lasts: 90m, 12h, 30d")
    request.set_defaults(handler=_request)

    approve = steps.add_parser("approve", help="approve REQUEST")
    approve.add_argument("request")
    approve.add_argument("--comment")
    approve.set_defaults(handler=_approve)

    deny = steps.add_parser("deny", help="deny REQUEST")
    deny.add_argument("request")
    deny.add_argument("--reason", required=True)
    deny.set_defaults(handler=_deny)

    cancel = steps.add_parser("cancel", help="cancel your REQUEST")
    cancel.add_argument("request")
    cancel.add_argument("--reason")
    cancel.set_defaults(handler=_cancel)

    listing = steps.add_parser("list", help="list requests (oldest first)")
    listing.add_argument(
        "--status", choices=["pending", "approved", "denied", "cancelled", "expired"]
    )
    listing.add_argument("--repo")
    listing.add_argument(
        "--mine", action="store_true", help="only the pending ones you may approve"
    )
    listing.add_argument("-o", "--output", choices=["table", "json"])
    listing.set_defaults(handler=_list)

    show = steps.add_parser("show", help="show REQUEST with its approvals")
    show.add_argument("request")
    show.set_defaults(handler=_show)

    glass = steps.add_parser("break-glass", help="(tenant admins) grant now, for at most 24h")
    glass.add_argument("repo")
    glass.add_argument("--subject", required=True)
    glass.add_argument("--role", required=True, choices=["viewer", "editor", "admin"])
    glass.add_argument("--reason", required=True)
    glass.add_argument("--duration", required=True, help="at most 24h: 30m, 4h, 24h")
    glass.set_defaults(handler=_break_glass)

    for step in (request, approve, deny, cancel, listing, show, glass):
        step.add_argument("--actor", help="who acts: user:<email> (default: TENANTRY_ACTOR)")


def _actor(args: argparse.Namespace, settings: Settings) -> str | None:
    return str(args.actor) if args.actor is not None else settings.actor


def _send(args: argparse.Namespace, settings: Settings, name: str, **fields: Any) -> int:
    from tenantry.cli.output import run_with_client

    async def work(client: Client) -> int:
        reply = await getattr(client, name)(**fields)
        print(json.dumps(reply.model_dump(mode="json")))
        return OK

    return run_with_client(settings, work, actor=_actor(args, settings), failure=FAILED)


def _request(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import run_with_client

    async def work(client: Client) -> int:
        reply = await client.request_repo_access(
            repo=args.repo,
            subject=args.subject,
            role=args.role,
            reason=args.reason,
            duration=args.duration,
        )
        print(reply.fqn)  # the request's id
        return OK

    return run_with_client(settings, work, actor=_actor(args, settings), failure=FAILED)


def _approve(args: argparse.Namespace, settings: Settings) -> int:
    return _send(
        args, settings, "approve_access_request", request=args.request, comment=args.comment
    )


def _deny(args: argparse.Namespace, settings: Settings) -> int:
    return _send(args, settings, "deny_access_request", request=args.request, reason=args.reason)


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    return _send(args, settings, "cancel_access_request", request=args.request, reason=args.reason)


def _break_glass(args: argparse.Namespace, settings: Settings) -> int:
    return _send(
        args,
        settings,
        "break_glass_repo_access",
        repo=args.repo,
        subject=args.subject,
        role=args.role,
        reason=args.reason,
        duration=args.duration,
    )


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import chosen_format, console, error, run_with_client

    actor = _actor(args, settings)
    if args.mine and actor is None:
        error("--mine needs to know who you are: --actor or TENANTRY_ACTOR")
        return FAILED

    async def work(client: Client) -> int:
        rows = await client.list_access_requests(
            status=args.status, repo=args.repo, approver=actor if args.mine else None
        )
        if chosen_format(args.output) == "json":
            print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
            return OK
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for column in _COLUMNS:
            table.add_column(column, overflow="fold")
        for r in rows:
            cells = (
                r.request,
                r.status,
                r.repo,
                r.subject,
                r.role,
                r.requester,
                f"{len(r.approvals)}/{r.approvals_needed}",
                r.expires_at.isoformat(),
            )
            table.add_row(*(for_rich(cell) for cell in cells))
        console().print(table)
        return OK

    return run_with_client(settings, work, actor=actor, failure=FAILED)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import run_with_client

    async def work(client: Client) -> int:
        found = await client.get_access_request(request=args.request)
        print(json.dumps(found.model_dump(mode="json"), indent=2))
        return OK

    return run_with_client(settings, work, actor=_actor(args, settings), failure=FAILED)
