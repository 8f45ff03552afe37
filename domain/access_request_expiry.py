"""The scheduler's due work for access requests: `access_request.expired` for every request
still pending at its deadline (`domain.due`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from domain.commands import ExpireAccessRequest
from domain.due import DueCommand, due_command_id, due_work, parse_time


@due_work
class RequestExpiry:
    """The deadlines of the pending requests: request id -> when it expires."""

    def __init__(self) -> None:
        self._deadlines: dict[str, datetime] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        kind, request = body["type"], str(body["fqn"])
        if kind == "access_request.opened":
            opened = parse_time(str(body["occurred_at"]))
            ttl = timedelta(seconds=int(body["data"]["ttl_seconds"]))
            self._deadlines[request] = opened + ttl
        elif kind in _CLOSING or (kind == "access_request.approved" and body["data"]["granted"]):
            self._deadlines.pop(request, None)

    def due(self, at: datetime) -> list[DueCommand]:
        return [
            DueCommand(
                ExpireAccessRequest(request=request),
                due_command_id("access_request.expired", request),
            )
            for request, deadline in sorted(self._deadlines.items(), key=lambda item: item[1])
            if deadline <= at
        ]


_CLOSING = frozenset(
    {"access_request.denied", "access_request.cancelled", "access_request.expired"}
)
