"""A rebuild runs the cyclic garbage collector less, and leaves it as it found it."""

from __future__ import annotations

import gc

import pytest

from projections.runner import REBUILD_GC_THRESHOLD, fewer_collections


def test_a_rebuild_collects_less_and_restores_the_collector() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with fewer_collections():
        # The objects held before are set aside, the youngest generation collected less often.
        assert gc.get_freeze_count() > frozen
        assert gc.get_threshold() == (max(before[0], REBUILD_GC_THRESHOLD), *before[1:])
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_objects_the_process_froze_itself_stay_frozen() -> None:
    gc.freeze()
    try:
        # (The count drops only as frozen objects are freed; thawed, it would be 0.)
        assert gc.get_freeze_count() > 0
        with fewer_collections():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_collector_is_restored_when_a_rebuild_fails() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a batch failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_two_rebuilds_at_once_leave_the_collector_as_found_whichever_ends_first() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start ends first: the second still runs
    assert gc.get_threshold()[0] >= REBUILD_GC_THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
