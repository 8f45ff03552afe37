"""NATS micro-service discovery (`$SRV.PING|INFO|STATS`) for our endpoints.

The endpoints keep their own subscriptions (they answer many requests at once and drain on
stop, which nats-py's micro endpoints don't), so the discovery protocol is answered here, in
the micro-service schema, from counters the endpoints keep."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
)
from nats.nuid import NUID

VERSION = "0.1.0"


@dataclass
class EndpointCounters:
    """What an endpoint counts as it answers."""

    name: str
    subject: str
    queue_group: str
    num_requests: int = 0
    num_errors: int = 0
    processing_time_ns: int = 0
    last_error: str | None = None

    def record(self, started_ns: int, error: str | None = None) -> None:
        self.num_requests += 1
        self.processing_time_ns += time.perf_counter_ns() - started_ns
        if error is not None:
            self.num_errors += 1
            self.last_error = error


@dataclass
class Discovery:
    nc: Client
    name: str
    description: str
    endpoints: list[EndpointCounters]
    id: str = field(default_factory=lambda: NUID().next().decode())
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _subscriptions: list[Subscription] = field(default_factory=list)

    async def start(self) -> None:
        handlers = {"PING": self._ping, "INFO": self._info, "STATS": self._stats}
        for verb, handler in handlers.items():
            for subject in (
                f"$SRV.{verb}",
                f"$SRV.{verb}.{self.name}",
                f"$SRV.{verb}.{self.name}.{self.id}",
            ):
                self._subscriptions.append(await self.nc.subscribe(subject, cb=handler))

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()

    async def _ping(self, msg: Msg) -> None:
        ping = ServicePing(id=self.id, name=self.name, version=VERSION)
        await msg.respond(json.dumps(ping.to_dict()).encode())

    async def _info(self, msg: Msg) -> None:
        info = ServiceInfo(
            name=self.name,
            id=self.id,
            version=VERSION,
            description=self.description,
            endpoints=[
                EndpointInfo(name=e.name, subject=e.subject, queue_group=e.queue_group)
                for e in self.endpoints
            ],
        )
        await msg.respond(json.dumps(info.to_dict()).encode())

    async def _stats(self, msg: Msg) -> None:
        stats = ServiceStats(
            id=self.id,
            name=self.name,
            version=VERSION,
            started=self.started,
            endpoints=[
                EndpointStats(
                    name=e.name,
                    subject=e.subject,
                    queue_group=e.queue_group,
                    num_requests=e.num_requests,
                    num_errors=e.num_errors,
                    processing_time=e.processing_time_ns,
                    average_processing_time=e.processing_time_ns // max(e.num_requests, 1),
                    last_error=e.last_error,
                )
                for e in self.endpoints
            ],
        )
        await msg.respond(json.dumps(stats.to_dict()).encode())
