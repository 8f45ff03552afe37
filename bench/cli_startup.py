"""How fast the `tenantry` command line answers, against `python -c pass`.

A `tenantry up` runs as a subprocess (SQLite under a temporary state directory, its own
nats-server); once it has written `nats.url` (it does once queries answer), `tenantry --help`
and `tenantry get environments` run one after the other, each a fresh interpreter, as a person
types them. Product: `get`s per second (the median run); baseline: `python -c pass` per
second in the same run, so the ratio is the share of the interpreter's own start-up in a `get`.
The medians of `--help`, `get` and `pass`, and the time from starting `tenantry up` to its
first answer, are in the notes (docs/benchmarks.md)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Result
from tenantry.server.nats_server import free_port


def _median_seconds(command: list[str], runs: int, env: dict[str, str], cwd: Path) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(quick: bool) -> Result:
    runs = 5 if quick else 15
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
        env.update(TENANTRY_NATS_PORT=str(free_port()), TENANTRY_METRICS_PORT="0")
        started = time.perf_counter()
        up = subprocess.Popen(
            [sys.executable, "-m", "tenantry.cli", "up"],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url_file = cwd / ".tenantry" / "nats.url"
            while not url_file.exists():
                if up.poll() is not None or time.perf_counter() - started > 120:
                    raise RuntimeError("tenantry up did not start")
                time.sleep(0.01)
            first_answer = time.perf_counter() - started
            cli = [sys.executable, "-m", "tenantry.cli"]
            help_s = _median_seconds([*cli, "--help"], runs, env, cwd)
            get_s = _median_seconds([*cli, "get", "environments", "-o", "json"], runs, env, cwd)
            pass_s = _median_seconds([sys.executable, "-c", "pass"], runs, env, cwd)
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(30)
    return Result(
        "cli_startup",
        1 / get_s,
        1 / pass_s,
        "runs/s",
        0.05,
        0.15,
        {
            "help_s": round(help_s, 3),
            "get_s": round(get_s, 3),
            "pass_s": round(pass_s, 3),
            "up_to_first_answer_s": round(first_answer, 2),
            "runs": runs,
        },
    )
