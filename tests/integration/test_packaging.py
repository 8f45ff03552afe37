"""The package as `pip install .` builds it (the Docker image's install): every Python package of
the tree is in the wheel. A plain `packages` list in pyproject.toml once left `tenantry.cli` out,
so the image's `tenantry` command could not start."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("domain", "projections", "workers", "tenantry", "bench")


def test_the_wheel_holds_every_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tenantry-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name for name in archive.namelist() if name.endswith(".py")}
    on_disk = {
        str(path.relative_to(ROOT))
        for top in TOP_LEVEL
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert {"tenantry/cli/__init__.py", "tenantry/server/bootstrap.py"} <= on_disk
    assert on_disk - in_wheel == set()
