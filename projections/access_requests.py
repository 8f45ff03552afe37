"""The access requests view: each request as it stands, with its approvals and how it closed
(`list_access_requests`, `get_access_request`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from domain.event_log import Published
from projections import schema as t
from projections.audit import utc_text, utc_text_of
from projections.event_handlers import EventHandlers
from projections.store import Writes, update_by_key

Body = dict[str, Any]
_Handler = Callable[[Writes, Body], None]
_HANDLERS: EventHandlers[_Handler] = EventHandlers()
_on = _HANDLERS.on


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """The batch's writes are held and run at its end, a run of one statement at a time."""
    writes = Writes(conn)
    _HANDLERS.apply(writes, events)
    writes.flush()


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@_on("access_request.opened")
def _opened(writes: Writes, body: Body) -> None:
    data = body["data"]
    opened_at = utc_text_of(body["occurred_at"])
    expires_at = _moment(body["occurred_at"]) + timedelta(seconds=data["ttl_seconds"])
    writes.upsert(
        t.access_requests,
        {
            "request": body["fqn"],
            "repo": data["repo"],
            "subject": data["subject"],
            "role": data["role"],
            "reason": data["reason"],
            "requester": data["requester"],
            "status": "pending",
            "opened_at": opened_at,
            "expires_at": utc_text(expires_at),
            "duration_seconds": data["duration_seconds"],
            "max_duration_seconds": data["max_duration_seconds"],
            "approvals_needed": data["approvals_needed"],
            "approvals": [],
            "decided_by": None,
            "decided_at": None,
            "decision_reason": None,
            "grant_expires_at": None,
            "position": body["position"],
        },
    )


def _update(writes: Writes, body: Body, **values: Any) -> None:
    values["position"] = body["position"]
    writes.add(
        update_by_key(t.access_requests, "request", tuple(values)), {**values, "w_key": body["fqn"]}
    )


def _closed(body: Body, status: str, reason: str | None) -> dict[str, Any]:
    return {
        "status": status,
        "decided_by": body["actor"],
        "decided_at": utc_text_of(body["occurred_at"]),
        "decision_reason": reason,
    }


@_on("access_request.approved")
def _approved(writes: Writes, body: Body) -> None:
    data = body["data"]
    # Read below: the request, or an approval before this one, may be this batch's.
    writes.flush(t.access_requests)
    approvals = writes.conn.execute(
        select(t.access_requests.c.approvals).where(t.access_requests.c.request == body["fqn"])
    ).scalar_one()
    approval = {
        "approver": body["actor"],
        "at": utc_text_of(body["occurred_at"]),
        "comment": data["comment"],
    }
    values: dict[str, Any] = {"approvals": [*approvals, approval]}
    if data["granted"]:
        values |= _closed(body, "approved", data["comment"])
        expires = data.get("grant_expires_at")
        values["grant_expires_at"] = None if expires is None else utc_text_of(expires)
    _update(writes, body, **values)


@_on("access_request.denied")
def _denied(writes: Writes, body: Body) -> None:
    _update(writes, body, **_closed(body, "denied", body["data"]["reason"]))


@_on("access_request.cancelled")
def _cancelled(writes: Writes, body: Body) -> None:
    _update(writes, body, **_closed(body, "cancelled", body["data"]["reason"]))


@_on("access_request.expired")
def _expired(writes: Writes, body: Body) -> None:
    _update(writes, body, **_closed(body, "expired", None))
