"""The README's tour runs as written, so it cannot drift from the product.

A fenced block is part of the test when the line right after its closing fence is a marker:

- ```sh / ```python followed by `<!-- readme-test -->`: run (bash with `-e -o pipefail`, or
  the venv's python), in order, in one working directory; it must exit 0;
- ```yaml followed by `<!-- readme-test: file=NAME -->`: written to NAME in that directory;
- ```text followed by `<!-- readme-test: output -->`: each of its lines must appear in what
  the run block before it printed, in order (`…` stands for anything).

The blocks run against a `tenantry up` started here, whose state directory is `.tenantry` in
the working directory, as on a laptop; TENANTRY_NATS_URL points at its port (the test's
nats-server is not on the default one)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import Tenantry

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```(?P<lang>[a-z]*)$")
_MARKER = re.compile(r"^<!-- readme-test(?::\s*(?P<option>[^>]*?))?\s*-->$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    option: str
    line: int

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.lang})"


def marked_blocks(text: str) -> list[Block]:
    """The fenced blocks whose closing fence is followed by a marker."""
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        marker = _MARKER.match(lines[end + 1]) if end + 1 < len(lines) else None
        if marker is not None:
            code = "".join(line + "\n" for line in lines[index + 1 : end])
            blocks.append(Block(opening["lang"], code, (marker["option"] or "").strip(), index + 1))
        index = end + 1
    return blocks


def _expect_lines(expected: str, output: str, block: Block) -> None:
    """Every line of `expected` in `output`, in order; `…` matches anything."""
    position = 0
    for line in filter(None, (raw.rstrip() for raw in expected.splitlines())):
        pattern = ".*?".join(re.escape(part) for part in line.split("…"))
        found = re.compile(pattern).search(output, position)
        assert found, f"{block}: {line!r} not in the output (after offset {position}):\n{output}"
        position = found.end()


def test_the_markers_are_well_formed() -> None:
    blocks = marked_blocks(README.read_text())
    assert {b.lang for b in blocks} == {"sh", "python", "yaml", "text"}
    for block in blocks:
        if block.lang in ("sh", "python"):
            assert block.option == "", block
        elif block.lang == "yaml":
            assert re.fullmatch(r"file=[\w.-]+", block.option), block
        else:
            assert block.option == "output", block
    # Every marker follows a block: a marker the pattern did not take is a typo.
    assert README.read_text().count("<!-- readme-test") == len(blocks)


# The whole tour is one test (its blocks share a shell's state): since issue 15 it runs about a
# hundred CLI calls, which took up to 115 s of the suite's 120 s default on a loaded machine.
@pytest.mark.timeout(300)
async def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    workdir = tmp_path / "tour"
    workdir.mkdir()
    instance = Tenantry(workdir / ".tenantry")
    instance.start()
    try:
        await instance.wait_ready()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
        env["TENANTRY_NATS_URL"] = instance.url
        # The venv's `tenantry` and `python` first, as after `. .venv/bin/activate`.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        last_output: str | None = None
        ran = 0
        for block in marked_blocks(README.read_text()):
            if block.lang == "yaml":
                (workdir / block.option.removeprefix("file=")).write_text(block.code)
                continue
            if block.lang == "text":
                assert last_output is not None, f"{block}: no run block before it"
                _expect_lines(block.code, last_output, block)
                continue
            command = (
                ["bash", "-e", "-o", "pipefail", "-c", block.code]
                if block.lang == "sh"
                else [sys.executable, "-c", block.code]
            )
            done = await asyncio.to_thread(
                subprocess.run,
                command,
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (
                f"{block} exited {done.returncode}\n--- stdout\n{done.stdout}\n"
                f"--- stderr\n{done.stderr}\n--- tenantry up\n{instance.log()}"
            )
            last_output = done.stdout
            ran += 1
        assert ran >= 6
        await _ends_green(instance)
    finally:
        assert instance.stop() == 0, instance.log()


async def _ends_green(instance: Tenantry, within: float = 60.0) -> None:
    """The tour's workspace and repo are provisioned by `tenantry up`'s own workers: `ready`,
    never `failed`."""
    import json
    import time

    import nats

    nc = await nats.connect(instance.url)
    try:
        deadline = time.monotonic() + within
        while True:
            statuses = {}
            for query, params in (
                ("get_workspace", {"fqn": "prod-eu:fraud"}),
                ("get_ml_repo", {"name": "fraud-models"}),
            ):
                reply = await nc.request(f"tenantry.query.{query}", json.dumps(params).encode(), 10)
                data = json.loads(reply.data)["data"]
                statuses[query] = (data["status"], data["failure"])
            assert all(s != "failed" for s, _ in statuses.values()), statuses
            if all(s == "ready" for s, _ in statuses.values()):
                return
            assert time.monotonic() < deadline, f"{statuses}\n{instance.log()}"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
