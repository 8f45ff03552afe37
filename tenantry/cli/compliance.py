"""`tenantry access-report` (who held what at a moment, asked of the query service on the bus)
and `tenantry replay` (the same answer rebuilt from the event store itself)."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TextIO

from tenantry.cli.sanitize import for_csv, for_rich, for_terminal
from tenantry.settings import Settings

if TYPE_CHECKING:
    from tenantry.sdk.client import Client

COLUMNS = ("repo", "subject", "role", "via", "granted_at", "granted_by", "reason")


def register(verbs: Any) -> None:
    report = verbs.add_parser(
        "access-report",
        help="who held which role on which ML repo at a moment, and who granted it, why",
    )
    _report_arguments(report, "--as-of")
    report.set_defaults(handler=_access_report)
    replay = verbs.add_parser(
        "replay",
        help="rebuild the read models as they stood at a moment from the event store, into a "
        "scratch store, and print the access then in force",
    )
    _report_arguments(replay, "--until")
    replay.add_argument(
        "--store", help="keep the rebuilt views in this SQLite file (default: in memory)"
    )
    replay.set_defaults(handler=_replay, logs=True)


def _report_arguments(parser: argparse.ArgumentParser, moment: str) -> None:
    parser.add_argument(
        moment,
        dest="moment",
        required=True,
        type=parse_moment,
        help="RFC 3339 (no offset: UTC), a date (midnight UTC), or 'now'",
    )
    parser.add_argument("--repo", help="only this ML repo")
    parser.add_argument("--subject", help="only this subject (user:…, team:…, workspace:…, app:…)")
    parser.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "csv"],
        help="default: a table on a terminal, JSON piped",
    )


def parse_moment(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time or a date: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- access-report ------------------------------------------------------------------------


def _access_report(args: argparse.Namespace, settings: Settings) -> int:
    from tenantry.cli.output import run_with_client

    params = {"as_of": args.moment.isoformat(), "repo": args.repo, "subject": args.subject}

    async def work(client: Client) -> int:
        # Page by page (the query's `limit` / `after`): a report of any size comes through.
        rows = await client.rows("access_report", **params)
        render(rows, args.output, f"access in force at {_utc(args.moment)}")
        return 0

    return run_with_client(settings, work, failure=1)


# --- replay -------------------------------------------------------------------------------


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from projections.replay import Replay, access_in_force
    from projections.store import ViewStore
    from tenantry.cli.event_store import NoEventStore, open_event_store

    try:
        service = open_event_store(settings)
    except NoEventStore as exc:
        print(f"tenantry replay: {exc}", file=sys.stderr)
        return 2
    store = ViewStore.from_url(f"sqlite:///{args.store}") if args.store else ViewStore.in_memory()
    try:
        try:
            replay = Replay(service.recorder, store)
        except ValueError:
            print(f"tenantry replay: {args.store} already holds views", file=sys.stderr)
            return 2
        started = time.perf_counter()
        with _progress(service.recorder.max_notification_id() or 0) as advance:
            replay.until(args.moment, advance)
        elapsed = time.perf_counter() - started
        with store.snapshot() as conn:
            rows = access_in_force(conn, args.repo, args.subject, at=args.moment)
    finally:
        store.close()
        service.close()
    last = f", the last at {replay.last_occurred_at}" if replay.last_occurred_at else ""
    print(
        f"replayed {replay.events} events up to position {replay.position}{last} "
        f"in {elapsed:.2f} s",
        file=sys.stderr,
    )
    render(rows, args.output, f"access in force at {_utc(args.moment)} (replayed)")
    return 0


class _progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return lambda _position: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("replaying"),
            BarColumn(),
            TextColumn("position {task.completed:,.0f} of {task.total:,.0f}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        task = self._bar.add_task("replay", total=self._total)
        return lambda position: self._bar.update(task, completed=position)

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# --- output -------------------------------------------------------------------------------


def render(rows: list[dict[str, Any]], output: str | None, title: str) -> None:
    """A table on a terminal, JSON (the query's `data`) when piped, or CSV for spreadsheets."""
    chosen = output or ("table" if sys.stdout.isatty() else "json")
    if chosen == "json":
        print(json.dumps(rows, ensure_ascii=False))
    elif chosen == "csv":
        _csv(rows, sys.stdout)
    else:
        _table(rows, title)


def _csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    # Every cell quoted: a reason holding a bare CR would otherwise start a row of its own.
    writer = csv.DictWriter(
        out,
        fieldnames=COLUMNS,
        extrasaction="ignore",
        lineterminator="\n",
        quoting=csv.QUOTE_ALL,
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: for_csv(row.get(k)) for k in COLUMNS})


# Narrower than this, the seven columns don't fit (rich would hide "granted by" and "reason",
# or cut their values): one entry per row instead, every value whole.
_TABLE_MIN_WIDTH = 140


def _table(rows: list[dict[str, Any]], title: str, width: int | None = None) -> None:
    if width is None:
        # Piped with `-o table`, rich would fold the columns into 80 characters.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 240
    if width < _TABLE_MIN_WIDTH:
        _entries(rows, title)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        folds = column in ("granted_by", "reason")
        table.add_column(column.replace("_", " "), no_wrap=not folds, overflow="fold")
    for row in rows:
        cells = _cells(row)
        table.add_row(*(for_rich(cells[k]) for k in COLUMNS))
    console = Console(width=width)
    console.print(table)
    if not rows:
        console.print("no access in force")


def _cells(row: dict[str, Any]) -> dict[str, str]:
    cells = {k: "" if row.get(k) is None else str(row[k]) for k in COLUMNS}
    # To the second on screen; JSON and CSV keep the exact time.
    cells["granted_at"] = cells["granted_at"][:19] + "Z" if cells["granted_at"] else ""
    return cells


def _entries(rows: list[dict[str, Any]], title: str) -> None:
    """The narrow layout: a few lines per row, as plain text (never markup)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    console.print(Text(for_terminal(title), style="bold"))
    for row in rows:
        # Shown as text, with no control character of a hostile value reaching the terminal.
        cells = {k: for_terminal(v) for k, v in _cells(row).items()}
        console.print(Text(f"{cells['repo']}  {cells['subject']}  {cells['role']}", style="bold"))
        console.print(Text(f"  via:        {cells['via']}"))
        console.print(Text(f"  granted at: {cells['granted_at']}"))
        console.print(Text(f"  granted by: {cells['granted_by']}"))
        console.print(Text(f"  reason:     {cells['reason']}"))
    if not rows:
        console.print("no access in force")


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
