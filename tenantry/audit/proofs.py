"""Merkle proofs of the event log: the queries that make them (`audit_inclusion_proof`,
`audit_consistency_proof`, answered by the checkpoints role) and their offline verification
against signed checkpoints, with nothing but the proof, the checkpoints and the public key.

A proof document is one JSON object:
- inclusion: `{"kind": "inclusion_proof", "leaf_index", "tree_size", "root_hash", "event",
  "audit_path": [hex], "checkpoint": signed checkpoint of tree_size or null}`;
- consistency: `{"kind": "consistency_proof", "from_size", "to_size", "from_root", "to_root",
  "proof": [hex], "checkpoints": [signed checkpoints of either size]}`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from domain.event_log import ZERO_HASH, verify_link
from tenantry.audit.checkpoint import signature_problem
from tenantry.audit.merkle import MerkleTree, consistent, leaf_hash, root_from_inclusion
from tenantry.protocol import InvalidRequest, NotFound

if TYPE_CHECKING:
    from tenantry.audit.checkpoints import Checkpointer

INCLUSION = "audit_inclusion_proof"
CONSISTENCY = "audit_consistency_proof"
# Answered by the checkpoints role, not by the views (the query service leaves them alone).
PROOF_QUERIES = (INCLUSION, CONSISTENCY)


class InclusionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    position: int = Field(ge=1)
    size: int | None = Field(default=None, ge=1)


class ConsistencyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    from_size: int = Field(ge=1)
    to_size: int | None = Field(default=None, ge=1)


async def answer_proof(checkpointer: Checkpointer, name: str, data: bytes) -> dict[str, Any]:
    if name == INCLUSION:
        return await _inclusion(checkpointer, InclusionParams.model_validate_json(data or b"{}"))
    if name == CONSISTENCY:
        params = ConsistencyParams.model_validate_json(data or b"{}")
        return await _consistency(checkpointer, params)
    raise InvalidRequest(f"unknown query {name[:64]!r}")


async def _signed_size(checkpointer: Checkpointer, size: int | None, at_least: int) -> int:
    """The tree size a proof is made at: `size` if given, else the newest checkpoint's, signing
    one now when the newest does not reach `at_least` leaves yet."""
    if size is None:
        if checkpointer.newest_size < at_least:
            await checkpointer.catch_up()
            await checkpointer.maybe_checkpoint(force=True)
        size = checkpointer.newest_size
    if size < at_least:
        raise NotFound(
            f"the log on the stream has {size} events; it does not reach event {at_least} yet",
            tree_size=size,
        )
    if size > checkpointer.log_tree.size:
        raise InvalidRequest(
            f"the log has {checkpointer.log_tree.size} events, not {size}",
            tree_size=checkpointer.log_tree.size,
        )
    return size


async def _inclusion(checkpointer: Checkpointer, params: InclusionParams) -> dict[str, Any]:
    log_tree = checkpointer.log_tree
    index = log_tree.index_of(params.position)
    if index is None:
        await checkpointer.catch_up()
        index = log_tree.index_of(params.position)
    if index is None:
        raise NotFound(f"no published event at position {params.position}", **params.model_dump())
    size = await _signed_size(checkpointer, params.size, index + 1)
    return {
        "kind": "inclusion_proof",
        "leaf_index": index,
        "tree_size": size,
        "root_hash": log_tree.tree.root(size).hex(),
        "event": await checkpointer.event(index),
        "audit_path": [h.hex() for h in log_tree.tree.inclusion_proof(index, size)],
        "checkpoint": checkpointer.published.get(size),
    }


async def _consistency(checkpointer: Checkpointer, params: ConsistencyParams) -> dict[str, Any]:
    to_size = await _signed_size(checkpointer, params.to_size, params.from_size)
    tree = checkpointer.log_tree.tree
    return {
        "kind": "consistency_proof",
        "from_size": params.from_size,
        "to_size": to_size,
        "from_root": tree.root(params.from_size).hex(),
        "to_root": tree.root(to_size).hex(),
        "proof": [h.hex() for h in tree.consistency_proof(params.from_size, to_size)],
        "checkpoints": [
            checkpointer.published[size]
            for size in (params.from_size, to_size)
            if size in checkpointer.published
        ],
    }


# --- offline verification ------------------------------------------------------------------


def is_proof(document: dict[str, Any]) -> bool:
    return document.get("kind") in ("inclusion_proof", "consistency_proof")


def is_published_checkpoint(document: dict[str, Any]) -> bool:
    """A signed checkpoint of the log (as published on `tenantry.checkpoint`)."""
    checkpoint = document.get("checkpoint")
    return isinstance(checkpoint, dict) and "tree_size" in checkpoint


def checked_checkpoints(
    documents: Iterable[dict[str, Any]], public_key: Ed25519PublicKey | None
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """The checkpoints' bodies by tree size, and what is wrong with any of them (a bad
    signature, a line that is not a checkpoint, two checkpoints of one size that differ)."""
    by_size: dict[int, dict[str, Any]] = {}
    problems = []
    for document in documents:
        if not is_published_checkpoint(document):
            problems.append("a line of the checkpoints is not a signed checkpoint of the log")
            continue
        if public_key is not None and (problem := signature_problem(document, public_key)):
            problems.append(f"checkpoint of size {document['checkpoint']['tree_size']}: {problem}")
            continue
        body = document["checkpoint"]
        size = int(body["tree_size"])
        if size in by_size and by_size[size]["root_hash"] != body["root_hash"]:
            problems.append(f"two checkpoints of size {size} have different roots: a forked log")
        by_size[size] = body
    return by_size, problems


def verify_proof(
    document: dict[str, Any],
    checkpoints: Iterable[dict[str, Any]] = (),
    public_key: Ed25519PublicKey | None = None,
) -> tuple[bool, list[str]]:
    """(verified, what was found) for a proof document, against the checkpoints it carries and
    those given; without a public key the checkpoints' signatures are not checked (said)."""
    carried = document.get("checkpoints") or [document.get("checkpoint")]
    by_size, problems = checked_checkpoints([*(c for c in carried if c), *checkpoints], public_key)
    lines = [f"problem: {p}" for p in problems]
    if document.get("kind") == "inclusion_proof":
        ok, found = _verify_inclusion(document, by_size)
    else:
        ok, found = _verify_consistency(document, by_size)
    lines += found
    if public_key is None:
        lines.append("note: the checkpoints' signatures were not checked (--public-key)")
    return ok and not problems, lines


def _verify_inclusion(
    document: dict[str, Any], by_size: dict[int, dict[str, Any]]
) -> tuple[bool, list[str]]:
    event = document.get("event") or {}
    index, size = int(document["leaf_index"]), int(document["tree_size"])
    position = event.get("position")
    if not verify_link(event, str(event.get("prev_hash"))):
        return False, [f"FAILED: the event at position {position} does not match its hash"]
    path = [bytes.fromhex(h) for h in document["audit_path"]]
    root = root_from_inclusion(index, size, leaf_hash(str(event["hash"])), path)
    if root is None or root.hex() != document["root_hash"]:
        return False, [f"FAILED: the audit path does not lead to root {document['root_hash']}"]
    signed = by_size.get(size)
    if signed is None:
        return False, [f"FAILED: no checkpoint of size {size} to check the root against"]
    if signed["root_hash"] != root.hex():
        return False, [f"FAILED: the checkpoint of size {size} has another root: not in the log"]
    return True, [
        f"OK: the event at position {position} ({event.get('type')} {event.get('fqn')}) is "
        f"event {index + 1} of the {size} under the checkpoint signed at "
        f"{signed.get('created_at')} (root {root.hex()})"
    ]


def _verify_consistency(
    document: dict[str, Any], by_size: dict[int, dict[str, Any]]
) -> tuple[bool, list[str]]:
    old, new = int(document["from_size"]), int(document["to_size"])
    old_root, new_root = str(document["from_root"]), str(document["to_root"])
    proof = [bytes.fromhex(h) for h in document["proof"]]
    if not consistent(old, new, bytes.fromhex(old_root), bytes.fromhex(new_root), proof):
        return False, [f"FAILED: the proof does not show size {old} is a prefix of size {new}"]
    for size, root in ((old, old_root), (new, new_root)):
        signed = by_size.get(size)
        if signed is None:
            return False, [f"FAILED: no checkpoint of size {size} to check the root against"]
        if signed["root_hash"] != root:
            return False, [f"FAILED: the checkpoint of size {size} has another root"]
    return True, [
        f"OK: the log of {old} events is a prefix of the log of {new} events (both signed)"
    ]


def export_against_checkpoints(
    events: Iterable[dict[str, Any]], by_size: dict[int, dict[str, Any]]
) -> tuple[bool, list[str]]:
    """Check an export (its event bodies, already chain-verified) against signed checkpoints:
    the Merkle root at each checkpoint's size (when the export starts at the log's first event)
    or the head hash at each checkpoint's last position, and that the export reaches the newest
    checkpoint: events missing at its end (truncation) are named."""
    at_position = {int(c["last_position"]): c for c in by_size.values()}
    tree = MerkleTree()
    from_start: bool | None = None
    last_position, lines, ok = 0, [], True
    for event in events:
        if from_start is None:
            from_start = event["prev_hash"] == ZERO_HASH
        last_position = int(event["position"])
        tree.append(leaf_hash(str(event["hash"])))
        said = at_position.get(last_position)
        if said is None:
            continue
        if said["head_hash"] != event["hash"]:
            ok = False
            lines.append(
                f"FAILED: position {last_position} is not the event the checkpoint of size "
                f"{said['tree_size']} signed (its hash {said['head_hash']})"
            )
        elif from_start and (tree.size, tree.root().hex()) != (
            said["tree_size"],
            said["root_hash"],
        ):
            ok = False
            lines.append(
                f"FAILED: the first {tree.size} events do not have the root the checkpoint "
                f"of size {said['tree_size']} signed: the log was rewritten"
            )
    if not from_start:
        lines.append(
            "note: the export does not start at the log's first event: checked against the "
            "checkpoints' head hashes, not their Merkle roots"
        )
    if not by_size:
        return ok, lines
    newest = by_size[max(by_size)]
    if int(newest["last_position"]) > last_position:
        missing = f"{int(newest['tree_size']) - tree.size} events" if from_start else "events"
        lines.append(
            f"FAILED: truncated: the checkpoint signed at {newest['created_at']} says the log "
            f"had {newest['tree_size']} events up to position {newest['last_position']}; the "
            f"export ends at position {last_position}: {missing} missing at its end"
        )
        return False, lines
    if ok:
        lines.append(
            f"OK: the export holds every event of the newest checkpoint given (size "
            f"{newest['tree_size']}, signed at {newest['created_at']})"
        )
    return ok, lines
