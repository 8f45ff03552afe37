"""`tenantry get KIND [NAME]` and `tenantry check-access SUBJECT REPO [ACTION]`: reading the
views, as tables on a terminal and JSON when piped."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenantry.cli.sanitize import for_rich, for_terminal
from tenantry.settings import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from tenantry.sdk.client import Client

# `-o` of `get` (tenantry.cli.output.FORMATS: not imported here, it pulls in the client).
FORMATS = ("table", "json", "yaml")

# Exit codes of `get` and `check-access`.
OK, NO, FAILED = 0, 1, 2


@dataclass(frozen=True)
class _Kind:
    """One kind `get` lists: how to list them, fetch one, and show them as a table."""

    columns: Sequence[str]
    row: Callable[[Any], Sequence[str]]
    many: Callable[[Client], Awaitable[Sequence[BaseModel]]]
    one: Callable[[Client, str], Awaitable[BaseModel]]


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _status(thing: Any) -> str:
    """The status, and why when it failed."""
    return f"{thing.status}: {thing.failure}" if thing.failure else str(thing.status)


async def _find(items: Awaitable[Sequence[Any]], name: str, kind: str) -> Any:
    from tenantry.sdk.errors import NotFound

    for item in await items:
        if item.name == name:
            return item
    raise NotFound(f"{kind} {name!r} does not exist", {"kind": kind, "name": name})


_KINDS: dict[str, _Kind] = {
    "environments": _Kind(
        ("NAME", "PRODUCTION", "OPTIMIZE FOR", "COLOR"),
        lambda e: (e.name, "yes" if e.is_production else "no", e.optimize_for, e.color or ""),
        lambda c: c.list_environments(),
        lambda c, name: _find(c.list_environments(), name, "environment"),
    ),
    "clusters": _Kind(
        ("NAME", "REGION", "PROVIDER", "ENVIRONMENTS", "LABELS"),
        lambda c: (c.name, c.region, c.provider, ",".join(c.environments), _labels(c.labels)),
        lambda c: c.list_clusters(),
        lambda c, name: _find(c.list_clusters(), name, "cluster"),
    ),
    "workspaces": _Kind(
        ("FQN", "ENVIRONMENT", "PRODUCTION", "STATUS", "LABELS", "APPLICATIONS"),
        lambda w: (
            w.fqn,
            w.environment,
            "yes" if w.is_production else "no",
            _status(w),
            _labels(w.labels),
            ",".join(w.applications),
        ),
        lambda c: c.list_workspaces(),
        lambda c, fqn: c.get_workspace(fqn=fqn),
    ),
    "ml-repos": _Kind(
        ("NAME", "STORAGE INTEGRATION", "STATUS", "LOCATION", "GRANTS"),
        lambda r: (
            r.name,
            r.storage_integration,
            _status(r),
            r.location,
            ",".join(f"{g.subject}={g.role}" for g in r.grants),
        ),
        lambda c: c.list_ml_repos(),
        lambda c, name: c.get_ml_repo(name=name),
    ),
    "teams": _Kind(
        ("NAME", "MEMBERS"),
        lambda t: (t.name, ",".join(t.members)),
        lambda c: c.list_teams(),
        lambda c, name: c.get_team(name=name),
    ),
    "storage-integrations": _Kind(
        ("NAME", "PROVIDER", "STORAGE ROOT", "REGION"),
        lambda s: (s.name, s.provider, s.storage_root, s.region or ""),
        lambda c: c.list_storage_integrations(),
        lambda c, name: c.get_storage_integration(name=name),
    ),
}
# `get cluster prod-eu` reads as well as `get clusters prod-eu`.
_ALIASES = {
    "environment": "environments",
    "env": "environments",
    "cluster": "clusters",
    "workspace": "workspaces",
    "ws": "workspaces",
    "ml-repo": "ml-repos",
    "repo": "ml-repos",
    "repos": "ml-repos",
    "team": "teams",
    "storage-integration": "storage-integrations",
}


def register(verbs: Any) -> None:
    from tenantry.cli import CLIENT_ENV, described

    get = verbs.add_parser(
        "get",
        help=f"list or show {', '.join(_KINDS)}",
        **described(
            f"List one kind, or show one of them by NAME. KIND is one of: {', '.join(_KINDS)} "
            f"(also: {', '.join(_ALIASES)}).",
            CLIENT_ENV,
        ),
    )
    get.add_argument("kind", choices=[*_KINDS, *_ALIASES], metavar="KIND", help=", ".join(_KINDS))
    get.add_argument("name", nargs="?", help="one of them (a workspace by <cluster>:<name>)")
    get.add_argument(
        "-o", "--output", choices=FORMATS, help="default: table on a terminal, JSON when piped"
    )
    get.set_defaults(handler=_get)

    check = verbs.add_parser(
        "check-access",
        help="may SUBJECT do ACTION on REPO? exit 0: allowed, 1: denied, 2: error",
        **described(
            "May SUBJECT do ACTION (read by default) on the ML repo REPO now? Answers through a "
            "direct grant, a team, a workspace or an application. Exit 0: allowed, 1: denied, "
            "2: an error (an unknown repo, an unreachable bus).",
            CLIENT_ENV,
        ),
    )
    check.add_argument(
        "subject", help="user:<email>, team:<name>, workspace:<cluster>:<name> or app:…"
    )
    check.add_argument("repo")
    check.add_argument("action", nargs="?", default="read", choices=["read", "write", "admin"])
    check.add_argument(
        "-o", "--output", choices=["text", "json"], help="default: text on a tty, JSON piped"
    )
    check.set_defaults(handler=_check_access)


def _get(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import chosen_format, print_data, run_with_client
    from tenantry.sdk.errors import NotFound

    kind = _KINDS[_ALIASES.get(args.kind, args.kind)]
    fmt = chosen_format(args.output)

    async def work(client: Client) -> int:
        if args.name is None:
            items = list(await kind.many(client))
            data: Any = [i.model_dump(mode="json") for i in items]
        else:
            try:
                items = [await kind.one(client, args.name)]
            except NotFound as exc:
                print(f"not found: {for_terminal(exc.message)}", file=sys.stderr)
                return NO
            data = items[0].model_dump(mode="json")
        if fmt == "table":
            _print_table(kind, items)
        else:
            print_data(data, fmt)
        return OK

    return run_with_client(settings, work, failure=FAILED)


def _print_table(kind: _Kind, items: Sequence[BaseModel]) -> None:
    from rich import box
    from rich.table import Table

    from tenantry.cli.output import console

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in kind.columns:
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(*(for_rich(cell) for cell in kind.row(item)))
    console().print(table)


def _check_access(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import chosen_format, console, run_with_client

    as_json = chosen_format(args.output) == "json"

    async def work(client: Client) -> int:
        answer = await client.check_access(subject=args.subject, repo=args.repo, action=args.action)
        if as_json:
            print(json.dumps(answer.model_dump(mode="json")))
        else:
            held = f"{answer.role} via {answer.via}" if answer.role else "no grant"
            verdict = "allowed" if answer.allowed else "denied"
            style = "green" if answer.allowed else "red"
            sentence = (
                f": {args.subject} may{'' if answer.allowed else ' not'} {args.action} "
                f"{args.repo} ({held})"
            )
            console().print(for_rich(verdict, style) + for_rich(sentence))
        return OK if answer.allowed else NO

    return run_with_client(settings, work, failure=FAILED)
