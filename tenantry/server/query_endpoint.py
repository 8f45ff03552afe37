"""The query service on the bus: `tenantry.query.<name>` request/reply in a queue group, and
`serve_views`, which runs it together with the projection runner that feeds its views."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from domain.authorization import Authorization
from domain.event_log import NotificationLog
from domain.waiting import StreamMark, first_of
from projections.queries import QUERIES, Answer, answer_query
from projections.query_params import QueryParams
from projections.runner import Progress, ProjectionRunner, TakeRows
from projections.store import ViewStore
from tenantry.audit.proofs import PROOF_QUERIES
from tenantry.log.agreement import ChainAgreement
from tenantry.protocol import (
    QUERY_PREFIX,
    TIMEOUT_HEADER,
    InternalError,
    InvalidRequest,
    QueryTimeout,
)
from tenantry.server import wire
from tenantry.server.discovery import Discovery, EndpointCounters
from tenantry.server.dispatch import (
    FairDispatch,
    Request,
    drain_subscription,
    subscribe_flushed,
)
from tenantry.server.metrics import Metrics, sample_lag

DEFAULT_WAIT_SECONDS = 5.0
# How often a reader waiting for a position looks again when no runner tells it of progress.
_FIRST_LOOK = 0.005
_LAST_LOOK = 0.1

log = structlog.get_logger("tenantry.query")
T = TypeVar("T")


class QueryEndpoint:
    """Answers every query subject from the view store; many instances share the load.

    `runner_position_fn` tells how far the views have got (called in a worker thread: it may
    read the database). `progress`, when the runner runs in this process, wakes waiting readers
    as soon as a batch is applied; without it they look again with a short backoff. `wakeup`
    is set when a reader waits, so that an idle runner in this process looks at the log now.

    One client can't hold the others up: requests are answered round-robin across requesters
    (`FairDispatch`), one whose sender has stopped waiting (its `Tenantry-Timeout`) is dropped,
    a reader waiting for `min_position` holds none of the `max_in_flight` answering slots (at
    most `max_waiting` wait at once), and the views are read on `threads` threads of the
    endpoint's own, so a query backlog never takes the threads the command service saves on."""

    def __init__(
        self,
        nc: Client,
        store: ViewStore,
        runner_position_fn: Callable[[], int],
        queue_group: str = "tenantry-query",
        *,
        progress: Progress | None = None,
        wakeup: asyncio.Event | None = None,
        max_in_flight: int = 64,
        max_waiting: int = 10_000,
        threads: int = 4,
        metrics: Metrics | None = None,
        authorization: Authorization | None = None,
    ) -> None:
        self._nc = nc
        self._store = store
        # The tenant's admins (TENANTRY_ADMINS), as the command service knows them: "requests I
        # can approve" and "items waiting for me" answer by the same rule as the commands.
        self._authorization = authorization or Authorization()
        self._metrics = metrics
        self.counters = EndpointCounters("queries", QUERY_PREFIX + "*", queue_group)
        self._position = runner_position_fn
        self._queue_group = queue_group
        self._progress = progress
        self._wakeup = wakeup
        self._dispatch = FairDispatch(
            self._answer,
            max_in_flight,
            timeout_header=TIMEOUT_HEADER,
            on_expired=self._expired,
        )
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._max_waiting = max_waiting
        self._waiting: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None
        self._closing = asyncio.Event()
        self.expired = 0  # requests dropped because their sender had stopped waiting

    @property
    def waiting(self) -> int:
        """Readers waiting for a position (holding no answering slot)."""
        return len(self._waiting)

    async def start(self) -> None:
        self._closing.clear()
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="tenantry-query")
        self._dispatch.start()
        # Started means the server knows the subscription: a request sent next is ours.
        self._subscription = await subscribe_flushed(
            self._nc, QUERY_PREFIX + "*", self._queue_group, self._take
        )
        log.info("query_service.started", queue_group=self._queue_group)

    async def stop(self) -> None:
        """Stop taking requests, finish those being answered (readers still waiting for a
        position get `timeout` at once), drop those queued (their senders ask again), return."""
        self._closing.set()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await drain_subscription(subscription, "query_service")
        if self._waiting:
            await asyncio.gather(*self._waiting, return_exceptions=True)
        await self._dispatch.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        log.info("query_service.stopped")

    async def _take(self, msg: Msg) -> None:
        """The subscription callback: queue the request, unless another role answers it."""
        if msg.subject.removeprefix(QUERY_PREFIX) in PROOF_QUERIES:
            return  # the checkpoints role answers these (it holds the Merkle tree)
        await self._dispatch.take(msg)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the endpoint's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _answer(self, request: Request) -> None:
        msg = request.msg
        name = msg.subject.removeprefix(QUERY_PREFIX)
        try:
            params = self._parse(name, msg.data)
            wanted = params.min_position
            found: Answer | None = None
            if (
                wanted is None
                or self._applied_here(wanted)
                or (not self._batch_coming() and await self._run(self._position) >= wanted)
            ):
                found = await self._run(
                    answer_query, self._store, name, params, self._authorization
                )
                if wanted is not None and found.position < wanted:
                    # The store is behind what was known of it: views swapped in since (their
                    # runner goes on from their own position). Wait, as any reader behind.
                    if self._progress is not None:
                        self._progress.behind(found.position)
                    found = None
            if found is None:
                assert wanted is not None
                if len(self._waiting) >= self._max_waiting:
                    raise QueryTimeout(
                        f"{len(self._waiting)} readers are waiting for positions already: "
                        "try again later",
                        min_position=wanted,
                    )
                waiter = asyncio.create_task(self._wait_then_answer(request, name, params))
                self._waiting.add(waiter)
                waiter.add_done_callback(self._waiting.discard)
                return
            body, headers = wire.ok_reply(found.reply())
            _fits(body, self._nc.max_payload, found)
        except Exception as exc:
            await self._refuse(request, name, exc)
            return
        self.counters.record(_started_ns(request))
        log.debug(
            "query.answered",
            query=name,
            position=found.position,
            ms=round((time.monotonic() - request.arrived) * 1000, 2),
        )
        self._count(name, "ok")
        await self._reply(msg, body, headers)

    async def _wait_then_answer(self, request: Request, name: str, params: QueryParams) -> None:
        """Wait (holding no slot) until the views reach the reader's position, then queue the
        request again to be answered in turn; or answer `timeout`, or drop it when its sender
        has stopped waiting first."""
        assert params.min_position is not None
        try:
            reached = await self._wait_for(
                params.min_position, params.min_position_timeout, request
            )
        except Exception as exc:
            await self._refuse(request, name, exc)
            return
        if not reached:
            self._expired(request)
        elif self._closing.is_set():
            await self._refuse(request, name, _stopping())
        else:
            self._dispatch.put(request)

    async def _refuse(self, request: Request, name: str, exc: Exception) -> None:
        refusal = wire.error_of(exc)
        code, message = refusal.code, refusal.message
        body, headers = wire.error_reply(refusal)
        if isinstance(refusal, InternalError):
            log.error("query.failed", query=name[:64], exc_info=exc)
        else:
            log.info("query.refused", query=name[:64], code=code, reason=message)
        self.counters.record(_started_ns(request), error=f"{code}: {message}"[:200])
        self._count(name, code)
        await self._reply(request.msg, body, headers)

    def _expired(self, request: Request) -> None:
        self.expired += 1
        name = request.msg.subject.removeprefix(QUERY_PREFIX)
        log.info(
            "query.expired",
            query=name[:64],
            age=round(time.monotonic() - request.arrived, 3),
            max_age=request.max_age,
        )
        self._count(name, "expired")

    def _count(self, name: str, code: str) -> None:
        if self._metrics is not None:
            label = name if name in QUERIES else "unknown"  # never a label per random subject
            self._metrics.queries.labels(label, code).inc()

    async def _reply(self, msg: Msg, body: bytes, headers: dict[str, str]) -> None:
        if not msg.reply:
            return
        try:
            await self._nc.publish(msg.reply, body, headers=headers or None)
        except Exception as exc:  # the connection is closing: the sender asks again
            log.warning("query.reply_failed", error=f"{type(exc).__name__}: {exc}")

    def _parse(self, name: str, data: bytes) -> QueryParams:
        query = QUERIES.get(name)
        if query is None:
            raise InvalidRequest(f"unknown query {name[:64]!r}", queries=sorted(QUERIES))
        wire.require_body_size(data)
        params: QueryParams = query.params.model_validate_json(data or b"{}")
        return params

    def _applied_here(self, position: int) -> bool:
        """Whether the runner in this process has applied `position` (known without a read)."""
        return self._progress is not None and self._progress.position >= position

    def _batch_coming(self) -> bool:
        """Whether the runner in this process is applying a batch (or about to): a reader
        behind it waits for that batch rather than reading the store's position in a thread
        meanwhile (two thread hops, competing with the batch, whose end wakes the reader)."""
        return self._progress is not None and self._progress.applying

    async def _wait_for(self, position: int, within: float | None, request: Request) -> bool:
        """Until the views have applied `position` (True), or `within` seconds (5 by default)
        passed (a `timeout` error), or the sender stopped waiting first (False)."""
        limit = DEFAULT_WAIT_SECONDS if within is None else within
        deadline = time.monotonic() + limit
        gone_at = request.arrived + request.max_age
        look_again = _FIRST_LOOK
        while True:
            next_batch = self._progress.next_batch() if self._progress else None
            if self._applied_here(position):
                return True
            if self._batch_coming():
                assert self._progress is not None
                reached = self._progress.position
            else:
                reached = await self._run(self._position)
                if reached >= position:
                    return True
            now = time.monotonic()
            if gone_at < deadline and now >= gone_at:
                return False
            remaining = min(deadline, gone_at) - now
            if remaining <= 0 or self._closing.is_set():
                raise (
                    _stopping()
                    if self._closing.is_set()
                    else QueryTimeout(
                        f"the views reached position {reached}, not {position} (in {limit:g} s); "
                        "try again later",
                        position=reached,
                        min_position=position,
                        timeout=limit,
                    )
                )
            if self._wakeup is not None and not (self._progress and self._progress.applying):
                # An idle runner here looks at the log now. Not one applying a batch: it looks
                # again anyway if a commit here came since (its wake-up), or this reader, after
                # that batch, sets it then (a look now would be a second, empty transaction,
                # competing with this very answer).
                self._wakeup.set()
            if next_batch is not None:
                await first_of(next_batch, self._closing, within=remaining)
            else:
                await first_of(self._closing, within=min(look_again, remaining))
                look_again = min(look_again * 2, _LAST_LOOK)


def _stopping() -> QueryTimeout:
    return QueryTimeout("the query service is stopping; try again (another instance answers)")


def _started_ns(request: Request) -> int:
    """When the request arrived, on the clock EndpointCounters measure with."""
    return time.perf_counter_ns() - int((time.monotonic() - request.arrived) * 1e9)


async def serve_views(
    recorder: NotificationLog,
    store: ViewStore,
    nc: Client,
    stop: asyncio.Event,
    wakeup: asyncio.Event,
    *,
    queue_group: str = "tenantry-query",
    poll_interval: float = 0.25,
    metrics: Metrics | None = None,
    chain_check_every: float = 5.0,
    take_rows: TakeRows | None = None,
    after: StreamMark | None = None,
    authorization: Authorization | None = None,
) -> None:
    """Feed the views from `recorder` and answer queries on `nc` until `stop` is set; then stop
    taking queries, answer those taken, and let the runner finish its batch. Every
    `chain_check_every` seconds the views' last event is compared with the stream's
    (`tenantry.log.agreement`).

    `wakeup` is set by whoever knows the log has grown (a save in this process, a PostgreSQL
    NOTIFY); the runner also polls every `poll_interval` seconds. `take_rows` gives it the rows
    this process commits (handed over with the wake-up), which it then need not read back;
    `after`, how far the relay of this process has published them, which the runner lets go
    first."""
    await asyncio.to_thread(store.create_tables)
    runner = ProjectionRunner(recorder, store, take_rows=take_rows, after=after)
    endpoint = QueryEndpoint(
        nc,
        store,
        runner.position,
        queue_group,
        progress=runner.progress,
        wakeup=wakeup,
        metrics=metrics,
        authorization=authorization,
    )
    discovery = Discovery(nc, "tenantry-query", "Tenantry queries", [endpoint.counters])
    # The runner has its own stop, so that it outlives the endpoint's drain (queries being
    # answered may wait for it) and so that nothing here sets the caller's `stop`.
    halt = asyncio.Event()
    running = asyncio.create_task(runner.run(halt, wakeup, poll_interval))
    stopping = asyncio.ensure_future(stop.wait())
    sampling = (
        asyncio.create_task(
            sample_lag(metrics.projection_lag, recorder.max_notification_id, runner.position, halt)
        )
        if metrics is not None
        else None
    )
    agreement = ChainAgreement(store, nc, metrics=metrics)
    checking = asyncio.create_task(agreement.run(halt, every=chain_check_every))
    try:
        await endpoint.start()
        await discovery.start()
        # The runner ends only when halted, or by an unexpected error: then stop answering too.
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        await discovery.stop()
        await endpoint.stop()
        halt.set()
        await running
        # Not awaited to its end: a look at the stream may wait for a bus that is away.
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checking
        if sampling is not None:
            await sampling


def _fits(body: bytes, max_payload: int, found: Answer) -> None:
    """Refuse, rather than fail to send, an answer larger than the server carries."""
    if len(body) <= max_payload:
        return
    rows = len(found.data) if isinstance(found.data, list) else None
    raise InvalidRequest(
        f"the answer is {len(body):,} bytes, more than the bus carries in one message "
        f"({max_payload:,}): ask for pages with `limit` and `after`",
        bytes=len(body),
        max_payload=max_payload,
        rows=rows,
    )
