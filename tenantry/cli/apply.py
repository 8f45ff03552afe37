"""`tenantry apply -f FILE|DIR|-` and `tenantry schema`: manifests in, the plan as a diff out."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tenantry.cli.sanitize import for_terminal
from tenantry.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from domain.commands import Command
    from tenantry.apply.manifests import Source
    from tenantry.apply.plan import Action, Plan
    from tenantry.sdk.client import Client
    from tenantry.sdk.errors import TenantryError
    from tenantry.sdk.results import ApplyReply

_MARK = {"create": ("+", "green"), "update": ("~", "yellow"), "unchanged": ("=", "dim")}


def register(verbs: Any) -> None:
    applying = verbs.add_parser(
        "apply",
        help="make the tenancy match YAML manifests (creates what is missing, updates what "
        "differs, changes nothing when all matches)",
    )
    applying.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE|DIR|-",
        help="a manifest file, a folder of *.yaml / *.yml, or - for standard input (repeatable)",
    )
    applying.add_argument(
        "--dry-run", action="store_true", help="print the plan as a diff and write nothing"
    )
    applying.add_argument(
        "--prune",
        action="store_true",
        help="also revoke grants apply made that collaborators / ml_repo_access no longer "
        "name (shown as '- revoke' in the plan; without --prune they are kept; grants made "
        "elsewhere are never revoked)",
    )
    applying.add_argument(
        "--summary",
        action="store_true",
        help="print the plan's counts only, not each document (for large applies)",
    )
    applying.add_argument(
        "-o", "--output", choices=["text", "json"], help="default: text (coloured on a tty)"
    )
    applying.add_argument(
        "--actor", help="who applies: user:<email> (default: TENANTRY_ACTOR, else anonymous)"
    )
    applying.set_defaults(handler=_apply)
    from tenantry.cli import described

    verbs.add_parser(
        "schema",
        help="print the JSON Schema of manifests (for editors' YAML support)",
        **described(
            "Print the JSON Schema of the manifests `tenantry apply` reads, for an editor's "
            "YAML support: tenantry schema > tenantry.schema.json",
            "none (it needs no bus).",
        ),
    ).set_defaults(handler=_schema)


def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.apply.manifests import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return 0


def _apply(args: argparse.Namespace, settings: Settings) -> int:
    from rich.text import Text

    from tenantry.apply.manifests import ManifestError, load
    from tenantry.apply.plan import plan, read_state
    from tenantry.cli.output import console, error, run_with_client
    from tenantry.sdk.errors import TenantryError, Unavailable
    from tenantry.server.identity import DEFAULT_ACTOR

    as_json = args.output == "json"
    try:
        documents = load(args.filename, sys.stdin.read)
    except ManifestError as exc:
        if as_json:
            _print_problems(exc.problems)
        for problem in exc.problems:
            error(str(problem))
        error(f"{len(exc.problems)} problem(s) in the manifests: nothing was applied")
        return 1
    actor = args.actor if args.actor is not None else settings.actor

    async def work(client: Client) -> int:
        state = await read_state(client)
        the_plan = plan(documents, state, creator=actor or DEFAULT_ACTOR, prune=args.prune)
        if the_plan.problems:
            if as_json:
                _print_problems(the_plan.problems)
            for problem in the_plan.problems:
                error(str(problem))
            error(f"{len(the_plan.problems)} problem(s) in the plan: nothing was applied")
            return 1
        out = console()
        if not as_json:
            _print_plan(out, the_plan, summary_only=args.summary)
        if the_plan.changes_nothing:
            if as_json:
                _print_json(the_plan, None, dry_run=args.dry_run)
            elif args.dry_run:
                out.print(Text("Dry run: nothing was written.", style="bold"))
            return 0
        # One request, all or nothing; a dry run asks the service what it would say.
        try:
            reply = await client.apply(the_plan.commands, dry_run=args.dry_run)
        except Unavailable:
            raise  # no answer: applied or not is unknown, and the message says so
        except TenantryError as exc:
            refusal = _refusal(the_plan, exc)
            if as_json:
                _print_json(the_plan, None, dry_run=args.dry_run, refused=refusal)
            error(refusal["text"])
            return 1
        if reply.position is not None:
            # What runs next (a `get`, another apply) reads what was written.
            await client.wait_for(reply.position)
        if as_json:
            _print_json(the_plan, reply, dry_run=args.dry_run)
        elif args.dry_run:  # the command service accepts every command
            out.print(Text("Dry run: nothing was written.", style="bold"))
        else:
            out.print(
                Text(
                    f"Applied {len(reply.commands)} command(s); the views are at position "
                    f"{reply.position}.",
                    style="bold",
                )
            )
        return 0

    return run_with_client(settings, work, actor=actor, failure=1)


def _refusal(the_plan: Plan, exc: TenantryError) -> dict[str, Any]:
    """What the service refused, and where in the manifests: its `index` names the command."""
    from tenantry.cli.output import describe

    index = exc.details.get("index")
    source = the_plan.source_of(index) if isinstance(index, int) else None
    where = ""
    if source is not None and isinstance(index, int):
        command = the_plan.commands[index]
        where = f"{source}: {command.wire_name} {_target(command)}: "
    text = f"{where}{describe(exc)}\nnothing was applied (an apply is all or nothing)"
    return {
        "code": exc.code,
        "message": exc.message,
        "index": index,
        "source": None if source is None else _source_json(source),
        "text": text,
    }


def _source_json(source: Source) -> dict[str, Any]:
    return {"file": source.file, "index": source.index, "line": source.line}


def _print_plan(out: Console, the_plan: Plan, *, summary_only: bool = False) -> None:
    from rich.text import Text

    if not summary_only:
        for action in the_plan.actions:
            out.print(_action_lines(action, the_plan.prune))
    summary = (
        f"Plan: {the_plan.count('create')} to create, {the_plan.count('update')} to update, "
        f"{the_plan.count('unchanged')} unchanged; {len(the_plan.commands)} command(s)."
    )
    if the_plan.removals:
        summary += f" {the_plan.removals} grant(s) the manifests do not name: " + (
            "revoked (--prune)." if the_plan.prune else "kept (--prune revokes them)."
        )
    if the_plan.changes_nothing:
        summary += " Nothing to change."
    out.print(Text(summary, style="bold"))


def _action_lines(action: Action, prune: bool = False) -> Text:
    from rich.text import Text

    from tenantry.apply.plan import ABSENT

    mark, style = _MARK[action.kind]
    text = Text(f"{mark} {action.type} {for_terminal(action.name)}", style=style)
    if action.kind != "unchanged":
        text.append(f" ({action.kind})", style="dim")
    for change in action.changes:
        if change.removal:
            shown = f"{for_terminal(change.field)}: {_value(change.before)}"
            text.append(f"\n    - revoke {shown}", style="red")
            if not prune:
                text.append("  (kept: --prune revokes it)", style="dim")
            continue
        text.append(f"\n    {for_terminal(change.field)}: ")
        if action.kind == "create" and change.before is ABSENT:
            text.append(_value(change.after), style="green")
        else:
            text.append(_value(change.before), style="red")
            text.append(" → ")
            text.append(_value(change.after), style="green")
    return text


def _value(value: Any) -> str:
    from tenantry.apply.plan import ABSENT

    if value is ABSENT:
        return "(none)"
    return for_terminal(json.dumps(value, ensure_ascii=False))


def _target(command: Command) -> str:
    body = command.model_dump()
    for key in ("workspace", "repo", "cluster", "team", "name"):
        if key in body:
            return str(body[key])
    return ""


def _print_problems(problems: Any) -> None:
    """`-o json`: what is wrong, as JSON on stdout (stderr says it for a person too)."""
    document = {
        "ok": False,
        "problems": [
            {"file": p.file, "index": p.index, "line": p.line, "path": p.path, "message": p.message}
            for p in problems
        ],
    }
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _print_json(
    the_plan: Plan,
    reply: ApplyReply | None,
    *,
    dry_run: bool,
    refused: dict[str, Any] | None = None,
) -> None:
    from tenantry.apply.plan import ABSENT

    def plain(value: Any) -> Any:
        return None if value is ABSENT else value

    document: dict[str, Any] = {
        "dry_run": dry_run,
        "prune": the_plan.prune,
        "actions": [
            {
                "action": a.kind,
                "type": a.type,
                "name": a.name,
                "source": _source_json(a.source),
                "changes": [
                    {
                        "field": c.field,
                        "before": plain(c.before),
                        "after": plain(c.after),
                        **({"removal": True} if c.removal else {}),
                    }
                    for c in a.changes
                ],
            }
            for a in the_plan.actions
        ],
        "commands": [
            {"command": c.wire_name, "body": c.model_dump(mode="json", exclude_none=True)}
            for c in the_plan.commands
        ],
        # What each command did: empty for a dry run, a refusal, or nothing to do.
        "applied": []
        if reply is None or dry_run
        else [c.model_dump(mode="json") for c in reply.commands],
    }
    if reply is not None and reply.position is not None:
        document["position"] = reply.position
    if refused is not None:
        document["refused"] = {k: v for k, v in refused.items() if k != "text"}
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
