"""The audit view: every published event body (DESIGN §4), hash chain included, searchable by
position, time, actor, FQN and type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from domain.event_log import canonical_json
from projections import schema as t

# Built once, values bound at execution (much cheaper than a statement per event).
_INSERT = t.audit_events.insert()


def apply(conn: Connection, body: dict[str, Any]) -> None:
    conn.execute(_INSERT, row_of(body))


def row_of(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "position": body["position"],
        "occurred_at": utc_text(datetime.fromisoformat(body["occurred_at"])),
        "actor": body["actor"],
        "fqn": body["fqn"],
        "type": body["type"],
        "prev_hash": body["prev_hash"],
        "hash": body["hash"],
        "body": canonical_json(body).decode(),
    }


def utc_text(value: datetime) -> str:
    """A moment as fixed-width UTC text, so that text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
