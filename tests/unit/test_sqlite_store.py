"""The SQLite recorder the command service reads aggregates with (domain/sqlite_store.py): the
same answers as eventsourcing's, on connections of its own."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from eventsourcing.utils import get_topic

from domain.service import TenancyService
from domain.sqlite_store import SQLiteRecorder

from .support import Tenancy


def _recorders(path: Path) -> tuple[SQLiteRecorder, SQLiteApplicationRecorder]:
    ours = SQLiteRecorder(SQLiteDatastore(str(path)))
    ours.create_table()
    return ours, SQLiteApplicationRecorder(SQLiteDatastore(str(path)))


def test_it_reads_what_eventsourcings_recorder_reads(tmp_path: Path) -> None:
    ours, theirs = _recorders(tmp_path / "events.sqlite")
    one, other = uuid.uuid4(), uuid.uuid4()
    ours.insert_events(
        [StoredEvent(one, v, f"topic-{v}", f"state-{v}".encode()) for v in range(1, 6)]
        + [StoredEvent(other, 1, "topic", b"other")]
    )
    asks: list[dict[str, int | bool | None]] = [
        {},
        {"gt": 2},
        {"lte": 3},
        {"gt": 1, "lte": 4},
        {"desc": True},
        {"desc": True, "limit": 2},
        {"limit": 1},
        {"gt": 5},
    ]
    for ask in asks:
        for the_id in (one, other, uuid.uuid4()):
            mine = ours.select_events(the_id, **ask)  # type: ignore[arg-type]
            assert mine == theirs.select_events(the_id, **ask), ask  # type: ignore[arg-type]
    assert [e.originator_version for e in ours.select_events(one, gt=1, desc=True)] == [5, 4, 3, 2]
    assert all(type(e.originator_id) is uuid.UUID for e in ours.select_events(one))


def test_it_sees_each_commit_at_once(tmp_path: Path) -> None:
    ours, theirs = _recorders(tmp_path / "events.sqlite")
    the_id = uuid.uuid4()
    assert ours.select_events(the_id) == []
    theirs.insert_events([StoredEvent(the_id, 1, "topic", b"1")])
    assert [e.state for e in ours.select_events(the_id)] == [b"1"]


def test_a_store_failure_is_eventsourcings_error(tmp_path: Path) -> None:
    ours, _ = _recorders(tmp_path / "events.sqlite")
    with sqlite3.connect(tmp_path / "events.sqlite") as db:
        db.execute("DROP TABLE stored_events")
    with pytest.raises(OperationalError):
        ours.select_events(uuid.uuid4())


def test_after_its_readers_are_closed_it_reads_through_the_pool(tmp_path: Path) -> None:
    ours, _ = _recorders(tmp_path / "events.sqlite")
    the_id = uuid.uuid4()
    ours.insert_events([StoredEvent(the_id, 1, "topic", b"1")])
    assert len(ours.select_events(the_id)) == 1
    ours.close_readers()
    assert len(ours.select_events(the_id)) == 1


def test_the_command_service_uses_it_on_sqlite_unless_told_otherwise(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e")}
    svc = TenancyService(env)
    assert type(svc.recorder) is SQLiteRecorder
    t = Tenancy(svc)
    t.run("create_team", {"name": "risk", "members": ["ana@example.com"]})
    reply = t.run("add_team_member", {"team": "risk", "user": "bob@example.com"})
    assert reply.version == 2
    svc.close()
    told = TenancyService(
        {**env, "APPLICATION_RECORDER_TOPIC": get_topic(SQLiteApplicationRecorder)}
    )
    assert type(told.recorder) is SQLiteApplicationRecorder
    told.close()
