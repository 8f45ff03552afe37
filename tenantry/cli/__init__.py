"""The `tenantry` command line: one module per group of verbs, each registering its parsers."""

from __future__ import annotations

import argparse
import sys

from tenantry.cli import apply, audit, compliance, get, processes
from tenantry.logs import configure_logging
from tenantry.settings import Settings

# Each module has `register(verbs)`, which adds its parsers with `handler=fn(args, settings)`.
_GROUPS = [processes, audit, compliance, apply, get]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="tenantry", description="Event-sourced control plane for ML-platform tenancy."
    )
    verbs = root.add_subparsers(dest="verb", required=True)
    for group in _GROUPS:
        group.register(verbs)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = args.handler(args, settings)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
