"""What the client verbs of the CLI share: running against the bus, and printing for a human
(rich, on a terminal) or a program (JSON when piped, or YAML)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO

from tenantry.cli.bus import CONNECT_WITHIN, reason, say_unreachable
from tenantry.sdk.errors import TenantryError, Unavailable
from tenantry.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from tenantry.sdk.client import Client

FORMATS = ("table", "json", "yaml")


def chosen_format(requested: str | None, stream: TextIO | None = None) -> str:
    """`-o` if given, else a table on a terminal and JSON when piped."""
    if requested is not None:
        return requested
    return "table" if (stream or sys.stdout).isatty() else "json"


def console(stream: TextIO | None = None) -> Console:
    from rich.console import Console

    # Wide enough that piped or captured tables are not folded to 80 columns.
    out = stream or sys.stdout
    return Console(file=out, highlight=False, soft_wrap=False, width=None if out.isatty() else 200)


def print_data(data: Any, fmt: str) -> None:
    """JSON (one document, indented) or YAML of plain data."""
    if fmt == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def error(message: str) -> None:
    from rich.console import Console
    from rich.text import Text

    from tenantry.cli.sanitize import lines_for_terminal

    # A Text is never read as markup; the message's own line breaks are ours (`describe`).
    Console(file=sys.stderr, highlight=False, soft_wrap=True).print(
        Text("error:", style="red"), Text(lines_for_terminal(message))
    )


def run_with_client(
    settings: Settings,
    work: Callable[[Client], Coroutine[Any, Any, int]],
    *,
    actor: str | None = None,
    failure: int = 2,
) -> int:
    """Connect, run `work`, close. A refusal or an unreachable bus is printed on stderr and
    answers `failure` as the exit code."""

    from tenantry.sdk.client import Client

    url = settings.client_nats_url()

    async def main() -> int:
        # A command line fails fast when the bus is not there, and says so in one line.
        try:
            async with asyncio.timeout(CONNECT_WITHIN):
                client = await Client.connect(
                    url,
                    actor=actor if actor is not None else settings.actor,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.2,
                )
        except (Unavailable, TimeoutError) as exc:
            cause = exc.__cause__ if isinstance(exc, Unavailable) else exc
            return say_unreachable(url, reason(cause) if cause is not None else None)
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except TenantryError as exc:
        error(describe(exc))
        return failure


def describe(exc: TenantryError) -> str:
    """A refusal in one or a few lines: the code, the message, and what the details add."""
    text = f"{exc.code}: {exc.message}"
    for problem in exc.details.get("errors", []):
        where = ".".join(str(p) for p in problem.get("loc", []))
        text += f"\n  {where}: {str(problem.get('msg', '')).removeprefix('Value error, ')}"
    return text
