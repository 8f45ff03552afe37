"""Text the CLI did not write (reasons, descriptions, roots, messages), made safe to show: on a
terminal (no escape sequences, no rich markup) and in a spreadsheet (no formulas).

Every table, every line a person reads and every CSV cell goes through here; nothing heavy is
imported (rich's Text is loaded when first needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# C0 controls, DEL and C1 controls (ESC and CSI among them: `ESC[2J` clears the screen, OSC
# sequences set the window title or write the clipboard), and the Unicode bidirectional
# overrides that make a terminal show text in another order than it is stored. Each is shown
# as its escape (`\x1b`, `\u202e`) instead, so that a reader sees that it was there.
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {
    **{code: f"\\x{code:02x}" for code in _CONTROLS},
    **{code: f"\\u{code:04x}" for code in _BIDI},
}
# Cells a spreadsheet would read as a formula (or as the start of one, after a tab or CR):
# OWASP's list for CSV injection.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def for_terminal(value: object) -> str:
    """`value` as text a terminal shows as it is: control characters made visible."""
    return str(value).translate(_VISIBLE)


def lines_for_terminal(text: str) -> str:
    """`for_terminal` line by line, for a report whose own line breaks are ours: what it quotes
    (of a document, a reply, an export) is shown as text."""
    return "\n".join(for_terminal(line) for line in text.split("\n"))


def for_rich(value: object, style: str = "") -> Text:
    """`for_terminal` as a rich Text, for a table cell or anything rich prints: a Text is never
    read as markup (a reason of `[/]` passed as a string ends the output in a MarkupError, and
    rich's own escaping doubles a trailing backslash)."""
    from rich.text import Text

    return Text(for_terminal(value), style=style)


def for_csv(value: object) -> str:
    """A CSV cell no spreadsheet runs: one starting with = + - @, a tab or a CR gets a leading
    single quote (OWASP), so `=HYPERLINK(…)` is shown as text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
