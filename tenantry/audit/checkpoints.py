"""The checkpoints role: follows the event store, keeps the log's Merkle tree, signs a checkpoint
every N events or T seconds on the TENANTRY_CHECKPOINTS stream (`tenantry.checkpoint`), and
answers the Merkle proof queries (`tenantry.audit.proofs`).

A checkpoint is the signed statement "the log had `tree_size` events, this root, this head":
kept anywhere off the box, it makes events cut off the end of the log, or a history rewritten
under it, detectable. It only ever covers events already on the TENANTRY_EVENTS stream, so an
export taken just after it always holds what it signs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import PersistenceError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from domain.event_log import (
    STREAM_NAME,
    ZERO_HASH,
    NotificationLog,
    canonical_json,
    published,
    read_batch,
)
from domain.waiting import first_of
from tenantry.audit.checkpoint import signed
from tenantry.audit.merkle import MerkleTree, leaf_hash
from tenantry.audit.proofs import PROOF_QUERIES, answer_proof
from tenantry.log.jetstream import ensure_stream
from tenantry.protocol import CHECKPOINT_SUBJECT, QUERY_PREFIX, InternalError
from tenantry.server import wire

log = structlog.get_logger("tenantry.audit.checkpoints")

CHECKPOINT_STREAM = "TENANTRY_CHECKPOINTS"
PROOF_QUEUE_GROUP = "tenantry-checkpoints"


def utc_now() -> datetime:
    return datetime.now(UTC)


class LogTree:
    """The log as the tree sees it: one leaf per published event, in store order, with each
    leaf's store position and chain hash (to find a leaf by position and to re-read its event)."""

    def __init__(self) -> None:
        self.tree = MerkleTree()
        self._positions = array("q")
        self._hashes = bytearray()
        self.read_to = 0  # the last store position read, internal records included
        self.head = ZERO_HASH

    @property
    def size(self) -> int:
        return self.tree.size

    def read_batch(
        self, recorder: NotificationLog, limit: int = 1000
    ) -> tuple[int, list[tuple[int, str]]]:
        """The next stored events after `read_to` as (position, chain hash), and the last store
        position read (in a worker thread: it reads the database and hashes; `extend` in the
        event loop then adds them, so proofs never see a half-added leaf)."""
        batch = read_batch(recorder, self.read_to, self.head, limit)
        return batch.position, [(e.body["position"], e.body["hash"]) for e in batch.events]

    def extend(self, read_to: int, leaves: list[tuple[int, str]]) -> None:
        for position, chain_hash in leaves:
            self.tree.append(leaf_hash(chain_hash))
            self._hashes += bytes.fromhex(chain_hash)
            self._positions.append(position)
            self.head = chain_hash
        self.read_to = read_to

    def index_of(self, position: int) -> int | None:
        index = bisect_left(self._positions, position)
        if index < len(self._positions) and self._positions[index] == position:
            return index
        return None

    def position_of(self, index: int) -> int:
        return self._positions[index]

    def chain_hash(self, index: int) -> str:
        return self._hashes[index * 32 : index * 32 + 32].hex()

    def event(self, recorder: NotificationLog, index: int) -> dict[str, Any]:
        """The published body of leaf `index`, recomputed from the store (worker thread)."""
        position = self.position_of(index)
        prev_hash = self.chain_hash(index - 1) if index else ZERO_HASH
        (notification,) = recorder.select_notifications(position, 1)
        body = published(notification, prev_hash).body
        if body["hash"] != self.chain_hash(index):
            raise InternalError(
                f"the stored event at position {position} changed since it was read"
            )
        return body

    def checkpoint(self, size: int, now: datetime) -> dict[str, Any]:
        """What a checkpoint of the log's first `size` events says (before it is signed)."""
        return {
            "log": STREAM_NAME,
            "tree_size": size,
            "root_hash": self.tree.root(size).hex(),
            "head_hash": self.chain_hash(size - 1) if size else ZERO_HASH,
            "last_position": self.position_of(size - 1) if size else 0,
            "created_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class Cadence:
    """When to sign: after `every_events` new events, or `every_seconds` after the last
    checkpoint when the log has grown at all (an idle log gets no new checkpoints)."""

    every_events: int = 1000
    every_seconds: float = 60.0


class Checkpointer:
    """The role: one per deployment signs (a second one would publish the same checkpoints
    twice, dropped by the stream's de-duplication on `Nats-Msg-Id: checkpoint:<size>`)."""

    def __init__(
        self,
        recorder: NotificationLog,
        nc: Client,
        key: Ed25519PrivateKey,
        *,
        cadence: Cadence | None = None,
        replicas: int = 1,
        poll_interval: float = 0.25,
        wakeup: asyncio.Event | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._recorder = recorder
        self._nc = nc
        self._js = nc.jetstream()
        self._key = key
        self._cadence = cadence or Cadence()
        self._replicas = replicas
        self._poll_interval = poll_interval
        self.wakeup = wakeup or asyncio.Event()
        self._now = now
        self.log_tree = LogTree()
        self.published: dict[int, dict[str, Any]] = {}  # tree size -> signed checkpoint
        self.newest_size = 0
        self._signed_at = time.monotonic()
        self._lock = asyncio.Lock()
        self._disagreeing: int | None = None  # the stream sequence last found disagreeing

    async def ensure_stream(self) -> None:
        config = StreamConfig(
            name=CHECKPOINT_STREAM,
            subjects=[CHECKPOINT_SUBJECT],
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            duplicate_window=120.0,
            description="Tenantry: signed checkpoints of TENANTRY_EVENTS (kept forever)",
        )
        if (await ensure_stream(self._js, config)).created:
            log.info("checkpoint.stream_created", stream=CHECKPOINT_STREAM)

    async def run(self, stop: asyncio.Event) -> None:
        if not await self._start(stop):
            return
        subscriptions = [
            await self._nc.subscribe(QUERY_PREFIX + name, queue=PROOF_QUEUE_GROUP, cb=self._answer)
            for name in PROOF_QUERIES
        ]
        log.info("checkpoint.started", tree_size=self.log_tree.size, signed=self.newest_size)
        try:
            while not stop.is_set():
                try:
                    await self.catch_up()
                    await self.maybe_checkpoint()
                except (PersistenceError, APIError, TimeoutError, NatsError) as exc:
                    log.warning("checkpoint.retry", error=f"{type(exc).__name__}: {exc}")
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await first_of(self.wakeup, stop)
        finally:
            for subscription in subscriptions:
                await subscription.unsubscribe()

    async def _start(self, stop: asyncio.Event) -> bool:
        """The stream made sure of, the tree read from the store and checked against the newest
        checkpoint, for as long as that takes (as the relay: a JetStream cluster without a
        quorum yet answers nothing, and the store may be restarting); False if `stop` first."""
        pause = max(self._poll_interval, 0.5)
        while not stop.is_set():
            try:
                await self.ensure_stream()
                await self.catch_up()
                await self._check_last_published()
                return True
            except (PersistenceError, APIError, TimeoutError, NatsError) as exc:
                log.warning("checkpoint.start_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            pause = min(pause * 2, 5.0)
        return False

    async def catch_up(self) -> None:
        while True:
            read_to, leaves = await asyncio.to_thread(self.log_tree.read_batch, self._recorder)
            if read_to == self.log_tree.read_to:
                return
            self.log_tree.extend(read_to, leaves)

    async def maybe_checkpoint(self, *, force: bool = False) -> dict[str, Any] | None:
        """Sign and publish a checkpoint of everything on the stream if the cadence says so
        (or `force`, when there is anything new); the one published, if any."""
        async with self._lock:
            size = await self.stream_size()
            if size <= self.newest_size:
                return None
            due = (
                force
                or size - self.newest_size >= self._cadence.every_events
                or time.monotonic() - self._signed_at >= self._cadence.every_seconds
            )
            if not due:
                return None
            envelope = signed(self.log_tree.checkpoint(size, self._now()), self._key)
            await self._js.publish(
                CHECKPOINT_SUBJECT,
                canonical_json(envelope),
                stream=CHECKPOINT_STREAM,
                headers={"Nats-Msg-Id": f"checkpoint:{size}"},
            )
            self.published[size] = envelope
            self.newest_size, self._signed_at = size, time.monotonic()
            checkpoint = envelope["checkpoint"]
            log.info(
                "checkpoint.published",
                tree_size=size,
                last_position=checkpoint["last_position"],
                root_hash=checkpoint["root_hash"],
            )
            return envelope

    async def stream_size(self) -> int:
        """How many of the tree's leaves are on TENANTRY_EVENTS: the leaves up to the stream's
        last message, when that message is the event the store has at its position (else the
        stream disagrees with the store: nothing more is signed until it is mended)."""
        try:
            info = await self._js.stream_info(STREAM_NAME)
        except NotFoundError:
            return 0
        if not info.state.last_seq:
            return 0
        msg = await self._js.get_msg(STREAM_NAME, seq=info.state.last_seq)
        try:
            body = json.loads(msg.data or b"")
            position, chain_hash = int(body["position"]), str(body["hash"])
        except (ValueError, KeyError, TypeError):
            position, chain_hash = -1, ""
        tree = self.log_tree
        if tree.size and position > tree.position_of(tree.size - 1):
            return tree.size  # the stream is ahead of what this process has read
        index = tree.index_of(position)
        if index is None or tree.chain_hash(index) != chain_hash:
            if self._disagreeing != info.state.last_seq:  # once per bad tail, not every poll
                self._disagreeing = info.state.last_seq
                log.error(
                    "checkpoint.stream_disagrees",
                    stream_seq=info.state.last_seq,
                    position=position,
                    reason="the stream's last message is not the store's event at its position",
                )
            return self.newest_size
        self._disagreeing = None
        return index + 1

    async def _check_last_published(self) -> None:
        """The newest checkpoint on the stream must be a prefix of the log as the store has it:
        a store rewritten or cut under a published checkpoint is said loudly at every start."""
        last = await self._last_published()
        if last is None:
            return
        said = last["checkpoint"]
        size = int(said["tree_size"])
        tree = self.log_tree
        if size > tree.size or tree.tree.root(size).hex() != said["root_hash"]:
            log.error(
                "checkpoint.store_disagrees",
                tree_size=size,
                root_hash=said["root_hash"],
                store_size=tree.size,
                reason="the store is not what an earlier checkpoint signed: events were "
                "removed or rewritten",
            )
            return
        self.published[size] = last
        self.newest_size = size

    async def _last_published(self) -> dict[str, Any] | None:
        try:
            info = await self._js.stream_info(CHECKPOINT_STREAM)
            if not info.state.last_seq:
                return None
            msg = await self._js.get_msg(CHECKPOINT_STREAM, seq=info.state.last_seq)
        except NotFoundError:
            return None
        envelope: dict[str, Any] = json.loads(msg.data or b"{}")
        return envelope

    async def _answer(self, msg: Msg) -> None:
        name = msg.subject.removeprefix(QUERY_PREFIX)
        try:
            wire.require_body_size(msg.data)
            data = await answer_proof(self, name, msg.data)
            body, headers = wire.ok_reply({"position": self.log_tree.read_to, "data": data})
        except Exception as exc:
            refusal = wire.error_of(exc)
            if isinstance(refusal, InternalError):
                log.exception("checkpoint.proof_failed", query=name)
            body, headers = wire.error_reply(refusal)
        if msg.reply:
            await self._nc.publish(msg.reply, body, headers=headers or None)

    async def event(self, index: int) -> dict[str, Any]:
        return await asyncio.to_thread(self.log_tree.event, self._recorder, index)
