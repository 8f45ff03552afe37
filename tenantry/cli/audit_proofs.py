"""`tenantry audit prove|consistency|checkpoints`, and what `audit verify` does with proofs,
checkpoints and `--checkpoint`: the Merkle side of the audit log (tenantry.audit.proofs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantry.audit.merkle import MerkleTree, leaf_hash
from tenantry.cli.bus import UNREACHABLE, connect_or_explain
from tenantry.cli.sanitize import for_terminal, lines_for_terminal
from tenantry.settings import Settings

if TYPE_CHECKING:  # `tenantry --help` builds this module's parsers: no cryptography, no domain
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tenantry.audit.checkpoint import ChainSpan


def register(audit_verbs: Any) -> None:
    prove = audit_verbs.add_parser(
        "prove",
        help="a Merkle inclusion proof of one event (JSON; check it offline with `verify`)",
    )
    prove.add_argument("position", type=int, help="the event's position")
    prove.add_argument("--size", type=int, help="the log size to prove under (default: newest)")
    prove.add_argument("-o", "--output", type=Path, help="a file (default: stdout)")
    prove.set_defaults(handler=_prove)

    consistency = audit_verbs.add_parser(
        "consistency",
        help="a Merkle consistency proof: the log of OLD events is a prefix of the log of NEW",
    )
    consistency.add_argument("old", type=int, help="the older checkpoint's tree size")
    consistency.add_argument("new", type=int, nargs="?", help="the newer one's (default: newest)")
    consistency.add_argument("-o", "--output", type=Path, help="a file (default: stdout)")
    consistency.set_defaults(handler=_consistency)

    checkpoints = audit_verbs.add_parser(
        "checkpoints",
        help="print the signed checkpoints on TENANTRY_CHECKPOINTS as JSON lines",
    )
    checkpoints.add_argument("--follow", "-f", action="store_true", help="keep printing new ones")
    checkpoints.add_argument("--last", action="store_true", help="only the newest")
    checkpoints.set_defaults(handler=_checkpoints)


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    verify.add_argument(
        "--checkpoint",
        action="append",
        type=Path,
        default=[],
        help="signed checkpoints (JSON lines, from `audit checkpoints`): the export must hold "
        "what they signed (truncation is reported against the newest); repeatable",
    )


# --- asking the bus ------------------------------------------------------------------------


def _prove(args: argparse.Namespace, settings: Settings) -> int:
    params: dict[str, Any] = {"position": args.position}
    if args.size is not None:
        params["size"] = args.size
    return _write(asyncio.run(_ask(settings, "audit_inclusion_proof", params, "prove")), args)


def _consistency(args: argparse.Namespace, settings: Settings) -> int:
    params: dict[str, Any] = {"from_size": args.old}
    if args.new is not None:
        params["to_size"] = args.new
    answer = asyncio.run(_ask(settings, "audit_consistency_proof", params, "consistency"))
    return _write(answer, args)


def _write(answer: dict[str, Any] | int, args: argparse.Namespace) -> int:
    if isinstance(answer, int):
        return answer
    text = json.dumps(answer, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


async def _ask(
    settings: Settings, query: str, params: dict[str, Any], verb: str
) -> dict[str, Any] | int:
    """The answer's data, or the exit code after saying why not."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeoutError

    from tenantry.protocol import query_subject

    nc = await connect_or_explain(settings, f"audit {verb}")
    if nc is None:
        return UNREACHABLE
    try:
        reply = await nc.request(query_subject(query), json.dumps(params).encode(), 10)
    except (NoRespondersError, NatsTimeoutError):
        print(
            f"tenantry audit {verb}: no answer: is the checkpoints role running "
            "(`tenantry serve checkpoints`, or `tenantry up`)?",
            file=sys.stderr,
        )
        return 1
    finally:
        await nc.close()
    answer = json.loads(reply.data)
    if not answer.get("ok"):
        error = answer["error"]
        message = for_terminal(f"{error['code']}: {error['message']}")
        print(f"tenantry audit {verb}: {message}", file=sys.stderr)
        return 1
    data: dict[str, Any] = answer["data"]
    return data


def _checkpoints(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_print_checkpoints(settings, args.follow, args.last))


async def _print_checkpoints(settings: Settings, follow: bool, last: bool) -> int:
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    from tenantry.audit.checkpoints import CHECKPOINT_STREAM
    from tenantry.protocol import CHECKPOINT_SUBJECT

    nc = await connect_or_explain(settings, "audit checkpoints")
    if nc is None:
        return UNREACHABLE
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(CHECKPOINT_STREAM)
        except NotFoundError:
            info = None
        last_seq = info.state.last_seq if info is not None else 0
        if not follow and not last_seq:
            return 0
        policy = DeliverPolicy.LAST if last else DeliverPolicy.ALL
        sub = await js.subscribe(
            CHECKPOINT_SUBJECT,
            stream=CHECKPOINT_STREAM if info is not None else None,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=policy),
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=None if follow else 10)
                except NatsTimeoutError:
                    print(
                        "tenantry audit checkpoints: the stream stopped delivering", file=sys.stderr
                    )
                    return 1
                print(msg.data.decode(), flush=True)
                if not follow and msg.metadata.sequence.stream >= last_seq:
                    return 0
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


# --- verifying offline -----------------------------------------------------------------------


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file: one object (maybe indented), or JSON lines."""
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return whole if isinstance(whole, list) else [whole]


def first_document(path: Path) -> dict[str, Any] | None:
    """The first line of a file parsed, if it is a JSON object that is a proof or a published
    checkpoint (what `verify` tells apart from an export); else None."""
    from tenantry.audit.proofs import is_proof, is_published_checkpoint

    try:
        documents = read_documents(path)
    except ValueError:
        return None
    first = documents[0] if documents else None
    if isinstance(first, dict) and (is_proof(first) or is_published_checkpoint(first)):
        return first
    return None


def verify_document(path: Path, public_key: Any, checkpoint_files: list[Path]) -> int:
    """`audit verify` of a proof, or of a file of checkpoints."""
    from tenantry.audit.proofs import checked_checkpoints, is_proof, verify_proof

    documents = read_documents(path)
    given = [c for file in checkpoint_files for c in read_documents(file)]
    if is_proof(documents[0]):
        ok, lines = verify_proof(documents[0], given, public_key)
    else:
        by_size, problems = checked_checkpoints([*documents, *given], public_key)
        ok = not problems
        lines = [f"FAILED: {p}" for p in problems]
        if ok:
            signed = "signed, signatures verified" if public_key else "signatures NOT checked"
            lines.append(f"OK: {len(by_size)} checkpoints ({signed})")
    # What a proof or checkpoint file holds is quoted as text, not run by the terminal.
    print(lines_for_terminal("\n".join(lines)))
    return 0 if ok else 1


def export_signed(path: Path, checkpoint_files: list[Path]) -> bool:
    """Whether `audit verify` requires the export's own signed checkpoint: always, unless
    published checkpoints are given and the export has no checkpoint line of its own."""
    from tenantry.audit.checkpoint import is_checkpoint

    if not checkpoint_files:
        return True
    with path.open("rb") as lines:
        last = b""
        for last in lines:  # noqa: B007 - only the last line is wanted
            pass
    try:
        return is_checkpoint(json.loads(last))
    except ValueError:
        return True


def export_against(path: Path, checkpoint_files: list[Path], public_key: Any) -> int:
    """After an export's chain verified: the export against the checkpoints given."""
    from tenantry.audit.checkpoint import is_checkpoint
    from tenantry.audit.proofs import checked_checkpoints, export_against_checkpoints

    given = [c for file in checkpoint_files for c in read_documents(file)]
    by_size, problems = checked_checkpoints(given, public_key)
    with path.open("rb") as lines:
        events = (e for e in map(json.loads, lines) if not is_checkpoint(e))
        ok, said = export_against_checkpoints(events, by_size)
    print(lines_for_terminal("\n".join([*(f"FAILED: {p}" for p in problems), *said])))
    return 0 if ok and not problems else 1


# --- what an export writes beside itself -----------------------------------------------------

VERIFIER_NAME = "verify_tenantry_export.py"
_LAST_HASH = re.compile(rb'"hash":"([0-9a-f]{64})"\}\n$')


class TreeOfLines:
    """The Merkle tree of the lines an export writes (their `hash`, the last field of each)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self.tree = MerkleTree()

    def write(self, line: bytes) -> None:
        found = _LAST_HASH.search(line)
        if found:
            self.tree.append(leaf_hash(found[1].decode()))
        self._write(line)

    def signed_fields(self, span: ChainSpan) -> dict[str, Any] | None:
        """The tree's size and root for the export's checkpoint, when the export starts at the
        log's first event (an export from the middle has no root of the log to sign)."""
        from domain.event_log import ZERO_HASH

        if span.first_prev_hash != ZERO_HASH or self.tree.size != span.count:
            return None
        return {"tree_size": self.tree.size, "root_hash": self.tree.root().hex()}


def write_verifier(export: Path, key: Ed25519PrivateKey | None) -> list[Path]:
    """The standalone verifier (and the public key, when signed) beside `export`."""
    from cryptography.hazmat.primitives import serialization

    from tenantry.audit import standalone_verifier

    script = export.with_name(VERIFIER_NAME)
    script.write_bytes(Path(standalone_verifier.__file__).read_bytes())
    written = [script]
    if key is not None:
        public = export.with_name(export.name + ".pub")
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        written.append(public)
    return written
