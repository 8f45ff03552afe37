"""The audit view: every published event body (DESIGN §4), hash chain included, searchable by
position, time, actor, FQN and type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from domain.event_log import UTC_MICROS, Published
from projections import schema as t
from projections.store import Raw

_COLUMNS = ("position", "occurred_at", "actor", "fqn", "type", "prev_hash", "hash", "body")
_INSERT = Raw(t.audit_events.insert(), _COLUMNS)


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """One driver call for the whole batch (an executemany), not one per event."""
    _INSERT.run_many(conn, [row_of(event) for event in events])


def row_of(event: Published) -> dict[str, Any]:
    body = event.body
    return {
        "position": body["position"],
        "occurred_at": utc_text_of(body["occurred_at"]),
        "actor": body["actor"],
        "fqn": body["fqn"],
        "type": body["type"],
        "prev_hash": body["prev_hash"],
        "hash": body["hash"],
        # The JSON exactly as the relay publishes it.
        "body": event.payload.decode(),
    }


def utc_text(value: datetime) -> str:
    """A moment as fixed-width UTC text, so that text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_text_of(timestamp: str) -> str:
    """`utc_text` of an RFC 3339 timestamp; the usual published form already is one."""
    if UTC_MICROS.fullmatch(timestamp):
        return timestamp
    return utc_text(datetime.fromisoformat(timestamp.replace("Z", "+00:00")))
