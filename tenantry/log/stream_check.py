"""The stream checked against the store: where the relay resumes, and what on the stream is wrong
(over ~400 lines: `StreamGuard`'s two checks share its verified head and store window, read whole).

The store is the truth; the stream is a copy anyone with the rights can purge, trim or write to.
`StreamGuard` tells the relay where the stream's intact chain ends, so that it re-publishes the
store's events after it (a purged head, a lost or deleted tail, a deleted message it read past)
and never resumes from a message the store does not hold with that hash (a forged one). Every
message that is not the store's event, byte for byte, is a `Finding`: logged as an error,
counted, and published on `tenantry.alert.stream` (kept in the TENANTRY_ALERTS stream, where
`tenantry health` and auditors read it).

Positions and sequences: stream sequences only grow (a purge or a deletion does not give them
back), so a healed event lands at a new sequence after everything already there, byte for byte
the message it replaces. The chain, not the sequence, says what the stream holds: reading in
sequence order, a message counts if it extends the chain verified so far (the workers skip
the rest, see `workers.chain`). Copies left before a heal (events published after a purge,
before the relay noticed) stay where they are: they are genuine, and off the chain.

Two checks:
- `start()` (on start and after any refusal): walks back from the stream's last sequence to the
  last intact message whose predecessor on the stream is intact and linked to it, checks that
  the stream still holds the store's first event, and samples earlier messages.
- `audit()` (every few seconds): reads every message published since the last check and
  judges it, checks the verified head is still there (a purge, a deletion at the tail), and
  samples earlier messages. It answers where to resume when the stream lost or gained what it
  must not have."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from eventsourcing.persistence import Notification
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from domain.event_log import (
    STREAM_NAME,
    SUBJECT_PREFIX,
    ZERO_HASH,
    NotificationLog,
    is_published,
    published,
    subject_of,
)
from tenantry.audit.tail import reader_name
from tenantry.log.jetstream import ensure_stream
from tenantry.protocol import ALERT_PREFIX, STREAM_ALERT_SUBJECT
from tenantry.server.metrics import Metrics

log = structlog.get_logger("tenantry.log.stream_check")

ALERT_STREAM = "TENANTRY_ALERTS"
_HASH = re.compile(r"^[0-9a-f]{64}$")
# Top-level `position` comes after `data` in the canonical key order: the last match is it (a
# wrong guess only means the slow path; it can't make a message pass).
_POSITION = re.compile(rb'"position":(\d{1,18}),"schema_version":')
_CHAINED_END = re.compile(rb',"prev_hash":"([0-9a-f]{64})","hash":"[0-9a-f]{64}"\}$')
# Kinds of finding that mean someone wrote to the stream what the store never held.
CRITICAL = frozenset({"foreign", "altered"})


def msg_id(position: int) -> str:
    return f"tenantry:{position}"


@dataclass(frozen=True)
class Finding:
    """Something on the stream that is not as the store says."""

    kind: str  # foreign | altered | missing | out_of_place
    seq: int | None
    position: int | None
    detail: str

    @property
    def critical(self) -> bool:
        return self.kind in CRITICAL

    def as_alert(self) -> dict[str, Any]:
        return {
            "severity": "critical" if self.critical else "warning",
            "kind": self.kind,
            "stream": STREAM_NAME,
            "seq": self.seq,
            "position": self.position,
            "detail": self.detail,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


@dataclass(frozen=True)
class Resume:
    """Where publishing goes on: after store `position` (whose chain hash is `hash`), with the
    stream's last sequence `last_seq` (the next publish expects it). `rewind` is True when the
    stream lost what was published (so the ids about to be re-used may still be in the
    server's duplicate window)."""

    position: int
    hash: str
    last_seq: int
    rewind: bool = False


@dataclass
class _Head:
    seq: int
    position: int
    hash: str


@dataclass
class _Judged:
    seq: int
    body: dict[str, Any] | None
    finding: Finding | None


@dataclass
class _StoreWindow:
    """Stored events by position, read a window at a time (positions come mostly in order)."""

    recorder: NotificationLog
    size: int = 500
    rows: dict[int, Notification] = field(default_factory=dict)
    low: int = 0
    high: int = -1

    def get(self, position: int) -> Notification | None:
        if not self.low <= position <= self.high:
            found = self.recorder.select_notifications(position, self.size)
            self.rows = {n.id: n for n in found}
            self.low = position
            self.high = found[-1].id if found else position
        notification = self.rows.get(position)
        if notification is None or not is_published(notification):
            return None
        return notification


def judge(
    store: _StoreWindow, seq: int, subject: str, headers: dict[str, str] | None, data: bytes
) -> _Judged:
    """Is the message at `seq` the store's event, byte for byte (given its own `prev_hash`)?"""
    # The usual case, without parsing: whatever the bytes say, they are genuine if they are
    # exactly what the store's event gives at the position and after the prev_hash they name.
    named = next(reversed(list(_POSITION.finditer(data))), None)
    tail = _CHAINED_END.search(data)
    if named is not None and tail is not None:
        notification = store.get(int(named[1]))
        if notification is not None:
            expected = published(notification, tail[1].decode())
            if (
                data == expected.payload
                and subject == subject_of(expected.body)
                and (headers or {}).get("Nats-Msg-Id") == msg_id(notification.id)
            ):
                return _Judged(seq, expected.body, None)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _Judged(seq, None, Finding("foreign", seq, None, "not JSON"))
    if not isinstance(body, dict):
        return _Judged(seq, None, Finding("foreign", seq, None, "not an event"))
    position, prev_hash = body.get("position"), body.get("prev_hash")
    if not (isinstance(position, int) and isinstance(prev_hash, str) and _HASH.match(prev_hash)):
        return _Judged(seq, None, Finding("foreign", seq, None, "not an event"))
    notification = store.get(position)
    if notification is None:
        return _Judged(
            seq,
            None,
            Finding("foreign", seq, position, f"position {position} is no event of the store"),
        )
    expected = published(notification, prev_hash)
    if data != expected.payload or subject != subject_of(expected.body):
        differ = sorted(
            k for k in {*body, *expected.body} if body.get(k) != expected.body.get(k)
        ) or ["its bytes (not the canonical encoding)"]
        if subject != subject_of(expected.body):
            differ.append("subject")
        return _Judged(
            seq,
            None,
            Finding(
                "altered",
                seq,
                position,
                f"differs from the stored event in {', '.join(differ)}",
            ),
        )
    if (headers or {}).get("Nats-Msg-Id") != msg_id(position):
        return _Judged(
            seq, None, Finding("altered", seq, position, "its Nats-Msg-Id is not the relay's")
        )
    return _Judged(seq, body, None)


class StreamGuard:
    """Checks TENANTRY_EVENTS against the store for one relay; reports what it finds."""

    def __init__(
        self,
        recorder: NotificationLog,
        nc: Client,
        *,
        metrics: Metrics | None = None,
        sample: int = 8,
        max_walk: int = 10_000,
        alert_replicas: int = 1,
    ) -> None:
        self._recorder = recorder
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._metrics = metrics
        self._sample = sample
        self._max_walk = max_walk
        self._alert_replicas = alert_replicas
        self._head: _Head | None = None  # the last message of the verified chain
        self._verified_seq = 0  # every message up to this sequence was judged
        self._reported: set[tuple[str, int | None, int | None]] = set()
        self.findings: list[Finding] = []  # everything reported, in order

    async def ensure_alert_stream(self) -> None:
        config = StreamConfig(
            name=ALERT_STREAM,
            subjects=[ALERT_PREFIX + ">"],
            storage=StorageType.FILE,
            num_replicas=self._alert_replicas,
            max_msgs_per_subject=10_000,
            description="Tenantry: what the relay found wrong with the event stream",
        )
        await ensure_stream(self._js, config)

    # --- the check on start ----------------------------------------------------------------

    async def start(self) -> Resume:
        """Where the stream's intact chain ends, found from its tail."""
        info = await self._js.stream_info(STREAM_NAME)
        first_seq, last_seq = info.state.first_seq, info.state.last_seq
        store = _StoreWindow(self._recorder)
        findings: list[Finding] = []
        head = await self._walk_back(store, first_seq, last_seq, findings)
        if head is not None and head.hash != ZERO_HASH and not await self._holds_first(store):
            first = self._first_published()
            findings.append(
                Finding(
                    "missing",
                    None,
                    first,
                    "the stream does not hold the store's first event (its head was purged "
                    "or deleted): re-publishing from the start",
                )
            )
            head = None
        if head is None and last_seq and not info.state.messages:
            findings.append(
                Finding("missing", None, None, f"the stream is empty after sequence {last_seq}")
            )
        if head is not None:
            await self._samples(store, first_seq, head.seq, findings)
        await self._report(findings)
        self._head = head
        self._verified_seq = last_seq
        if head is None:
            return Resume(0, ZERO_HASH, last_seq, rewind=bool(last_seq))
        rewind = head.seq != last_seq
        if rewind:
            log.warning("stream.behind", resume_after=head.position, seq=head.seq)
        return Resume(head.position, head.hash, last_seq, rewind=rewind)

    async def _walk_back(
        self, store: _StoreWindow, first_seq: int, last_seq: int, findings: list[Finding]
    ) -> _Head | None:
        """The last intact message linked to the intact message before it (or the store's
        first event), walking back from `last_seq`; findings for what it passes over."""
        later: _Judged | None = None  # the intact message after the one in hand
        walked = 0
        seq = last_seq
        while seq >= max(first_seq, 1) and walked < self._max_walk:
            walked += 1
            judged = await self._judge_seq(store, seq)
            seq -= 1
            if judged is None:
                continue  # deleted (or purged): nothing to judge
            if judged.finding is not None:
                findings.append(judged.finding)
                continue
            body = judged.body
            assert body is not None
            if later is not None:
                assert later.body is not None
                if (
                    later.body["prev_hash"] == body["hash"]
                    and body["position"] < later.body["position"]
                ):
                    return _Head(later.seq, later.body["position"], later.body["hash"])
                findings.append(_out_of_place(later, body))
            if body["prev_hash"] == ZERO_HASH and body["position"] == self._first_published():
                return _Head(judged.seq, body["position"], body["hash"])
            later = judged
        return None

    async def _holds_first(self, store: _StoreWindow) -> bool:
        """Does the stream hold the store's first event, intact, anywhere?"""
        first = self._first_published()
        if first is None:
            return True
        notification = store.get(first)
        assert notification is not None
        subject = subject_of(published(notification, ZERO_HASH).body)
        seq = 1
        for _ in range(1000):
            try:
                msg = await self._js.get_msg(STREAM_NAME, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return False
            assert msg.seq is not None
            assert msg.data is not None
            judged = judge(store, msg.seq, subject, msg.headers, msg.data)
            if judged.body is not None and judged.body["position"] == first:
                return bool(judged.body["prev_hash"] == ZERO_HASH)
            seq = msg.seq + 1
        return False

    def _first_published(self, after: int = 0) -> int | None:
        """The store's first event (not an internal record) after position `after`."""
        while notifications := self._recorder.select_notifications(
            after, 100, inclusive_of_start=False
        ):
            for notification in notifications:
                if is_published(notification):
                    return notification.id
            after = notifications[-1].id
        return None

    # --- the periodic check ----------------------------------------------------------------

    async def audit(self) -> Resume | None:
        """Judge what was published since the last check; None if the chain is intact to the
        stream's end, else where to resume."""
        info = await self._js.stream_info(STREAM_NAME)
        last_seq = info.state.last_seq
        head = self._head
        store = _StoreWindow(self._recorder)
        findings: list[Finding] = []
        if head is not None and await self._judge_seq(store, head.seq) is None:
            # The verified head is gone: a purge, or a deletion at the tail.
            findings.append(
                Finding(
                    "missing",
                    head.seq,
                    head.position,
                    "the stream lost events it held (purged or deleted): re-publishing",
                )
            )
            await self._report(findings)
            return await self.start()
        lost = False
        raw = await self._read(self._verified_seq + 1, last_seq)
        judged_all = await asyncio.to_thread(lambda: [judge(store, *m) for m in raw])
        for judged in judged_all:
            if judged.finding is not None:
                findings.append(judged.finding)
                lost = True
                continue
            body = judged.body
            assert body is not None
            if body["prev_hash"] != (head.hash if head is not None else ZERO_HASH):
                findings.append(
                    Finding(
                        "missing",
                        judged.seq,
                        body["position"],
                        "does not follow the last verified event: events before it are "
                        "missing from the stream",
                    )
                )
                lost = True
                continue
            head = _Head(judged.seq, body["position"], body["hash"])
        if raw:
            self._verified_seq = raw[-1][0]
        if self._verified_seq < last_seq and not await self._holds_after(self._verified_seq):
            # The stream holds nothing after what was read, yet it reached `last_seq`: what
            # was published there was deleted before this check read it (a deleted tail).
            self._verified_seq = last_seq
            after = head.position if head is not None else 0
            if self._first_published(after) is not None:
                findings.append(
                    Finding(
                        "missing",
                        last_seq,
                        after,
                        f"the stream lost what it held after sequence "
                        f"{head.seq if head is not None else 0} (deleted at its tail): "
                        "re-publishing",
                    )
                )
                lost = True
        if head is not None:
            await self._samples(store, info.state.first_seq, head.seq, findings)
        await self._report(findings)
        self._head = head
        if head is None:
            return Resume(0, ZERO_HASH, last_seq, rewind=True) if lost else None
        if lost or (raw and head.seq != raw[-1][0]):
            # Something after the verified head is not the store's chain (a deleted tail, a
            # forged message): publishing goes on from the head, after the stream's end.
            log.warning("stream.behind", resume_after=head.position, seq=head.seq)
            return Resume(head.position, head.hash, last_seq, rewind=True)
        return None

    async def _holds_after(self, seq: int) -> bool:
        """Does the stream hold any message after sequence `seq`?"""
        try:
            await self._js.get_msg(
                STREAM_NAME, seq=seq + 1, subject=SUBJECT_PREFIX + ">", next=True
            )
        except NotFoundError:
            return False
        return True

    async def _read(
        self, start: int, last_seq: int
    ) -> list[tuple[int, str, dict[str, str] | None, bytes]]:
        """(seq, subject, headers, data) of the messages from `start` to `last_seq`."""
        if start > last_seq:
            return []
        out: list[tuple[int, str, dict[str, str] | None, bytes]] = []
        sub = await self._js.subscribe(
            SUBJECT_PREFIX + ">",
            stream=STREAM_NAME,
            ordered_consumer=True,
            config=ConsumerConfig(
                name=reader_name(),  # by name only: see deploy/nats-accounts.conf
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
            ),
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=5.0)
                except NatsTimeoutError:
                    return out  # the rest is judged next time
                meta = msg.metadata
                out.append((meta.sequence.stream, msg.subject, msg.headers, msg.data))
                if meta.sequence.stream >= last_seq or not meta.num_pending:
                    return out
        finally:
            await sub.unsubscribe()

    # --- both ------------------------------------------------------------------------------

    async def _samples(
        self, store: _StoreWindow, first_seq: int, below: int, findings: list[Finding]
    ) -> None:
        """Judge a few random messages before sequence `below` (reported, not healed: what is
        in the middle can't be put back in its place)."""
        if below <= first_seq or not self._sample:
            return
        for seq in random.sample(range(first_seq, below), min(self._sample, below - first_seq)):
            judged = await self._judge_seq(store, seq)
            if judged is not None and judged.finding is not None:
                findings.append(judged.finding)

    async def _judge_seq(self, store: _StoreWindow, seq: int) -> _Judged | None:
        """The message at `seq` judged; None if there is none (deleted, purged)."""
        try:
            msg = await self._js.get_msg(STREAM_NAME, seq=seq)
        except NotFoundError:
            return None
        assert msg.data is not None
        return await asyncio.to_thread(judge, store, seq, msg.subject or "", msg.headers, msg.data)

    async def _report(self, findings: Sequence[Finding]) -> None:
        for finding in findings:
            key = (finding.kind, finding.seq, finding.position)
            if key in self._reported:
                continue
            self._reported.add(key)
            self.findings.append(finding)
            report = log.error if finding.critical else log.warning
            report(
                "stream.finding",
                kind=finding.kind,
                seq=finding.seq,
                position=finding.position,
                detail=finding.detail,
            )
            if self._metrics is not None:
                self._metrics.stream_findings.labels(finding.kind).inc()
            try:
                await self._js.publish(
                    STREAM_ALERT_SUBJECT, json.dumps(finding.as_alert()).encode()
                )
            except Exception as exc:  # the alert is also in the log: never stop publishing
                log.warning("stream.alert_failed", error=f"{type(exc).__name__}: {exc}")


def _out_of_place(later: _Judged, body: dict[str, Any]) -> Finding:
    assert later.body is not None
    return Finding(
        "out_of_place",
        later.seq,
        later.body["position"],
        f"does not follow the intact message before it (position {body['position']}): "
        "events are missing before it, or it is a copy out of place",
    )


async def standing_alert(nc: Client) -> dict[str, Any] | None:
    """The newest alert on `tenantry.alert.stream` if it is critical (`tenantry health` fails
    while there is one), else None. A critical alert stands until a live `tenantry audit
    verify` passes (after someone removed what was forged), which publishes an all-clear."""
    try:
        msg = await nc.jetstream().get_last_msg(ALERT_STREAM, STREAM_ALERT_SUBJECT)
    except NotFoundError:
        return None
    alert = json.loads(msg.data or b"{}")
    return alert if isinstance(alert, dict) and alert.get("severity") == "critical" else None


async def publish_all_clear(nc: Client, detail: str) -> None:
    """Say on `tenantry.alert.stream` that the whole stream was verified against the store."""
    alert = {
        "severity": "ok",
        "kind": "verified",
        "stream": STREAM_NAME,
        "seq": None,
        "position": None,
        "detail": detail,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    await nc.publish(STREAM_ALERT_SUBJECT, json.dumps(alert).encode())
    await nc.flush()
