"""The views and the stream agree on the hash chain: the last event the views applied (position
and chain hash, recorded with the views in the same transaction) against the relay's message on
TENANTRY_EVENTS for that same position. A disagreement means the views and the relay read
different logs (a view store paired with another event store, a store restored or rewritten
under one of them, two versions computing different bodies): it is counted
(`tenantry_chain_disagreements`) and logged as an error (`chain.disagreement`), once per
position.

It runs in the projections role, which holds the view store; the relay knows nothing of the
views. The stream is read from its last message backwards, at most `walk` messages: when the
relay is further ahead than that, or behind the views, there is nothing to compare this time,
and the next look (after the next batch, or `every` seconds) tries again; an idle system always
has both at the same event."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import orjson
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import APIError, NotFoundError

from domain.event_log import STREAM_NAME
from projections.store import Tracking, ViewStore, read_last_event
from tenantry.server.metrics import Metrics

log = structlog.get_logger("tenantry.log.agreement")


@dataclass(frozen=True)
class Disagreement:
    """The views and the stream hold different chain hashes for the event at `position`."""

    position: int
    views_hash: str
    stream_hash: str
    stream_seq: int


class ChainAgreement:
    """Compares the views' last event with the stream's message for its position."""

    def __init__(
        self, store: ViewStore, nc: Client, *, metrics: Metrics | None = None, walk: int = 64
    ) -> None:
        self._store = store
        self._js = nc.jetstream()
        self._metrics = metrics
        self._walk = walk
        self._reported: set[int] = set()
        self.compared = 0  # comparisons made (agreeing or not)

    async def check(self) -> Disagreement | None:
        """Compare once; the disagreement found, if any (reported once per position)."""
        mark = await asyncio.to_thread(self._last_event)
        if mark is None:
            return None
        found = await self._stream_hash(mark.position)
        if found is None:
            return None
        seq, stream_hash = found
        self.compared += 1
        if stream_hash == mark.hash:
            return None
        disagreement = Disagreement(mark.position, mark.hash, stream_hash, seq)
        if mark.position not in self._reported:
            self._reported.add(mark.position)
            if self._metrics is not None:
                self._metrics.chain_disagreements.inc()
            log.error(
                "chain.disagreement",
                position=mark.position,
                views_hash=mark.hash,
                stream_hash=stream_hash,
                stream_seq=seq,
                reason="the views and the relay's stream hold different chain hashes for the "
                "same event: they read different logs",
            )
        return disagreement

    async def run(self, stop: asyncio.Event, every: float = 5.0) -> None:
        """Check every `every` seconds until `stop`; a failed look is logged, never fatal."""
        while not stop.is_set():
            try:
                await self.check()
            except (APIError, TimeoutError, NatsError) as exc:
                log.warning("chain.check_failed", error=f"{type(exc).__name__}: {exc}")
            except Exception:
                log.exception("chain.check_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stop.wait()

    def _last_event(self) -> Tracking | None:
        with self._store.snapshot() as conn:
            return read_last_event(conn)

    async def _stream_hash(self, position: int) -> tuple[int, str] | None:
        """(seq, hash) of the stream's last message for `position`, looking back from the
        stream's end at most `walk` messages; None if not found there."""
        try:
            info = await self._js.stream_info(STREAM_NAME)
        except NotFoundError:
            return None
        first, seq = info.state.first_seq, info.state.last_seq
        for _ in range(self._walk):
            if seq < max(first, 1):
                return None
            try:
                msg = await self._js.get_msg(STREAM_NAME, seq=seq)
            except NotFoundError:  # deleted: look at the one before
                seq -= 1
                continue
            body = _event_of(msg.data or b"")
            if body is not None:
                at, chain_hash = body
                if at == position:
                    return seq, chain_hash
                if at < position:
                    return None  # the relay has not published it yet
            seq -= 1
        return None


def _event_of(data: bytes) -> tuple[int, str] | None:
    """(position, hash) of a message that looks like an event; None otherwise (what is on the
    stream and not the store's is the relay's check to report, `tenantry.log.stream_check`)."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    position, chain_hash = body.get("position"), body.get("hash")
    if isinstance(position, int) and isinstance(chain_hash, str):
        return position, chain_hash
    return None
