"""The `tenantry` command line: one module per group of verbs, each registering its parsers."""

from __future__ import annotations

import argparse
import os
import sys

from tenantry.cli import access, apply, audit, compliance, get, processes, reviews, views
from tenantry.settings import Settings

# Each module has `register(verbs)`, which adds its parsers with `handler=fn(args, settings)`.
_GROUPS = [processes, audit, compliance, apply, get, views, access, reviews]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="tenantry",
        description="Event-sourced control plane for ML-platform tenancy.",
        epilog="Start with `tenantry up`, then `tenantry get environments` in another terminal. "
        "`tenantry VERB --help` says what each verb does and which TENANTRY_* variables it reads.",
    )
    root.add_argument("--version", action="version", version=f"tenantry {_version()}")
    verbs = root.add_subparsers(dest="verb", required=True)
    for group in _GROUPS:
        group.register(verbs)
    return root


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tenantry")
    except PackageNotFoundError:
        return "unknown (not installed)"


def described(description: str, reads: str) -> dict[str, object]:
    """A verb's `description` and the environment variables it reads, for `add_parser`."""
    return {
        "description": description,
        "epilog": f"Environment: {reads}",
    }


# What a client verb reads to find the bus and act.
CLIENT_ENV = (
    "TENANTRY_NATS_URL (the bus), else ./.tenantry/nats.url (TENANTRY_STATE_DIR) written by "
    "`tenantry up`, else nats://127.0.0.1:TENANTRY_NATS_PORT (4223); TENANTRY_ACTOR (who acts)."
)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    if getattr(args, "logs", False):
        # Only the verbs that run Tenantry's own roles log (structlog is slow to import, and
        # the client verbs say what they have to say on stdout and stderr).
        from tenantry.logs import configure_logging

        configure_logging(settings.log_format, settings.log_level)
    try:
        code: int = args.handler(args, settings)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`tenantry audit tail | head`): stop quietly, and let the
        # interpreter's last flush go nowhere instead of failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
