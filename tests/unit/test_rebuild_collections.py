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
        frozen = gc.get_freeze_count()
        with fewer_collections():
            assert gc.get_freeze_count() >= frozen
        assert gc.get_freeze_count() >= frozen > 0
    finally:
        gc.unfreeze()


def test_the_collector_is_restored_when_a_rebuild_fails() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a batch failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
