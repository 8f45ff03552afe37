"""The published form of stored events (DESIGN §4), their SHA-256 hash chain, and the one reader
of the published log (`read_batch`, `read_published`).

The same functions serve the relay, the views, replay, the checkpoints and `audit verify`, so
the chain computed from the store, read from the stream or recomputed from an export is
byte-for-byte the same, and which stored records are published is decided here only."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.base import snake_case
from domain.command_record import ApplyRecord, CommandRecord
from domain.seeding import Seed
from tenantry.protocol import EVENT_PREFIX

ZERO_HASH = "0" * 64
SCHEMA_VERSION = 1
STREAM_NAME = "TENANTRY_EVENTS"
SUBJECT_PREFIX = EVENT_PREFIX
# Stored alongside every event but published as top-level fields, not as `data`.
_METADATA = {"timestamp", "actor", "command_id", "correlation_id", "fqn", "originator_topic"}
# Stored records that are bookkeeping, not facts about the tenancy (a command's or an apply's
# idempotency record, the seed marker): never published, never projected, never in the chain.
# They still take store positions, which is why readers track the last position *read* apart
# from the last event published.
INTERNAL_TOPICS: frozenset[str] = frozenset(
    {get_topic(CommandRecord.Handled), get_topic(ApplyRecord.Handled), get_topic(Seed.Planted)}
)


def is_published(notification: Notification) -> bool:
    """Whether a stored record is an event of the published log (not internal bookkeeping)."""
    return notification.topic not in INTERNAL_TOPICS


@lru_cache(maxsize=512)
def event_type_of_topic(topic: str) -> tuple[str, str]:
    """`domain.workspace:Workspace.Created` -> (`workspace`, `workspace.created`)."""
    owner, _, name = topic.partition(":")[2].partition(".")
    aggregate = snake_case(owner)
    return aggregate, f"{aggregate}.{snake_case(name)}"


# UTC with microseconds: what pydantic stores for UTC times, and text whose order is time order.
UTC_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def rfc3339(value: str) -> str:
    """Timestamps as `2026-11-29T11:27:36.027293Z` whatever the stored offset notation."""
    if UTC_MICROS.fullmatch(value):
        return value  # what pydantic stores for UTC times with microseconds: the usual case
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_id(originator_id: UUID, version: int) -> str:
    """A stable id for one event: the same whenever and wherever it is computed.

    It is `str(uuid5(originator_id, str(version)))` (RFC 4122 version 5), computed without
    building two `UUID` objects: the relay and the views compute one for every event."""
    return _event_id(originator_id.bytes, version)


def _event_id(originator_id: bytes, version: int) -> str:
    name = originator_id + str(version).encode()
    digest = bytearray(hashlib.sha1(name, usedforsecurity=False).digest()[:16])  # as uuid5
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hex_ = digest.hex()
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


# A UUID as the stores keep it in text (the relay reads it so): SQLite its 32 hex digits,
# PostgreSQL (read `::text`) as `str(UUID)` writes it.
_UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
_UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _originator(originator_id: object) -> tuple[str, bytes]:
    """The aggregate id as `str(UUID)` writes it and its 16 bytes, from a `UUID` or its text."""
    if isinstance(originator_id, UUID):
        return str(originator_id), originator_id.bytes
    text = str(originator_id)
    if _UUID_HEX.fullmatch(text):
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}", bytes.fromhex(
            text
        )
    if _UUID_TEXT.fullmatch(text):
        return text, bytes.fromhex(text.replace("-", ""))
    parsed = UUID(text)  # another spelling of a UUID: its canonical text
    return str(parsed), parsed.bytes


def unchained_body(notification: Notification) -> dict[str, Any]:
    """The body of DESIGN §4 without `prev_hash` and `hash`."""
    return unchained_row(
        notification.id,
        notification.originator_id,
        notification.originator_version,
        notification.topic,
        notification.state,
    )


def unchained_row(
    position: int, originator_id: object, version: int, topic: str, stored: bytes
) -> dict[str, Any]:
    """`unchained_body` of a stored row's fields (the relay reads its pages as plain rows,
    `tenantry.log.store_pages`, and makes no `Notification` of them)."""
    state: dict[str, Any] = orjson.loads(stored)
    aggregate, type_ = event_type_of_topic(topic)
    aggregate_id, originator_bytes = _originator(originator_id)
    return {
        "position": position,
        "id": _event_id(originator_bytes, version),
        "type": type_,
        "aggregate": aggregate,
        "aggregate_id": aggregate_id,
        "fqn": state.get("fqn", ""),
        "version": version,
        "occurred_at": rfc3339(state["timestamp"]),
        "actor": state.get("actor", ""),
        "command_id": state.get("command_id", ""),
        "correlation_id": state.get("correlation_id", ""),
        "schema_version": SCHEMA_VERSION,
        "data": {k: v for k, v in state.items() if k not in _METADATA},
    }


class LazyBody(Mapping[str, Any]):
    """`unchained_body(notification)`, read key by key: `type`, `fqn` and `data` worked out when
    first asked for, any other key from the whole body, made once when first needed. For a
    reader that looks at two or three keys of many events (the scheduler's fold at start);
    equal to the whole body key for key (tests/unit/test_event_log.py)."""

    __slots__ = ("_body", "_data", "_notification", "_state")

    def __init__(self, notification: Notification) -> None:
        self._notification = notification
        self._state: dict[str, Any] | None = None
        self._data: dict[str, Any] | None = None
        self._body: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if key == "type":
            return event_type_of_topic(self._notification.topic)[1]
        if key == "fqn":
            return self._stored().get("fqn", "")
        if key == "data":
            if self._data is None:
                self._data = {k: v for k, v in self._stored().items() if k not in _METADATA}
            return self._data
        return self._whole()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def _stored(self) -> dict[str, Any]:
        if self._state is None:
            self._state = orjson.loads(self._notification.state)
        return self._state

    def _whole(self) -> dict[str, Any]:
        if self._body is None:
            self._body = unchained_body(self._notification)
        return self._body


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes the hash chain is defined on.

    orjson writes the same bytes as the definition for every value an event body holds
    (strings, integers, booleans, null, lists, objects); it would write floats differently
    (`1e16`, not `1e+16`), and no event has one."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _defined_canonical_json(value)  # beyond orjson (an integer over 64 bits, …)


def _defined_canonical_json(value: Any) -> bytes:
    """The definition of canonical JSON; `canonical_json` is a faster way to the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, unchained: dict[str, Any]) -> str:
    """SHA-256 over `prev_hash` (64 hex chars), then the canonical JSON of the other fields."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(unchained)).hexdigest()


class Published(NamedTuple):
    """One event as published: its body (with `prev_hash` and `hash`) and the JSON sent."""

    body: dict[str, Any]
    payload: bytes


def published(notification: Notification, prev_hash: str) -> Published:
    """The event after `prev_hash` in the chain: its body and its JSON, encoded once.

    The chain is defined on the canonical JSON of the other fields; the published JSON is that
    same text with `prev_hash` and `hash` appended (key order carries no meaning in JSON)."""
    return published_body(unchained_body(notification), prev_hash)


def published_body(body: dict[str, Any], prev_hash: str) -> Published:
    """`published` of an unchained body (`unchained_body`, `unchained_row`): this call's own
    dict, completed in place with `prev_hash` and `hash`, not copied (a rebuild chains every
    event of the log through here)."""
    canonical = canonical_json(body)
    digest = hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()
    payload = canonical[:-1] + chain_suffix(prev_hash, digest)
    body["prev_hash"], body["hash"] = prev_hash, digest
    return Published(body, payload)


def chained_body(notification: Notification, prev_hash: str) -> dict[str, Any]:
    return published(notification, prev_hash).body


def verify_link(body: dict[str, Any], prev_hash: str) -> bool:
    """True if `body` follows `prev_hash` and its own hash is right."""
    unchained = {k: v for k, v in body.items() if k not in ("prev_hash", "hash")}
    return body.get("prev_hash") == prev_hash and body.get("hash") == chain_hash(
        prev_hash, unchained
    )


def published_bytes(body: dict[str, Any]) -> bytes:
    """The exact bytes the relay publishes for a chained `body`: the canonical JSON of every
    field but `prev_hash` and `hash`, then those two appended (as `published` writes them).

    A line or message whose bytes differ from this is not what the relay wrote, even if it
    parses to the same fields: JSON readers keep the *last* of two equal keys, so a line with
    a forged value first and the genuine one last would parse as genuine."""
    unchained = {k: v for k, v in body.items() if k not in ("prev_hash", "hash")}
    prev_hash, digest = body.get("prev_hash"), body.get("hash")
    return canonical_json(unchained)[:-1] + chain_suffix(str(prev_hash), str(digest))


def chain_suffix(prev_hash: str, digest: str) -> bytes:
    """How a published body ends: its `prev_hash` and `hash`, after the canonical JSON of the
    other fields (less that JSON's closing brace)."""
    return f',"prev_hash":"{prev_hash}","hash":"{digest}"}}'.encode()


def subject_of(body: dict[str, Any]) -> str:
    return SUBJECT_PREFIX + str(body["type"])


# --- the one reader of the published log --------------------------------------------------


class NotificationLog(Protocol):
    """What a reader of the log needs of the event store: the eventsourcing library's
    application recorder has it (`select_notifications`, `max_notification_id`); a follower of
    the log (relay, views, checkpoints, replay, verify) needs nothing else of it."""

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]: ...

    def max_notification_id(self) -> int | None: ...


class Batch(NamedTuple):
    """What one read gave: the published events, chained, and where the reader stands after it
    (`position`: the last store position read, internal records included; `hash`: the chain
    hash of the last published event up to there). `read` counts the stored records read."""

    events: list[Published]
    position: int
    hash: str
    read: int
    stopped: bool = False  # `until` met an event: it and what follows it were not read


def read_batch(
    log: NotificationLog,
    position: int,
    prev_hash: str,
    limit: int,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> Batch:
    """The published events among the next `limit` stored records after `position`, chained
    from `prev_hash` (the hash of the last published event up to `position`). With `until`, the
    read ends before the first event whose body it holds true for."""
    events: list[Published] = []
    read_to, read = position, 0
    for notification in log.select_notifications(position, limit, inclusive_of_start=False):
        if notification.topic not in INTERNAL_TOPICS:
            event = published(notification, prev_hash)
            if until is not None and until(event.body):
                return Batch(events, read_to, prev_hash, read, stopped=True)
            events.append(event)
            prev_hash = event.body["hash"]
        read_to, read = notification.id, read + 1
    return Batch(events, read_to, prev_hash, read)


def read_published(
    log: NotificationLog, position: int = 0, prev_hash: str = ZERO_HASH, batch_size: int = 1000
) -> Iterator[Published]:
    """Every published event after store `position` (from the start by default), chained from
    `prev_hash`, read `batch_size` stored records at a time."""
    while True:
        batch = read_batch(log, position, prev_hash, batch_size)
        if not batch.read:
            return
        yield from batch.events
        position, prev_hash = batch.position, batch.hash
