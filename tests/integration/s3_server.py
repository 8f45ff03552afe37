"""A real S3-speaking server for the storage tests (moto's standalone server, as a process),
and a proxy in front of it that counts the requests a worker makes (and can play an outage, or
AWS refusing a bucket policy that names a principal IAM does not know).

moto (5.2.5) stores any bucket policy as it is sent: `put_bucket_policy` checks no principal
and no setting turns a check on (its IAM policy validator serves IAM's own policies, not S3's).
AWS answers such a policy `400 MalformedPolicy: Invalid principal in policy`; the proxy plays
that answer for the principals in `refused_principals`."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tenantry.server.nats_server import _die_with_parent, free_port

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass
class MotoServer:
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        moto = Path(sys.executable).parent / "moto_server"
        with self.log.open("ab") as out:
            # Dies with the test process, even a killed one: no server left holding its port.
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"moto_server did not listen within {timeout}s")

    def reset(self) -> None:
        """Forget every bucket: each test starts from an empty S3."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class CountingProxy:
    """Forwards every request to `upstream` and counts it by method and S3 operation."""

    def __init__(self, upstream_port: int) -> None:
        self.requests: list[tuple[str, str]] = []
        self.policies: list[bytes] = []  # the body of every bucket policy PUT, in order
        self.failing = 0  # answer that many requests with a 503 instead of forwarding them
        # Bucket policies naming any of these ARNs are refused as AWS refuses unknown ones.
        self.refused_principals: set[str] = set()
        self.refused_policies = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: without TCP_NODELAY each answer
            # waits out the client's delayed ACK (tens of ms).
            disable_nagle_algorithm = True

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    refuse = False
                    if self.command == "PUT" and _operation(self.path) == "bucket-policy":
                        refuse = any(p.encode() in body for p in proxy.refused_principals)
                        proxy.refused_policies += refuse
                        if not refuse:
                            proxy.policies.append(body)
                    fail = proxy.failing > 0
                    proxy.failing -= 1 if fail else 0
                if fail:
                    self._answer(503, {}, b"<Error><Code>ServiceUnavailable</Code></Error>")
                    return
                if refuse:
                    self._answer(400, {"Content-Type": "application/xml"}, _INVALID_PRINCIPAL)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self._answer(answer.status, dict(answer.getheaders()), data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                length = headers.get("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for m, _ in self.requests if m == method)

    def operations(self, method: str) -> Counter[str]:
        """PUTs by what they did: `?policy` for a bucket policy, else a bucket or an object."""
        with self._lock:
            puts = [p for m, p in self.requests if m == method]
        return Counter(_operation(path) for path in puts)


_INVALID_PRINCIPAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>MalformedPolicy</Code>'
    b"<Message>Invalid principal in policy</Message></Error>"
)


def _operation(path: str) -> str:
    target, _, query = path.partition("?")
    if "policy" in query.split("&"):
        return "bucket-policy"
    return "bucket" if target.strip("/").count("/") == 0 else "object"
