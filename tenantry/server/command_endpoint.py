"""The command service on the bus: `tenantry.cmd.<name>` request/reply in a queue group, and
`tenantry.cmd.apply`, many commands in one request (all or nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from domain.base import CommandContext
from domain.commands import COMMANDS, Command
from domain.service import TenancyService
from tenantry.protocol import (
    ACTOR_HEADER,
    APPLY,
    COMMAND_ID_HEADER,
    COMMAND_PREFIX,
    CORRELATION_ID_HEADER,
    DENIED_PREFIX,
    ApplyReply,
    CommandReply,
    Forbidden,
    InternalError,
    InvalidRequest,
)
from tenantry.server import wire
from tenantry.server.discovery import EndpointCounters
from tenantry.server.dispatch import BoundedDispatch, drain_subscription, subscribe_flushed
from tenantry.server.identity import DEFAULT_ACTOR, ActorPolicy
from tenantry.server.metrics import Metrics

log = structlog.get_logger("tenantry.command")


@dataclass
class _Pending:
    command: Command
    context: CommandContext
    outcome: asyncio.Future[CommandReply]


@dataclass
class _PendingApply:
    commands: list[Command]
    context: CommandContext
    dry_run: bool
    outcome: asyncio.Future[ApplyReply]


class CommandEndpoint:
    """Answers every command subject; many instances share the load through the queue group."""

    def __init__(
        self,
        nc: Client,
        service: TenancyService,
        queue_group: str = "tenantry-command",
        max_in_flight: int = 64,
        max_batch: int = 64,
        metrics: Metrics | None = None,
        actors: ActorPolicy | None = None,
    ) -> None:
        self._nc = nc
        self._actors = actors or ActorPolicy()
        self._service = service
        self._queue_group = queue_group
        self._dispatch = BoundedDispatch(self._handle, max_in_flight)
        self._subscription: Subscription | None = None
        # Decided commands wait here for the writer, which saves the independent ones of
        # everything waiting in one transaction (group commit) on one thread.
        self._queue: asyncio.Queue[_Pending | _PendingApply] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._max_batch = max_batch
        self._metrics = metrics
        self.counters = EndpointCounters("commands", COMMAND_PREFIX + "*", queue_group)

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_batches())
        # Started means the server knows the subscription: a request sent next is ours.
        self._subscription = await subscribe_flushed(
            self._nc, COMMAND_PREFIX + "*", self._queue_group, self._dispatch.take
        )
        log.info("command_service.started", queue_group=self._queue_group)

    async def stop(self) -> None:
        """Stop taking requests, then let those already taken finish and reply."""
        if self._subscription is not None:
            # drain, not unsubscribe: requests already delivered to us are still answered.
            subscription, self._subscription = self._subscription, None
            await drain_subscription(subscription, "command_service")
        await self._dispatch.drain()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        log.info("command_service.stopped")

    async def submit(self, command: Command, context: CommandContext) -> CommandReply:
        """Handle a command decided in this process (the scheduler's due work) as one from the
        bus is: queued for the writer, saved with the others of its batch."""
        outcome: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(command, context, outcome))
        return await outcome

    async def _write_batches(self) -> None:
        held: _Pending | _PendingApply | None = None
        while True:
            first = held or await self._queue.get()
            held = None
            if isinstance(first, _PendingApply):  # an apply is a transaction of its own
                await self._write_apply(first)
                continue
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                waiting = self._queue.get_nowait()
                if isinstance(waiting, _PendingApply):
                    held = waiting  # next, after this batch: the order they came in
                    break
                batch.append(waiting)
            items = [(p.command, p.context) for p in batch]
            try:
                results = await asyncio.to_thread(self._service.handle_batch, items)
            except Exception as exc:  # the store failed: every command of the batch did too
                for pending in batch:
                    pending.outcome.set_exception(exc)
                continue
            for pending, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    pending.outcome.set_exception(result)
                else:
                    pending.outcome.set_result(result)

    async def _write_apply(self, pending: _PendingApply) -> None:
        try:
            result = await asyncio.to_thread(
                self._service.apply, pending.commands, pending.context, dry_run=pending.dry_run
            )
        except Exception as exc:
            pending.outcome.set_exception(exc)
        else:
            pending.outcome.set_result(result)

    async def _handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        started_ns = time.perf_counter_ns()
        name = msg.subject.removeprefix(COMMAND_PREFIX)
        code = "ok"
        headers = msg.headers or {}
        command_id = headers.get(COMMAND_ID_HEADER) or str(uuid.uuid4())
        correlation_id = headers.get(CORRELATION_ID_HEADER) or command_id
        actor_refusal: Exception | None = None
        try:
            actor = self._actors.actor_of(headers)
        except Exception as exc:  # refused below, with the claim kept for the audit
            actor, actor_refusal = (headers.get(ACTOR_HEADER) or DEFAULT_ACTOR)[:300], exc
        structlog.contextvars.bind_contextvars(
            command=name[:64],
            command_id=command_id[:128],
            correlation_id=correlation_id[:128],
            actor=actor[:300],
        )
        try:
            if actor_refusal is not None:
                raise actor_refusal
            reply = await self._execute(name, msg.data, command_id, correlation_id, actor)
        except Exception as exc:
            refusal = wire.error_of(exc)
            code, message = refusal.code, refusal.message
            body, reply_headers = wire.error_reply(refusal)
            if isinstance(refusal, InternalError):
                log.exception("command.failed")
            else:
                log.info("command.refused", code=code, reason=message)
            if isinstance(refusal, Forbidden):
                # In an apply, the command that was refused.
                denied = str(refusal.details.get("command", name)) if name == APPLY else name
                await self._publish_denied(denied, actor, command_id, correlation_id, message)
            self.counters.record(started_ns, error=f"{code}: {message}"[:200])
        else:
            body, reply_headers = wire.command_ok_reply(reply)
            self.counters.record(started_ns)
            log.info(
                "command.handled",
                position=reply["position"],
                replayed=reply["replayed"],
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        finally:
            structlog.contextvars.clear_contextvars()
        if self._metrics is not None:
            # Never a label per random subject.
            label = name if name in COMMANDS or name == APPLY else "unknown"
            self._metrics.commands.labels(label, code).inc()
            self._metrics.command_seconds.labels(label).observe(time.perf_counter() - started)
        if msg.reply:
            await self._nc.publish(msg.reply, body, headers=reply_headers or None)

    async def _execute(
        self, name: str, data: bytes, command_id: str, correlation_id: str, actor: str
    ) -> dict[str, Any]:
        """The reply's fields (all but `ok`)."""
        model = COMMANDS.get(name)
        if model is None and name != APPLY:
            raise InvalidRequest(f"unknown command {name[:64]!r}", commands=sorted(COMMANDS))
        if model is not None:
            wire.require_body_size(data)
        for header, value in (
            (COMMAND_ID_HEADER, command_id),
            (CORRELATION_ID_HEADER, correlation_id),
        ):
            if not wire.is_valid_id(value):
                raise InvalidRequest(
                    f"{header} must be 1-128 letters, digits or ._:@/+=-",
                    header=header,
                )
        context = CommandContext(actor=actor, command_id=command_id, correlation_id=correlation_id)
        if model is None:
            return await self._execute_apply(data, context)
        command = model.model_validate_json(data or b"{}")
        outcome: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(command, context, outcome))
        return (await outcome).model_dump()

    async def _execute_apply(self, data: bytes, context: CommandContext) -> dict[str, Any]:
        commands, dry_run = wire.read_apply(data)
        outcome: asyncio.Future[ApplyReply] = asyncio.get_running_loop().create_future()
        await self._queue.put(_PendingApply(commands, context, dry_run, outcome))
        return (await outcome).model_dump()

    async def _publish_denied(
        self, name: str, actor: str, command_id: str, correlation_id: str, reason: str
    ) -> None:
        record: dict[str, Any] = {
            "command": name,
            "actor": actor,
            "command_id": command_id,
            "correlation_id": correlation_id,
            "reason": reason,
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        await self._nc.publish(DENIED_PREFIX + name, wire.dumps(record))
