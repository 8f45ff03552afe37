"""Running a `tenantry` verb in the test process."""

from __future__ import annotations

from tenantry.cli import parser
from tenantry.settings import Settings


def cli(argv: list[str]) -> int:
    """What `tenantry <argv>` does, with the settings of the environment, but without `main`'s
    logging set-up: that would bind the logs, for the rest of the session, to the streams
    pytest captures for this one test."""
    args = parser().parse_args(argv)
    code: int = args.handler(args, Settings.from_env())
    return code
