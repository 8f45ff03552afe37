"""The scheduler's due work for access requests: `access_request.expired` for every request
still pending at its deadline (`domain.due`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from domain.access_request import AccessRequest
from domain.commands import ExpireAccessRequest
from domain.due import DueCommand, due_command_id, due_work, event_type, events_of, parse_time

# What closes a request whatever it says.
_CLOSING = events_of(AccessRequest, "Denied", "Cancelled", "Expired")


@due_work
class RequestExpiry:
    """The deadlines of the pending requests: request id -> when it expires."""

    observes: ClassVar[tuple[type[Any], ...]] = (
        AccessRequest.Opened,
        AccessRequest.Approved,  # the approval that grants closes it
        *_CLOSING,
    )

    def __init__(self) -> None:
        self._deadlines: dict[str, datetime] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        kind = body["type"]
        if kind == _OPENED:
            opened = parse_time(str(body["occurred_at"]))
            ttl = timedelta(seconds=int(body["data"]["ttl_seconds"]))
            self._deadlines[str(body["fqn"])] = opened + ttl
        elif kind in _CLOSED or (kind == _APPROVED and body["data"]["granted"]):
            self._deadlines.pop(str(body["fqn"]), None)

    def due(self, at: datetime) -> list[DueCommand]:
        return [
            DueCommand(
                ExpireAccessRequest(request=request),
                due_command_id("access_request.expired", request),
            )
            for request, deadline in sorted(self._deadlines.items(), key=lambda item: item[1])
            if deadline <= at
        ]


_OPENED, _APPROVED = event_type(AccessRequest.Opened), event_type(AccessRequest.Approved)
_CLOSED = frozenset(event_type(closing) for closing in _CLOSING)
