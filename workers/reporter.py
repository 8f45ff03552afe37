"""Sends a worker's reports to the command service as `record_*` commands over the bus."""

from __future__ import annotations

import json
from typing import Any

import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError

from tenantry.protocol import (
    ACTOR_HEADER,
    COMMAND_ID_HEADER,
    CORRELATION_ID_HEADER,
    Conflict,
    InternalError,
    NotFound,
    PreconditionFailed,
    QueryTimeout,
    command_subject,
    error_from_wire,
)
from workers.errors import PermanentError, TransientError
from workers.events import Event, Report

log = structlog.get_logger("workers.reporter")


class Reporter:
    def __init__(self, nc: Client, actor: str, timeout: float = 10.0) -> None:
        self._nc = nc
        self._actor = actor
        self._timeout = timeout

    async def send(self, report: Report, event: Event) -> str:
        """Send `report`; returns how it ended ("recorded", "replayed" or "stale").

        Raises TransientError when it should be tried again (the service is away or busy) and
        PermanentError when it never will be accepted (a bug or a misconfigured actor)."""
        headers = {COMMAND_ID_HEADER: report.command_id, ACTOR_HEADER: self._actor}
        if event.correlation_id:
            headers[CORRELATION_ID_HEADER] = event.correlation_id
        try:
            reply = await self._nc.request(
                command_subject(report.command),
                json.dumps(report.body, separators=(",", ":")).encode(),
                timeout=self._timeout,
                headers=headers,
            )
            answer: dict[str, Any] = json.loads(reply.data)
        except (NatsError, TimeoutError, ValueError) as exc:
            raise TransientError(
                f"reporting {report.command}: {type(exc).__name__}: {exc}"
            ) from exc
        if answer.get("ok"):
            return "replayed" if answer.get("replayed") else "recorded"
        refusal = error_from_wire(answer.get("error") or {})
        if isinstance(refusal, PreconditionFailed | NotFound):
            # The report is about a state that has moved on (provisioned, then deleted since):
            # the later event has its own action and report.
            log.info("worker.report_stale", command=report.command, reason=refusal.message)
            return "stale"
        if isinstance(refusal, Conflict) and "first_command" in refusal.details:
            # This id was recorded before with another body (a reason worded differently on a
            # redelivery): the outcome is on record already.
            return "replayed"
        if isinstance(refusal, Conflict | InternalError | QueryTimeout):
            raise TransientError(f"reporting {report.command}: {refusal}")
        raise PermanentError(f"{report.command} refused: {refusal}")
