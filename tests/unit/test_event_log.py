"""The published body's derived fields, computed fast, must equal their definitions."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import Notification
from hypothesis import given
from hypothesis import strategies as st

from domain.event_log import _defined_canonical_json, canonical_json, event_id, unchained_body


@given(st.uuids(), st.integers(min_value=1, max_value=2**63 - 1))
def test_event_id_is_the_uuid5_of_the_aggregate_and_version(
    originator: uuid.UUID, version: int
) -> None:
    assert event_id(originator, version) == str(uuid.uuid5(originator, str(version)))


def test_event_id_of_a_known_pair() -> None:
    # Fixed, so that a change of definition (not only of speed) is caught.
    originator = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    assert event_id(originator, 1) == "b04965e6-a9bb-591f-8f8a-1adcb2c8dc39"


# Every value an event body can hold: no floats (no event has one).
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@given(_JSON)
def test_canonical_json_is_byte_for_byte_the_definition(value: object) -> None:
    try:
        expected = _defined_canonical_json(value)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it, either way
        with pytest.raises((UnicodeEncodeError, TypeError)):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


def test_every_bookkeeping_record_is_left_out_of_the_published_log() -> None:
    """A command's or an apply's record and the seed marker are bookkeeping: never published,
    never projected. A new record class must be added to INTERNAL_TOPICS (this fails until it
    is): an apply's record was once published to the stream as if it were a fact."""
    import inspect

    from eventsourcing.utils import get_topic

    from domain import command_record, seeding
    from domain.base import Aggregate
    from domain.event_log import INTERNAL_TOPICS

    records = [
        cls
        for module in (command_record, seeding)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Aggregate) and cls is not Aggregate and cls.__module__ == module.__name__
    ]
    assert {cls.__name__ for cls in records} >= {"CommandRecord", "ApplyRecord", "Seed"}
    events = {
        get_topic(attr)
        for cls in records
        for name, attr in vars(cls).items()
        # Event and Created are the library's own defaults, which these records never trigger.
        if name not in ("Event", "Created")
        and inspect.isclass(attr)
        and issubclass(attr, Aggregate.Event)
    }
    assert len(events) >= 3
    assert events <= INTERNAL_TOPICS


def test_a_lazy_body_is_the_body_key_for_key() -> None:
    """`LazyBody` works out `type`, `fqn` and `data` on its own: each must be what
    `unchained_body` says, for every kind of event of a busy tenancy (a second definition of
    those fields would otherwise be free to drift)."""
    from domain.base import CommandContext
    from domain.commands import COMMANDS
    from domain.event_log import INTERNAL_TOPICS, LazyBody, unchained_body
    from tests.integration.world import CHANGES, WORLD

    from .support import make_tenancy

    t = make_tenancy("sqlite")
    for name, body, actor in WORLD + CHANGES:
        context = CommandContext(actor, str(uuid.uuid4()), "lazy")
        t.svc.handle(COMMANDS[name].model_validate(body), context)
    rows = [
        n
        for n in t.svc.recorder.select_notifications(None, 100_000)
        if n.topic not in INTERNAL_TOPICS
    ]
    assert len({n.topic for n in rows}) >= 20
    for n in rows:
        whole = unchained_body(n)
        assert dict(LazyBody(n)) == whole
        for key in whole:
            assert LazyBody(n)[key] == whole[key], (n.topic, key)
        with pytest.raises(KeyError):
            LazyBody(n)["no such key"]


@given(st.uuids(), st.integers(min_value=1, max_value=2**31))
def test_a_body_read_with_the_aggregate_id_as_text_is_the_one_read_with_its_uuid(
    originator: uuid.UUID, version: int
) -> None:
    # The relay reads the id as the text the store keeps (`tenantry.log.store_pages`).
    state = b'{"timestamp":"2026-11-29T11:27:36.027293Z","name":"t"}'
    topic = "domain.aggregates:Team.Created"

    def body(originator_id: uuid.UUID | str) -> dict[str, object]:
        return unchained_body(
            Notification(
                id=7,
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=state,
            )
        )

    expected = body(originator)
    assert expected["aggregate_id"] == str(originator)
    assert body(str(originator)) == expected
    assert body(originator.hex) == expected  # as SQLite keeps it
    assert body(str(originator).upper()) == expected  # another spelling: made canonical
    with pytest.raises(ValueError, match="badly formed"):
        body("not-a-uuid")
