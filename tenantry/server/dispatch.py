"""Requests handled concurrently, a bounded number at a time: `BoundedDispatch` (commands, in
arrival order) and `FairDispatch` (queries, round-robin across requesters, stale ones dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger("tenantry.server.dispatch")


async def subscribe_flushed(
    nc: Client, subject: str, queue: str, cb: Callable[[Msg], Awaitable[None]]
) -> Subscription:
    """A service's subscription, known to the server when this returns (a flush): a request
    sent next, by any connection, finds it. Bounded (2 s) and never failing: with the bus away
    the subscription is still made, and the client sends it on reconnecting."""
    subscription = await nc.subscribe(subject, queue=queue, cb=cb)
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    return subscription


async def drain_subscription(subscription: Subscription, service: str) -> None:
    """Stop a service's subscription taking requests, letting those the server already sent
    arrive (a drain), but bounded: with the bus unreachable a drain's flush waits for a server
    that is away, and a stopping process must not fail or hang on that."""
    try:
        async with asyncio.timeout(2):
            await subscription.drain()  # type: ignore[no-untyped-call]
    except Exception as exc:
        log.warning(f"{service}.drain_failed", error=f"{type(exc).__name__}: {exc}")


class BoundedDispatch:
    """`take` (a subscription callback) runs `handle(msg)` as a task of its own, at most `limit`
    at once. Past that the callback waits for a free slot, so that a flood queues in the client
    (nats-py's pending buffer, with its limits), not in memory as tasks."""

    def __init__(self, handle: Callable[[Msg], Awaitable[None]], limit: int) -> None:
        self._handle = handle
        self._slots = asyncio.Semaphore(limit)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def take(self, msg: Msg) -> None:
        """The subscription callback."""
        await self._slots.acquire()
        task = asyncio.create_task(self._run(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    async def _run(self, msg: Msg) -> None:
        await self._handle(msg)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def drain(self) -> None:
        """Until every message taken so far is handled (stop taking new ones first)."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)


REQUEST_INFO_HEADER = "Nats-Request-Info"
# The longest a request is kept before it is answered when its sender did not say how long
# it waits (the Tenantry-Timeout header, docs/decisions.md): past that, nobody is listening.
DEFAULT_MAX_AGE = 60.0
_LONGEST_MAX_AGE = 600.0


def requester_of(msg: Msg) -> str:
    """Who sent a request, for fairness: the NATS user the server stamped on it (a client
    reaching us through a service import), else the connection it came from (the reply
    subject's prefix, shared by every request of one nats-py connection)."""
    headers = msg.headers or {}
    stamp = headers.get(REQUEST_INFO_HEADER)
    if stamp:
        return "user:" + stamp[:400]
    reply = msg.reply or ""
    return "inbox:" + reply.rpartition(".")[0][:400]


def max_age_of(msg: Msg, header: str) -> float:
    """How long the sender waits for the answer (its `header`, in seconds), or the default."""
    raw = (msg.headers or {}).get(header)
    if raw is None:
        return DEFAULT_MAX_AGE
    try:
        seconds = float(raw)
    except ValueError:
        return DEFAULT_MAX_AGE
    if not math.isfinite(seconds) or seconds <= 0:  # not a time anyone waits: as if absent
        return DEFAULT_MAX_AGE
    return min(seconds, _LONGEST_MAX_AGE)


@dataclass(frozen=True)
class Request:
    msg: Msg
    arrived: float  # time.monotonic() when it reached this process
    max_age: float

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.arrived > self.max_age


class FairDispatch:
    """Requests answered by `limit` workers, taken round-robin across requesters, so that one
    client's flood delays others by at most one request each per round, not by its whole
    backlog; a request whose sender has stopped waiting is dropped (`on_expired`), never
    answered into the void.

    `take` (the subscription callback) never waits: nats-py calls callbacks one at a time, and a
    callback that waited for a slot held every later request, a cheap one of another client
    included, behind it. The queue is bounded per requester (`per_requester`): past that the
    newest request of that requester is dropped, as an expired one would be; so is any request
    past `max_queued` in all."""

    def __init__(
        self,
        handle: Callable[[Request], Awaitable[None]],
        limit: int,
        *,
        timeout_header: str,
        on_expired: Callable[[Request], None],
        per_requester: int = 1000,
        max_queued: int = 50_000,
    ) -> None:
        self._handle = handle
        self._limit = limit
        self._timeout_header = timeout_header
        self._on_expired = on_expired
        self._per_requester = per_requester
        self._max_queued = max_queued
        self._queued = 0
        self._queues: dict[str, deque[Request]] = {}
        self._turns: deque[str] = deque()  # requesters with queued requests, in turn order
        # One permit per request queued: it wakes one idle worker, not all `limit` of them
        # (an Event set for every request woke every worker, each to find nothing but one).
        self._ready = asyncio.Semaphore(0)
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._stopping = False
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._limit)]

    async def take(self, msg: Msg) -> None:
        """The subscription callback."""
        self.put(Request(msg, time.monotonic(), max_age_of(msg, self._timeout_header)))

    def put(self, request: Request) -> None:
        """Queue `request` (again, after a wait that held no worker, with its first arrival)."""
        if self._queued >= self._max_queued:
            self._on_expired(request)
            return
        key = requester_of(request.msg)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._turns.append(key)
        if len(queue) >= self._per_requester:
            self._on_expired(request)
            return
        queue.append(request)
        self._queued += 1
        self._ready.release()

    def _next(self) -> Request | None:
        while self._turns:
            key = self._turns.popleft()
            queue = self._queues[key]
            request = queue.popleft()
            self._queued -= 1
            if queue:
                self._turns.append(key)  # its next one waits for everyone else's turn
            else:
                del self._queues[key]
            if request.expired:
                self._on_expired(request)
                continue
            return request
        return None

    async def _work(self) -> None:
        while not self._stopping:
            request = self._next()
            if request is None:
                await self._ready.acquire()
                continue
            try:
                await self._handle(request)
            except Exception:  # a handler answers its own errors; this is a bug's last stop
                log.exception("dispatch.handler_failed", subject=request.msg.subject[:200])

    async def stop(self) -> None:
        """Answer what is being answered, drop what is queued (its senders ask again, another
        instance answers), then end the workers."""
        dropped = self.queued
        self._queues.clear()
        self._turns.clear()
        self._queued = 0
        self._stopping = True
        for _ in self._workers:
            self._ready.release()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if dropped:
            log.info("dispatch.dropped_on_stop", requests=dropped)
