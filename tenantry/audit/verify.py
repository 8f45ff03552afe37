"""`tenantry audit verify`: recompute the hash chain of an export (and check its signed
checkpoint), or recompute the store's chain and compare it with the stream, and name the first
position where they break."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from domain.event_log import (
    STREAM_NAME,
    ZERO_HASH,
    NotificationLog,
    chained_body,
    published_bytes,
    read_published,
    verify_link,
)
from tenantry.audit.checkpoint import ChainSpan, check_checkpoint, is_checkpoint
from tenantry.audit.export import stream_messages

_POSITION = re.compile(rb'"position":(\d+)')


@dataclass
class Verdict:
    """What was verified (`span`), and the first problem, if any, with where it is."""

    span: ChainSpan = field(default_factory=ChainSpan)
    problem: str | None = None
    position: int | None = None
    line: int | None = None
    notes: list[str] = field(default_factory=list)
    # Failed only for want of a signed checkpoint: every event's hash and link checked out.
    chain_intact: bool = False
    also: list[str] = field(default_factory=list)  # further problems, after the first

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, problem: str, position: int | None, line: int | None = None) -> Verdict:
        self.problem, self.position, self.line = problem, position, line
        return self

    def report(self) -> str:
        span = self.span
        verified = (
            f"{span.count} events, positions {span.first_position}-{span.last_position}"
            if span.count
            else "no events"
        )
        lines = []
        if self.ok:
            lines.append(f"OK: {verified}, hash chain intact")
            if span.last_hash:
                lines.append(f"last hash: {span.last_hash}")
        elif self.chain_intact:
            lines.append(f"NOT VERIFIED: {verified}, hash chain intact; {self.problem}")
        else:
            where = f"position {self.position}" if self.position is not None else "start"
            if self.line is not None:
                where += f" (line {self.line})"
            lines.append(f"FAILED at {where}: {self.problem}")
            lines += [f"FAILED also: {problem}" for problem in self.also[:50]]
            if len(self.also) > 50:
                lines.append(f"FAILED also: {len(self.also) - 50} more messages")
            lines.append(f"verified before it: {verified}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def verify_export(lines: Iterable[bytes], public_key: Ed25519PublicKey | None = None) -> Verdict:
    """Check an export line by line: each event's hash over its contents, each `prev_hash`
    against the hash of the line before, positions increasing, then the checkpoint (required
    when `public_key` is given)."""
    verdict = Verdict()
    numbered = enumerate(lines, start=1)
    seen: dict[str, tuple[int, int]] = {}  # hash -> (line, position)
    checkpoint: dict[str, Any] | None = None
    prev_hash: str | None = None
    for number, raw in numbered:
        span = verdict.span
        after = f"after position {span.last_position}" if span.count else "at the start"
        if checkpoint is not None:
            return verdict.fail("a line follows the checkpoint", span.last_position, number)
        body = _parse(raw)
        if body is None:
            cut = not raw.endswith(b"\n")
            named = _POSITION.search(raw)
            position = int(named[1]) if named else None
            what = "is cut off: the file is truncated" if cut else "is not valid JSON: corrupted"
            event = f"the event {after}" + (f" (position {position})" if position else "")
            return verdict.fail(f"{event} {what}", position or span.last_position, number)
        if is_checkpoint(body):
            checkpoint = body
            continue
        position = body.get("position")
        if not isinstance(position, int) or not all(
            isinstance(body.get(k), str) for k in ("prev_hash", "hash")
        ):
            return verdict.fail(f"not an event (line {after})", span.last_position, number)
        if prev_hash is None:
            prev_hash = body["prev_hash"]
            if prev_hash == ZERO_HASH:
                verdict.notes.append("the chain starts at its beginning (prev_hash zero)")
            else:
                verdict.notes.append(
                    f"the export starts at position {position}: its prev_hash {prev_hash} is "
                    "taken as given (the events before it are not in this file)"
                )
        if body["prev_hash"] != prev_hash:
            why = _broken_link(body["prev_hash"], seen, numbered, span.last_position)
            return verdict.fail(why, position, number)
        if not verify_link(body, prev_hash):
            return verdict.fail(
                "its contents do not match its hash: the event was altered", position, number
            )
        if raw.rstrip(b"\n") != published_bytes(body):
            return verdict.fail(
                "its bytes are not the canonical encoding of its fields (a duplicated key, "
                "reordered keys, spaces or escapes): not the line that was published",
                position,
                number,
            )
        if span.last_position is not None and position <= span.last_position:
            return verdict.fail(
                f"comes after position {span.last_position}: out of order", position, number
            )
        seen[body["hash"]] = (number, position)
        prev_hash = body["hash"]
        verdict.span = span.then(body)
    return _checked_end(verdict, checkpoint, public_key)


def _checked_end(
    verdict: Verdict, checkpoint: dict[str, Any] | None, public_key: Ed25519PublicKey | None
) -> Verdict:
    last = verdict.span.last_position
    if checkpoint is None:
        if public_key is not None:
            verdict.chain_intact = True
            return verdict.fail(
                f"no signed checkpoint after position {last} (the file was not signed, or was "
                "cut at a line boundary)",
                last,
            )
        verdict.notes.append(
            "unsigned: events cut off the end at a line boundary can't be detected "
            "(export with --sign-key, verify with --public-key)"
        )
        return verdict
    problem = check_checkpoint(checkpoint, verdict.span, public_key)
    if problem is not None:
        return verdict.fail(problem, last)
    said = checkpoint["checkpoint"]
    if public_key is None:
        verdict.notes.append(
            "the checkpoint matches the file but its signature was not checked (--public-key)"
        )
    else:
        verdict.notes.append(
            f"signed checkpoint verified: {said['count']} events, signed at "
            f"{said.get('created_at')} (key id {checkpoint.get('key_id')})"
        )
    return verdict


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _broken_link(
    wanted: str,
    seen: dict[str, tuple[int, int]],
    rest: Iterator[tuple[int, bytes]],
    last_position: int | None,
) -> str:
    """Why a line's prev_hash is not the hash of the line before it."""
    before = f"position {last_position}" if last_position is not None else "the start"
    found = seen.get(wanted)
    if found is None:
        for number, raw in rest:
            body = _parse(raw)
            if body is not None and body.get("hash") == wanted:
                found = (number, int(body.get("position", -1)))
                break
    if found is not None:
        line, position = found
        return (
            f"does not follow {before}: the event it follows, position {position}, is at line "
            f"{line}: events reordered"
        )
    return (
        f"does not follow {before}: the event it follows is not in the file (dropped), or "
        f"{before} was altered together with its hash"
    )


# --- the live store against the stream ----------------------------------------------------


async def verify_live(recorder: NotificationLog, nc: Client) -> Verdict:
    """Recompute every stored event's published body and chain from zero, then read the
    stream in order: each message must be a stored event byte for byte, and the messages that
    extend the chain must reach the store's last event. Every message that is not a stored
    event is named (foreign or altered); stored events missing at the head, in the middle or
    at the tail fail; copies of events left on the stream before a heal are a note."""
    verdict = Verdict()
    chain = await asyncio.to_thread(_stored_chain, recorder)
    index = {position: i for i, (position, _, _) in enumerate(chain)}
    problems: list[str] = []
    expected = 0  # index in `chain` of the next event the stream's chain needs
    copies = 0
    gap: tuple[int, int] | None = None  # (seq, position) of the first message past a gap
    last_seq = await _last_seq(nc)  # deleted messages at the end keep their sequences
    last_on_chain = 0
    async for seq, data in stream_messages(nc):
        body = _parse(data)
        position = body.get("position") if body is not None else None
        if body is None or not isinstance(position, int):
            problems.append(f"seq {seq}: not an event")
            continue
        i = index.get(position)
        if i is None:
            problems.append(f"seq {seq} (position {position}): no event of the store")
            continue
        _, prev_hash, digest = chain[i]
        if body.get("hash") != digest or not verify_link(body, prev_hash):
            differ = (
                await asyncio.to_thread(_differing, recorder, position, prev_hash, body)
                if len(problems) < 50
                else "some fields"
            )
            problems.append(
                f"seq {seq} (position {position}): the stream and the store differ in {differ}"
            )
            continue
        if data != published_bytes(body):
            problems.append(f"seq {seq} (position {position}): not the canonical bytes")
            continue
        if i == expected:
            verdict.span = verdict.span.then(body)
            expected += 1
            last_on_chain = seq
        elif i < expected:
            copies += 1
        elif gap is None or expected > index[gap[1]]:
            gap = (seq, position)
    verdict.also += [f"{problem}: altered or foreign" for problem in problems]
    if expected < len(chain):
        missing = chain[expected][0]
        where = "at the head" if expected == 0 else "after position " + str(chain[expected - 1][0])
        if gap is not None and index[gap[1]] > expected:
            verdict.also.append(
                f"position {missing} is missing from the stream ({where}): the messages from "
                f"seq {gap[0]} on do not follow it",
            )
        elif last_seq > last_on_chain or (expected == 0 and last_seq):
            verdict.also.append(
                f"position {missing} to {chain[-1][0]} are missing from the stream ({where})"
            )
        else:
            unpublished = len(chain) - expected
            verdict.notes.append(
                f"{unpublished} stored events are not on the stream yet (is the relay running?)"
            )
    if copies:
        verdict.notes.append(
            f"{copies} messages are second copies of events already on the chain (left "
            "before the relay healed the stream)"
        )
    if verdict.also:
        first = verdict.also.pop(0)
        named = _POSITION_IN.search(first)
        return verdict.fail(first, int(named[1]) if named else None)
    return verdict


_POSITION_IN = re.compile(r"position (\d+)")


async def _last_seq(nc: Client) -> int:
    try:
        info = await nc.jetstream().stream_info(STREAM_NAME)
    except NotFoundError:
        return 0
    return int(info.state.last_seq)


def _differing(
    recorder: NotificationLog, position: int, prev_hash: str, body: dict[str, Any]
) -> str:
    """The fields in which `body` differs from the stored event at `position`."""
    stored = recorder.select_notifications(position, 1)
    expected = chained_body(stored[0], prev_hash)
    return ", ".join(sorted(k for k in {*body, *expected} if body.get(k) != expected.get(k)))


def _stored_chain(recorder: NotificationLog) -> list[tuple[int, str, str]]:
    """(position, prev_hash, hash) of every published stored event, chained from zero."""
    return [
        (e.body["position"], e.body["prev_hash"], e.body["hash"]) for e in read_published(recorder)
    ]
