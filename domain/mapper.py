"""Stores pydantic domain events as JSON through eventsourcing's stock transcoder."""

from __future__ import annotations

import json
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

_IDENTITY = {"originator_id", "originator_version"}


class PydanticMapper(Mapper[UUID]):
    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = cast(BaseModel, domain_event).model_dump(mode="json", exclude=_IDENTITY)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=self.transcoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        state: dict[str, Any] = self.transcoder.decode(stored_event.state)
        cls = resolve_topic(stored_event.topic)
        return cast(
            DomainEventProtocol[UUID],
            cls(
                originator_id=stored_event.originator_id,
                originator_version=stored_event.originator_version,
                **state,
            ),
        )


class JsonTranscoder(Transcoder):
    """Plain JSON: pydantic has already reduced every event to JSON types.

    orjson writes the bytes `json.dumps(obj, separators=(",", ":"), ensure_ascii=False)` does
    for every value an event holds (strings, integers, booleans, null, lists, objects; it would
    write a float with a small exponent differently, `1e-7` for `1e-07`, and no event has a
    float), several times faster; what it can't write or read (an integer over 64 bits, NaN)
    goes through the json module, as before. `tests/unit/test_events.py` holds the two to the
    same bytes."""

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj)
        except orjson.JSONEncodeError:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)
