"""A three-node NATS JetStream cluster on loopback, as `deploy/nats.conf` configures one node of
docker-compose.yml's (a server name, the cluster `tenantry`, routes to every node), on free
ports, each node a `NatsServer` that can be killed and started again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from tenantry.server.nats_server import NatsServer, free_port

CLUSTER_NAME = "tenantry"


@dataclass
class NatsCluster:
    nodes: dict[str, NatsServer]  # by server name

    @classmethod
    def create(cls, folder: Path, size: int = 3) -> NatsCluster:
        """Configured, not started (`start`)."""
        names = [f"nats-{i}" for i in range(1, size + 1)]
        routes = {name: free_port() for name in names}
        nodes = {}
        for name in names:
            (folder / name).mkdir(parents=True, exist_ok=True)
            config = folder / name / "nats.conf"
            others = ", ".join(f"nats://127.0.0.1:{port}" for port in routes.values())
            config.write_text(
                f"server_name: {name}\n"
                f"cluster: {{\n  name: {CLUSTER_NAME}\n"
                f"  listen: 127.0.0.1:{routes[name]}\n  routes: [{others}]\n}}\n"
            )
            # JetStream and its store directory: `-js -sd` from NatsServer.
            nodes[name] = NatsServer(folder / name / "data", config=config, name=name)
        return cls(nodes)

    @property
    def url(self) -> str:
        """Every node, as TENANTRY_NATS_URL lists them."""
        return ",".join(node.url for node in self.nodes.values())

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    def start(self) -> NatsCluster:
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


async def stream_leader(nc: Client, stream: str, within: float = 30.0) -> str:
    """The server name of `stream`'s leader, once it has one (after an election, say)."""
    js = nc.jetstream(timeout=2.0)
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(APIError, NatsError, TimeoutError):
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                return info.cluster.leader
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stream} has no leader (not within {within}s)")
        await asyncio.sleep(0.1)
