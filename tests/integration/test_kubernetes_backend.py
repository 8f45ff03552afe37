"""The namespace provisioner's `kubernetes` backend on the real bus.

No Kubernetes API server can run on these machines, so the API is a small HTTP stand-in written
here: it serves only what the backend calls (server-side apply of a Namespace and of a
ServiceAccount, deletion of a Namespace) and records every request. It checks the apply
requests (content type, field manager, force) but none of the API server's other semantics;
the client library is real (lightkube), as are the bus, the command service and the relay."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tenantry.server.nats_server import NatsServer
from tests.integration.provisioning import Tenancy, running_tenancy, running_worker
from workers import BackendConfig

FQN = "prod-eu:fraud"


@dataclass
class FakeApiServer:
    """Namespaces and service accounts by name, and the requests that changed them."""

    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, list[str]], str]] = field(default_factory=list)
    fail_next: int = 0  # answer that many requests with a 500 first
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, url: str, content_type: str, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(url)
        path = parts.path.strip("/").split("/")
        with self.lock:
            self.requests.append((method, parts.path, parse_qs(parts.query), content_type))
            if self.fail_next:
                self.fail_next -= 1
                return 500, _status(500, "InternalError", "try again")
            match method, path:
                case "PATCH", ["api", "v1", "namespaces", name]:
                    self.namespaces[name] = json.loads(body)
                    return 200, self.namespaces[name]
                case "PATCH", ["api", "v1", "namespaces", ns, "serviceaccounts", name]:
                    if ns not in self.namespaces:
                        return 404, _status(404, "NotFound", f'namespaces "{ns}" not found')
                    self.service_accounts[ns, name] = json.loads(body)
                    return 200, self.service_accounts[ns, name]
                case "DELETE", ["api", "v1", "namespaces", name]:
                    if self.namespaces.pop(name, None) is None:
                        return 404, _status(404, "NotFound", f'namespaces "{name}" not found')
                    for key in [k for k in self.service_accounts if k[0] == name]:
                        del self.service_accounts[key]
                    return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            return 404, _status(404, "NotFound", f"{method} {parts.path} is not served here")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


@pytest.fixture
def api_server() -> Iterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code, answer = fake.handle(
                self.command, self.path, self.headers.get("Content-Type", ""), body
            )
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_PATCH = do_DELETE = do_GET = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@pytest.fixture
async def tenancy(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Tenancy]:
    async with running_tenancy(nats_server, tmp_path / "state") as t:
        await t.cluster()
        yield t


def kubeconfig(path: Path, servers: dict[str, str]) -> Path:
    """One context per cluster, named after it."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": c, "cluster": {"server": s}} for c, s in servers.items()],
                "contexts": [
                    {"name": c, "context": {"cluster": c, "user": "tenantry"}} for c in servers
                ],
                "users": [{"name": "tenantry", "user": {"token": "not-checked"}}],
            }
        )
    )
    return path


async def test_namespaces_are_applied_server_side_relabelled_and_deleted(
    tenancy: Tenancy, api_server: tuple[FakeApiServer, str], tmp_path: Path
) -> None:
    fake, url = api_server
    config = BackendConfig(
        namespace_backend="kubernetes",
        kubeconfig=kubeconfig(tmp_path / "kubeconfig", {"prod-eu": url}),
        backoff=(0.05,),
    )
    fake.fail_next = 1  # the first call meets a server error: retried, not failed
    async with running_worker("namespaces", tenancy.url, config):
        await tenancy.ok(
            "create_workspace",
            {
                "cluster": "prod-eu",
                "name": "fraud",
                "environment": "prod",
                "labels": {"team": "risk"},
            },
        )
        await tenancy.wait_status("workspace", FQN, "ready")
        namespace = fake.namespaces["fraud"]
        assert namespace["metadata"]["labels"]["tenantry.io/production"] == "true"
        assert namespace["metadata"]["labels"]["team"] == "risk"
        assert namespace["metadata"]["annotations"]["tenantry.io/workspace-fqn"] == FQN
        account = fake.service_accounts["fraud", "tenantry-workspace"]
        assert account["metadata"]["annotations"]["tenantry.io/subject"] == f"workspace:{FQN}"

        await tenancy.ok("set_workspace_environment", {"workspace": FQN, "environment": "dev"})
        await tenancy.wait_reports("workspace.namespace_provisioned", FQN, 2)
        labels = fake.namespaces["fraud"]["metadata"]["labels"]
        assert labels["tenantry.io/environment"] == "dev"
        assert labels["tenantry.io/production"] == "false"

        await tenancy.ok("delete_workspace", {"workspace": FQN})
        await tenancy.wait_status("workspace", FQN, "deleted")
        assert "fraud" not in fake.namespaces

    assert fake.fail_next == 0  # the server error was met, and retried past
    applies = [r for r in fake.requests if r[0] == "PATCH"]
    assert applies, fake.requests
    for _, _, query, content_type in applies:
        assert content_type == "application/apply-patch+yaml"
        assert query["fieldManager"] == ["tenantry"]
        assert query["force"] == ["true"]
    assert [r[:2] for r in fake.requests if r[0] == "DELETE"] == [
        ("DELETE", "/api/v1/namespaces/fraud")
    ]
    assert tenancy.workspace(FQN).status == "deleted"


async def test_a_cluster_without_a_kubeconfig_context_ends_as_failed(
    tenancy: Tenancy, api_server: tuple[FakeApiServer, str], tmp_path: Path
) -> None:
    fake, url = api_server
    config = BackendConfig(
        namespace_backend="kubernetes",
        kubeconfig=kubeconfig(tmp_path / "kubeconfig", {"other-cluster": url}),
    )
    async with running_worker("namespaces", tenancy.url, config):
        await tenancy.ok(
            "create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "prod"}
        )
        await tenancy.wait_status("workspace", FQN, "failed")
    detail = tenancy.events("workspace.namespace_failed", FQN)[0]["data"]["detail"]
    assert "no kubeconfig context for cluster 'prod-eu'" in detail
    assert fake.requests == []
