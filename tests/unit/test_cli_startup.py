"""The command line starts fast: building the parser, and what `get` needs to ask the bus,
import neither the views (SQLAlchemy), the command models, rich nor structlog."""

from __future__ import annotations

import subprocess
import sys

from projections.queries import QUERIES, Paged
from projections.query_params import PARAMS
from tenantry.cli import parser
from tenantry.cli.processes import _ROLE_HELP, WORKER_KINDS
from tenantry.server.roles import ROLES
from workers import WORKER_KINDS as RUNNABLE_KINDS

_HEAVY = ("sqlalchemy", "structlog", "rich", "domain.commands", "projections.queries", "yaml")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {_HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


def test_help_imports_nothing_heavy() -> None:
    assert _loaded_after("from tenantry.cli import parser\nparser()") == []


def test_what_get_needs_to_ask_imports_no_views_and_no_commands() -> None:
    code = (
        "from tenantry.cli import parser\nparser()\nimport tenantry.sdk.client, tenantry.cli.output"
    )
    assert _loaded_after(code) == []


def test_the_light_query_parameters_are_the_queries_own() -> None:
    assert set(PARAMS) == set(QUERIES)
    for name, query in QUERIES.items():
        assert PARAMS[name] is query.params
        # The client pages exactly the queries that answer pages.
        assert issubclass(PARAMS[name], Paged) == (query.key is not None), name


def test_the_roles_serve_offers_are_the_roles_there_are() -> None:
    assert {*_ROLE_HELP, *(f"worker {k}" for k in WORKER_KINDS)} == set(ROLES)
    assert set(WORKER_KINDS) == set(RUNNABLE_KINDS)


def test_version_and_every_kind_in_gets_help(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(SystemExit):
        parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("tenantry 0.")
    with pytest.raises(SystemExit):
        parser().parse_args(["get", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for kind in ("environments", "clusters", "workspaces", "ml-repos", "teams"):
        assert kind in shown
    assert "storage-integrations" in shown
    assert "TENANTRY_NATS_URL" in shown


def test_up_serve_schema_and_check_access_say_what_they_read(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    for verb, variable in [
        (["up"], "TENANTRY_NATS_PORT"),
        (["serve"], "TENANTRY_DATABASE_URL"),
        (["schema"], "needs no bus"),
        (["check-access"], "TENANTRY_ACTOR"),
    ]:
        with pytest.raises(SystemExit):
            parser().parse_args([*verb, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert "Environment:" in shown and variable in shown, (verb, shown)


def test_no_debug_line_reaches_the_test_output(capsys) -> None:  # type: ignore[no-untyped-def]
    import structlog

    structlog.get_logger("tenantry.test").debug("projection.applied", position=1)
    structlog.get_logger("tenantry.test").info("shown.at.info")
    captured = capsys.readouterr()
    assert "projection.applied" not in captured.out + captured.err
    assert "shown.at.info" in captured.err
