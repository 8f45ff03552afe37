"""A private PostgreSQL server for a test that stops it: `initdb` into a fresh folder, `pg_ctl`
on a free port. The shared server other tests use is never touched."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tenantry.server.nats_server import free_port


def postgres_bin() -> Path | None:
    """The folder of the newest installed `initdb` and `pg_ctl`, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@dataclass
class PostgresServer:
    bin: Path
    folder: Path  # the cluster's data, its log and its socket
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls, bin_: Path) -> PostgresServer:
        # Under /tmp, not pytest's tmp_path: as root the server runs as `postgres`, which can't
        # enter root's private pytest folders.
        folder = Path(tempfile.mkdtemp(prefix="tenantry-pg-"))
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        server = cls(bin_, folder, free_port())
        server._run("initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "-N")
        return server

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        data, log = str(self.folder / "data"), str(self.folder / "postgres.log")
        self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: every backend killed at once, no checkpoint: a crash, as far as the
        clients and the data can tell."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
