"""What a worker believes of the stream: only events that extend the chain it verified
(`workers.chain`), folded only when their subject is one its state needs."""

from __future__ import annotations

from typing import Any

from domain.event_log import ZERO_HASH, chain_hash
from workers.chain import ChainGuard
from workers.follower import _matches


def _chain(*datas: dict[str, Any]) -> list[dict[str, Any]]:
    bodies, prev = [], ZERO_HASH
    for position, data in enumerate(datas, start=1):
        body: dict[str, Any] = {"position": position, "data": data}
        body = {**body, "prev_hash": prev, "hash": chain_hash(prev, body)}
        bodies.append(body)
        prev = body["hash"]
    return bodies


def test_a_forged_or_altered_message_is_skipped_and_the_chain_goes_on_after_it() -> None:
    first, second, third = _chain({"n": 1}, {"n": 2}, {"n": 3})
    guard = ChainGuard()
    assert guard.admit(first) is None
    # A copy of the first with other contents, its hash recomputed: it does not follow.
    forged = {"position": 9, "data": {"n": 666}, "prev_hash": ZERO_HASH}
    forged["hash"] = chain_hash(ZERO_HASH, {"position": 9, "data": {"n": 666}})
    assert guard.admit(forged) is not None
    # The next genuine event, altered without its hash recomputed: refused as altered.
    altered = {**second, "data": {"n": 22}}
    assert "altered" in (guard.admit(altered) or "")
    assert guard.admit("not an event") == "not an event"
    # The genuine ones still link to what was believed.
    assert guard.admit(second) is None
    assert guard.admit(third) is None
    assert (guard.trusted, guard.rejected) == (3, 3)
    assert guard.head == third["hash"]


def test_after_a_gap_nothing_is_believed_until_the_missing_event_comes() -> None:
    first, second, third = _chain({"n": 1}, {"n": 2}, {"n": 3})
    guard = ChainGuard()
    assert guard.admit(first) is None
    assert guard.admit(third) is not None  # second missing: third can't be believed yet
    assert guard.admit(second) is None  # the relay published it again, then third again
    assert guard.admit(third) is None


def test_subjects_match_as_nats_matches_them() -> None:
    assert _matches("tenantry.evt.team.created", "tenantry.evt.team.created")
    assert _matches("tenantry.evt.team.created", "tenantry.evt.>")
    assert _matches("tenantry.evt.team.created", "tenantry.evt.*.created")
    assert not _matches("tenantry.evt.team.created", "tenantry.evt.*")
    assert not _matches("tenantry.evt", "tenantry.evt.>")
    assert not _matches("tenantry.evt.team.deleted", "tenantry.evt.team.created")
