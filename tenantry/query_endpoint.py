"""The query service on the bus: `tenantry.query.<name>` request/reply in a queue group, and
`serve_views`, which runs it together with the projection runner that feeds its views."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from eventsourcing.persistence import ApplicationRecorder
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from projections.queries import QUERIES, Answer, QueryParams, answer_query
from projections.runner import Progress, ProjectionRunner
from projections.store import ViewStore
from tenantry import wire
from tenantry.audit_proofs import PROOF_QUERIES
from tenantry.discovery import Discovery, EndpointCounters
from tenantry.dispatch import BoundedDispatch
from tenantry.metrics import Metrics, sample_lag

QUERY_SUBJECT_PREFIX = "tenantry.query."
DEFAULT_WAIT_SECONDS = 5.0
# How often a reader waiting for a position looks again when no runner tells it of progress.
_FIRST_LOOK = 0.005
_LAST_LOOK = 0.1

log = structlog.get_logger("tenantry.query")


class QueryEndpoint:
    """Answers every query subject from the view store; many instances share the load.

    `runner_position_fn` tells how far the views have got (called in a worker thread: it may
    read the database). `progress`, when the runner runs in this process, wakes waiting readers
    as soon as a batch is applied; without it they look again with a short backoff. `wakeup`
    is set when a reader waits, so that an idle runner in this process looks at the log now."""

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
        metrics: Metrics | None = None,
    ) -> None:
        self._nc = nc
        self._store = store
        self._metrics = metrics
        self.counters = EndpointCounters("queries", QUERY_SUBJECT_PREFIX + "*", queue_group)
        self._position = runner_position_fn
        self._queue_group = queue_group
        self._progress = progress
        self._wakeup = wakeup
        self._dispatch = BoundedDispatch(self._handle, max_in_flight)
        self._subscription: Subscription | None = None
        self._closing = asyncio.Event()

    async def start(self) -> None:
        self._closing.clear()
        self._subscription = await self._nc.subscribe(
            QUERY_SUBJECT_PREFIX + "*", queue=self._queue_group, cb=self._dispatch.take
        )
        log.info("query_service.started", queue_group=self._queue_group)

    async def stop(self) -> None:
        """Stop taking requests, answer those already taken (readers still waiting for a
        position get `timeout` at once), then return."""
        self._closing.set()
        if self._subscription is not None:
            await self._subscription.drain()  # type: ignore[no-untyped-call]
            self._subscription = None
        await self._dispatch.drain()
        log.info("query_service.stopped")

    async def _handle(self, msg: Msg) -> None:
        if msg.subject.removeprefix(QUERY_SUBJECT_PREFIX) in PROOF_QUERIES:
            return  # the checkpoints role answers these (it holds the Merkle tree)
        started = time.perf_counter()
        started_ns = time.perf_counter_ns()
        name = msg.subject.removeprefix(QUERY_SUBJECT_PREFIX)
        code = "ok"
        try:
            found = await self._execute(name, msg.data)
            body, headers = wire.ok_reply(found.reply())
            _fits(body, self._nc.max_payload, found)
        except Exception as exc:
            code, message, details = wire.error_of(exc)
            body, headers = wire.error_reply(code, message, details)
            if code == "internal":
                log.exception("query.failed", query=name[:64])
            else:
                log.info("query.refused", query=name[:64], code=code, reason=message)
            self.counters.record(started_ns, error=f"{code}: {message}"[:200])
        else:
            self.counters.record(started_ns)
            log.debug(
                "query.answered",
                query=name,
                position=found.position,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        if self._metrics is not None:
            label = name if name in QUERIES else "unknown"  # never a label per random subject
            self._metrics.queries.labels(label, code).inc()
        if msg.reply:
            await self._nc.publish(msg.reply, body, headers=headers or None)

    async def _execute(self, name: str, data: bytes) -> Answer:
        query = QUERIES.get(name)
        if query is None:
            raise wire.WireError(
                "validation_error", f"unknown query {name[:64]!r}", queries=sorted(QUERIES)
            )
        wire.require_body_size(data)
        params: QueryParams = query.params.model_validate_json(data or b"{}")
        if params.min_position is not None:
            await self._wait_for(params.min_position, params.min_position_timeout)
        return await asyncio.to_thread(answer_query, self._store, name, params)

    async def _wait_for(self, position: int, within: float | None) -> None:
        """Until the views have applied `position`, or `within` seconds (5 by default) passed."""
        limit = DEFAULT_WAIT_SECONDS if within is None else within
        deadline = time.monotonic() + limit
        look_again = _FIRST_LOOK
        while True:
            next_batch = self._progress.next_batch() if self._progress else None
            reached = await asyncio.to_thread(self._position)
            if reached >= position:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing.is_set():
                why = "the query service is stopping" if remaining > 0 else f"in {limit:g} s"
                raise wire.WireError(
                    "timeout",
                    f"the views reached position {reached}, not {position} ({why}); "
                    "try again later",
                    position=reached,
                    min_position=position,
                    timeout=limit,
                )
            if self._wakeup is not None:
                self._wakeup.set()  # an idle runner here looks at the log now
            if next_batch is not None:
                await _first_of((next_batch, self._closing), remaining)
            else:
                await _first_of((self._closing,), min(look_again, remaining))
                look_again = min(look_again * 2, _LAST_LOOK)


async def _first_of(events: tuple[asyncio.Event, ...], within: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def serve_views(
    recorder: ApplicationRecorder,
    store: ViewStore,
    nc: Client,
    stop: asyncio.Event,
    wakeup: asyncio.Event,
    *,
    queue_group: str = "tenantry-query",
    poll_interval: float = 0.25,
    metrics: Metrics | None = None,
) -> None:
    """Feed the views from `recorder` and answer queries on `nc` until `stop` is set; then stop
    taking queries, answer those taken, and let the runner finish its batch.

    `wakeup` is set by whoever knows the log has grown (a save in this process, a PostgreSQL
    NOTIFY); the runner also polls every `poll_interval` seconds."""
    await asyncio.to_thread(store.create_tables)
    runner = ProjectionRunner(recorder, store)
    endpoint = QueryEndpoint(
        nc,
        store,
        runner.position,
        queue_group,
        progress=runner.progress,
        wakeup=wakeup,
        metrics=metrics,
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
        if sampling is not None:
            await sampling


def _fits(body: bytes, max_payload: int, found: Answer) -> None:
    """Refuse, rather than fail to send, an answer larger than the server carries."""
    if len(body) <= max_payload:
        return
    rows = len(found.data) if isinstance(found.data, list) else None
    raise wire.WireError(
        "validation_error",
        f"the answer is {len(body):,} bytes, more than the bus carries in one message "
        f"({max_payload:,}): ask for pages with `limit` and `after`",
        bytes=len(body),
        max_payload=max_payload,
        rows=rows,
    )
