"""`python -m bench [--quick] [--json] [scenario …]`: every scenario as a ratio to its baseline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

import structlog

from bench.harness import Result, machine, summary
from tenantry.server.bootstrap import tune_process

SCENARIOS: dict[str, str] = {
    "command_throughput": "bench.command_throughput",
    "relay_throughput": "bench.relay_throughput",
    "command_throughput_postgres": "bench.command_throughput_postgres",
    "relay_throughput_postgres": "bench.relay_throughput_postgres",
    "projection_rebuild": "bench.projection_rebuild",
    "latency": "bench.latency",
    "memory": "bench.memory",
    "as_of_query": "bench.as_of_query",
    "audit_verify": "bench.audit_verify",
    "scale": "bench.scale",
    "cli_startup": "bench.cli_startup",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    args = parser.parse_args(argv)
    # The product logs every command at info: measure it, not the terminal.
    # and on stderr, so that --json's stdout is nothing but the results.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    tune_process()  # product and baselines run under the settings of `tenantry serve`
    results: list[Result] = []
    if not args.json:
        print(f"machine: {machine()}")
    for name in args.scenarios or list(SCENARIOS):
        module = __import__(SCENARIOS[name], fromlist=["run"])
        # A scenario reports one result, or several (`scale`: one per ratio it measures).
        run: Callable[[bool], Result | list[Result]] = module.run
        reported = run(args.quick)
        for result in reported if isinstance(reported, list) else [reported]:
            results.append(result)
            print(result.as_json() if args.json else result.as_text(), flush=True)
    print(json.dumps(summary(results)) if args.json else f"summary: {summary(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
