"""`access-report` and `replay` on a narrow terminal: every value whole, none hidden."""

from __future__ import annotations

from tenantry.cli.compliance import _table

_ROW = {
    "repo": "fraud-models",
    "subject": "workspace:prod-eu:fraud-detection",
    "role": "editor",
    "via": "workspace",
    "granted_at": "2026-03-01T10:00:00.123456Z",
    "granted_by": "user:ana.long-surname@example.com",
    "reason": "quarterly model refresh approved by the risk committee (ticket RISK-1234)",
}


def test_at_80_columns_every_value_is_shown_whole(capsys) -> None:  # type: ignore[no-untyped-def]
    _table([_ROW], "access in force at 2026-03-02T00:00:00Z", width=80)
    out = capsys.readouterr().out
    for key, value in _ROW.items():
        shown = value[:19] + "Z" if key == "granted_at" else value
        assert shown in out, (key, out)
    assert "…" not in out


def test_a_wide_terminal_keeps_the_table(capsys) -> None:  # type: ignore[no-untyped-def]
    _table([_ROW], "access in force", width=240)
    out = capsys.readouterr().out
    assert "granted by" in out and "reason" in out and _ROW["reason"] in out
