"""The audit view: every published event body (DESIGN §4), hash chain included, searchable by
position, time, actor, FQN and type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from domain.event_log import UTC_MICROS, Published, chain_suffix
from projections import schema as t
from projections.store import Raw

_COLUMNS = ("position", "occurred_at", "actor", "fqn", "type", "body", "prev_digest", "digest")
_INSERT = Raw(t.audit_events.insert(), _COLUMNS)
# `chain_suffix(prev_hash, digest)` is this many bytes and the two hashes' (ASCII hex): its
# length without building it, for every event of a batch.
_SUFFIX = len(chain_suffix("", ""))


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """One driver call for the whole batch (an executemany), not one per event."""
    _INSERT.run_many(conn, [row_of(event) for event in events])


def row_of(event: Published) -> dict[str, Any]:
    body = event.body
    prev_hash, digest = body["prev_hash"], body["hash"]
    return {
        "position": body["position"],
        "occurred_at": utc_text_of(body["occurred_at"]),
        "actor": body["actor"],
        "fqn": body["fqn"],
        "type": body["type"],
        # The JSON as the relay publishes it, less its end (`body_of` puts it back).
        "body": event.payload[: -(_SUFFIX + len(prev_hash) + len(digest))].decode(),
        "prev_digest": bytes.fromhex(prev_hash),
        "digest": bytes.fromhex(digest),
    }


def body_of(stored: str, prev_digest: bytes, digest: bytes) -> str:
    """The published JSON of an event, from its row: exactly what the relay published."""
    return stored + chain_suffix(prev_digest.hex(), digest.hex()).decode()


def utc_text(value: datetime) -> str:
    """A moment as fixed-width UTC text, so that text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_text_of(timestamp: str) -> str:
    """`utc_text` of an RFC 3339 timestamp; the usual published form already is one."""
    if UTC_MICROS.fullmatch(timestamp):
        return timestamp
    return utc_text(datetime.fromisoformat(timestamp.replace("Z", "+00:00")))
