"""The relay's publishing side: chained events sent to JetStream in batches, acks awaited per batch.

On a stream that allows atomic publish (nats-server ≥ 2.12, `allow_atomic`), a batch of up to
`ATOMIC_BATCH_MAX` events is one atomic batch: stored whole or not at all, conditional on the
stream's last sequence (`Nats-Expected-Last-Sequence` on its first message), answered by one ack
for the whole batch. Every message keeps its `Nats-Msg-Id`, so the server still drops a
re-published event (it refuses the whole batch that holds it). On a stream without atomic
publish (an older server), each event is a batch of its own, conditional on the event before it
(`Nats-Expected-Last-Msg-Id`), acked one by one.

Either way every batch is conditional on everything sent before it: a refusal (a second relay,
a restarted server) refuses what follows too, and the relay reads the stream's tail again
(`tenantry.log.stream_check` decides where to resume)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import NamedTuple

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js.errors import APIError, NoStreamResponseError

from tenantry.log.stream_check import msg_id

# nats-server's default limit on the messages of one atomic batch (jetstream `max_batch_size`).
ATOMIC_BATCH_MAX = 1000


class Chained(NamedTuple):
    """One event ready to publish: its subject, its bytes, its store position (a tuple: the
    relay makes one for every event)."""

    subject: str
    payload: bytes
    position: int


@dataclass(frozen=True)
class Batch:
    """Messages sent together: all but the last already in the bus's wire format (`HPUB`),
    the last one (subject, headers, payload) sent asking for the ack."""

    leading: bytes
    last: tuple[str, bytes, bytes]
    count: int


def _headers(headers: dict[str, str]) -> bytes:
    """A NATS header block. Only ours go here: names and values of ids, digits and hex, so
    nothing to validate or escape (nats-py's `publish` spends more on that than on the rest)."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _hpub(subject: str, reply: str, headers: bytes, payload: bytes) -> bytes:
    """One message with headers as the bus protocol writes it."""
    size = len(headers) + len(payload)
    return b"".join(
        (f"HPUB {subject} {reply} {len(headers)} {size}\r\n".encode(), headers, payload, b"\r\n")
    )


def _batch(messages: list[tuple[str, bytes, dict[str, str]]]) -> Batch:
    *leading, (subject, payload, headers) = messages
    wire = b"".join(_hpub(s, "", _headers(h), p) for s, p, h in leading)
    return Batch(wire, (subject, _headers(headers), payload), len(messages))


def atomic_batches(events: list[Chained], last_seq: int) -> list[Batch]:
    """`events` as atomic batches, the first expecting the stream's last sequence `last_seq`
    and each next one the sequence the batch before it ends at."""
    batches = []
    for start in range(0, len(events), ATOMIC_BATCH_MAX):
        chunk = events[start : start + ATOMIC_BATCH_MAX]
        expected = str(last_seq + start)
        if len(chunk) == 1:
            # One event (the usual case once caught up): a plain publish on the same
            # condition is as atomic, and the server answers it sooner than a batch.
            headers = {"Nats-Msg-Id": msg_id(chunk[0].position)}
            headers["Nats-Expected-Last-Sequence"] = expected
            batches.append(_batch([(chunk[0].subject, chunk[0].payload, headers)]))
            continue
        batch_id = uuid.uuid4().hex
        first, *middle, last = chunk
        # The messages between the first and the last carry the same three headers: written
        # straight to the wire format, the relay's main cost per event after reading it.
        wire = [
            _hpub(
                first.subject,
                "",
                _headers(
                    {
                        "Nats-Msg-Id": msg_id(first.position),
                        "Nats-Batch-Id": batch_id,
                        "Nats-Batch-Sequence": "1",
                        "Nats-Expected-Last-Sequence": expected,
                    }
                ),
                first.payload,
            )
        ]
        for n, event in enumerate(middle, 2):
            headers_ = (
                f"NATS/1.0\r\nNats-Msg-Id: {msg_id(event.position)}\r\n"
                f"Nats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: {n}\r\n\r\n"
            ).encode()
            size = len(headers_)
            wire.append(f"HPUB {event.subject}  {size} {size + len(event.payload)}\r\n".encode())
            wire += (headers_, event.payload, b"\r\n")
        closing = {
            "Nats-Msg-Id": msg_id(last.position),
            "Nats-Batch-Id": batch_id,
            "Nats-Batch-Sequence": str(len(chunk)),
            "Nats-Batch-Commit": "1",
        }
        batches.append(
            Batch(b"".join(wire), (last.subject, _headers(closing), last.payload), len(chunk))
        )
    return batches


def conditional_messages(events: list[Chained], after: int, last_seq: int | None) -> list[Batch]:
    """`events` one per batch, each conditional on the one before it; the first on the
    stream's last sequence when a check gave it (the message there may be a forged one, whose
    id no publish can expect), else on the event at position `after`."""
    batches = []
    previous = after
    for event in events:
        headers = {"Nats-Msg-Id": msg_id(event.position)}
        if last_seq is not None and previous == after:
            headers["Nats-Expected-Last-Sequence"] = str(last_seq)
        elif previous:
            headers["Nats-Expected-Last-Msg-Id"] = msg_id(previous)
        else:
            headers["Nats-Expected-Last-Sequence"] = "0"
        batches.append(_batch([(event.subject, event.payload, headers)]))
        previous = event.position
    return batches


class Pipeline:
    """Batches in flight, their acks matched by reply subject: each future gives the number of
    events the batch stored, or the refusal.

    nats-py's own `publish_async` leaves the future unresolved forever when the server answers
    with a 400 error (its error handler raises instead of setting the exception), and a refused
    conditional publish is exactly the answer a relay must be able to see."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._futures: dict[str, tuple[asyncio.Future[int], int]] = {}
        self._counter = 0

    async def send(self, batch: Batch) -> asyncio.Future[int]:
        if not self._prefix:
            self._prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        self._counter += 1
        token = str(self._counter)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._futures[token] = (future, batch.count)
        subject, headers, payload = batch.last
        if self._nc.is_closed:
            raise ConnectionClosedError
        # The batch's bytes go into the connection's buffer (where `publish` puts each
        # message) at once, then flushed: nats-py 2.16, pinned in pyproject.toml.
        await self._nc._send_command(
            batch.leading + _hpub(subject, self._prefix + token, headers, payload)
        )
        await self._nc._flush_pending()
        return future

    def forget(self) -> None:
        """Cancel the batches whose acks are no longer awaited (the relay resyncs)."""
        for future, _ in self._futures.values():
            future.cancel()
        self._futures.clear()

    async def _on_ack(self, msg: Msg) -> None:
        future, count = self._futures.pop(msg.subject.rsplit(".", 1)[-1], (None, 0))
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStreamResponseError())
            return
        if b'"duplicate"' in msg.data and b'"error"' not in msg.data:
            # Not stored: the server remembered the id. A second relay published it first,
            # or a healed event's id was still in the window: read the stream again.
            future.set_exception(
                APIError(code=409, description="the stream dropped it as a duplicate")
            )
            return
        if b'"error"' not in msg.data:  # the usual answer, {"stream": …, "seq": …}: stored
            future.set_result(count)
            return
        error = json.loads(msg.data).get("error")
        if error is None:
            future.set_result(count)
            return
        future.set_exception(
            APIError(
                code=error.get("code"),
                err_code=error.get("err_code"),
                description=error.get("description"),
            )
        )
