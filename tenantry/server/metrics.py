"""Prometheus metrics of one process: commands, queries, relay and projection lag, workers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tenantry.server.nats_server import PortInUse


@dataclass
class Metrics:
    """One registry per process (never the library's global one), created by the composition
    root and handed to whatever counts."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.commands = Counter(
            "tenantry_commands",
            "Commands answered, by command and result code",
            ["command", "result"],
            registry=r,
        )
        self.command_seconds = Histogram(
            "tenantry_command_seconds",
            "Time from request to reply, by command",
            ["command"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.queries = Counter(
            "tenantry_queries",
            "Queries answered, by query and result code",
            ["query", "result"],
            registry=r,
        )
        self.relay_lag = Gauge(
            "tenantry_relay_lag_positions",
            "Store positions written but not yet on the stream (includes internal records)",
            registry=r,
        )
        self.relay_published = Counter(
            "tenantry_relay_published_events", "Events the relay published", registry=r
        )
        self.stream_findings = Counter(
            "tenantry_stream_findings",
            "Messages on the event stream that are not the store's events, by kind "
            "(foreign, altered: someone wrote them; missing, out_of_place: events lost)",
            ["kind"],
            registry=r,
        )
        self.chain_disagreements = Counter(
            "tenantry_chain_disagreements",
            "Events for which the views' chain hash differs from the stream's message at the "
            "same position (the views and the relay read different logs)",
            registry=r,
        )
        self.projection_lag = Gauge(
            "tenantry_projection_lag_positions",
            "Store positions written but not yet applied to the read models",
            registry=r,
        )
        self.worker_outcomes = Counter(
            "tenantry_worker_outcomes",
            "Worker actions, by worker and outcome",
            ["worker", "outcome"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on `host:port` (port 0: don't); `PortInUse` when the port is taken."""
        if port:
            try:
                start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(port, "TENANTRY_METRICS_PORT") from exc
                raise


async def sample_lag(
    gauge: Gauge,
    head: Callable[[], int | None],
    reached: Callable[[], int],
    stop: asyncio.Event,
    every: float = 1.0,
) -> None:
    """Set `gauge` to how far `reached()` is behind the log's `head()`, every `every` s."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a metric must never take its process down
            gauge.set(
                max(0, (await asyncio.to_thread(head) or 0) - await asyncio.to_thread(reached))
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()
