#!/usr/bin/env python3
"""Verify a Tenantry audit export yourself, with nothing of Tenantry's installed.

    python3 verify_tenantry_export.py EXPORT.jsonl [--public-key KEY.pub]
                                      [--checkpoint CHECKPOINTS.jsonl ...]

Python 3.9 or later. Everything is the standard library except one import: `cryptography`
(pip install cryptography), for Ed25519 signatures, needed only with --public-key.

What it checks (Tenantry's docs/design.md, "The audit log, byte for byte", defines the bytes):
1. Each line is an event, exactly as canonical JSON: the event's fields other than `prev_hash`
   and `hash`, keys sorted, no spaces, UTF-8 (non-ASCII not escaped), integers only, then
   `,"prev_hash":"…","hash":"…"}` appended.
2. hash = hex SHA-256 of (prev_hash, 64 ASCII hex characters) followed by that canonical JSON,
   and each prev_hash is the hash of the line before (the first event's is 64 zeros).
3. The Merkle tree of RFC 9162 over the events: leaf = SHA-256(0x00 || the 32 bytes of `hash`),
   node = SHA-256(0x01 || left || right), split at the largest power of two below the size.
4. A last line `{"checkpoint": {...}, "signature": ...}`, if there: signed by the key, and it
   says what the file holds (count, positions, first prev_hash, last hash, Merkle root).
5. Each --checkpoint (JSON lines, as published on `tenantry.checkpoint`): signed by the key,
   and the file holds what it signed: its head hash at its last position and, for an export
   from the log's start, its Merkle root at its size. The newest one must not be past the end
   of the file: events cut off the end are reported.
Exit status 0 when everything holds, 1 naming the first failure."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Iterable
from typing import Any

ZERO = "0" * 64


def no_floats(text: str) -> Any:
    raise ValueError(f"a number that is not an integer: {text}")


# Built once: json.dumps and json.loads with options build a new encoder or decoder per call.
canonical_text = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
decoder = json.JSONDecoder(parse_float=no_floats, parse_constant=no_floats)
parse = decoder.decode


def parse_line(text: str) -> Any:
    """`parse(text)` for a line ending in a newline: the same value, or the same error. A value
    that ends just before the newline (every line an export holds) is read by `raw_decode`
    alone, without `decode`'s two whitespace scans (a fifth of the time spent per line); any
    other line, leading space or extra data, goes through `parse` for its answer."""
    try:
        value, end = decoder.raw_decode(text)
    except ValueError:
        return parse(text)
    return value if end == len(text) - 1 else parse(text)


def canonical(value: Any) -> bytes:
    return canonical_text(value).encode()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Tree:
    """RFC 9162's Merkle tree hash, computed as leaves come: only the right edge is kept."""

    def __init__(self) -> None:
        self.size = 0
        self.edge: list[tuple[int, bytes]] = []  # (leaves under it, hash), largest first

    def add(self, chain_hash: str) -> None:
        self.add_raw(bytes.fromhex(chain_hash))

    def add_raw(self, chain_hash: bytes) -> None:
        """`add`, given the 32 bytes of the hash rather than its hex."""
        count, digest = 1, hashlib.sha256(b"\x00" + chain_hash).digest()
        while self.edge and self.edge[-1][0] == count:
            count, digest = count * 2, node(self.edge.pop()[1], digest)
        self.edge.append((count, digest))
        self.size += 1

    def root(self) -> str:
        if not self.edge:
            return hashlib.sha256(b"").hexdigest()
        digest = self.edge[-1][1]
        for _, left in reversed(self.edge[:-1]):
            digest = node(left, digest)
        return digest.hex()


def check_signature(envelope: dict[str, Any], public_key: Any) -> str | None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if envelope.get("key_id") != hashlib.sha256(raw).hexdigest()[:16]:
        return f"signed with another key (key id {envelope.get('key_id')})"
    try:
        signature = base64.b64decode(envelope["signature"], validate=True)
        public_key.verify(signature, canonical(envelope["checkpoint"]))
    except (InvalidSignature, ValueError, KeyError):
        return "the signature is not valid: the checkpoint was altered"
    return None


def at(number: int, body: dict[str, Any]) -> str:
    return f"line {number} (position {body.get('position')})"


def verify(
    lines: Iterable[bytes], public_key: Any, checkpoints: list[dict[str, Any]]
) -> str | None:
    """The first problem found, or None; prints what was verified."""
    tree, prev, first, last, end = Tree(), None, None, 0, None
    at_position = {c["checkpoint"]["last_position"]: c["checkpoint"] for c in checkpoints}
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            return f"line {number}: cut off: the file is truncated"
        if end is not None:
            return f"line {number}: a line after the checkpoint"
        try:
            body = parse_line(line.decode("utf-8"))
        except ValueError as exc:
            return f"line {number}: not JSON ({exc}): the file is damaged"
        if "checkpoint" in body and "position" not in body:
            end = body
            continue
        prev_hash, digest = str(body.pop("prev_hash", None)), str(body.pop("hash", None))
        text = canonical(body)  # every field but prev_hash and hash
        if line != b'%s,"prev_hash":"%s","hash":"%s"}\n' % (
            text[:-1],
            prev_hash.encode(),
            digest.encode(),
        ):
            return f"{at(number, body)}: not the canonical encoding of an event: altered"
        raw = hashlib.sha256(prev_hash.encode("ascii") + text).digest()
        if raw.hex() != digest:
            return f"{at(number, body)}: its hash does not match its contents: altered"
        if prev is not None and prev_hash != prev:
            return f"{at(number, body)}: does not follow the line before (dropped, reordered)"
        if body["position"] <= last:
            return f"{at(number, body)}: out of order"
        if first is None:
            first = {"position": body["position"], "prev_hash": prev_hash}
        prev, last = digest, body["position"]
        tree.add_raw(raw)
        said = at_position.get(last)
        if said and said["head_hash"] != prev:
            return f"{at(number, body)}: not the event checkpoint {said['tree_size']} signed"
        if said and first["prev_hash"] == ZERO and said["root_hash"] != tree.root():
            return f"the Merkle root at size {tree.size} is not what its checkpoint signed"
    from_start = first is not None and first["prev_hash"] == ZERO
    print(f"chain OK: {tree.size} events, last position {last}")
    if from_start:
        print(f"Merkle root of all {tree.size} events: {tree.root()}")
    if end is not None:
        said = end["checkpoint"]
        problem = public_key is not None and check_signature(end, public_key)
        if problem:
            return f"the export's checkpoint: {problem}"
        found = {"count": tree.size, "last_position": last, "last_hash": prev}
        if first is not None:
            found.update(first_position=first["position"], first_prev_hash=first["prev_hash"])
        if from_start:
            found.update(tree_size=tree.size, root_hash=tree.root())
        for key, value in found.items():
            if key in said and said[key] != value:
                return f"the export's checkpoint says {key} {said[key]}, the file {value}"
        checked = "signature verified" if public_key else "signature NOT checked: --public-key"
        print(f"the export's checkpoint matches the file ({checked})")
    elif public_key is not None and not checkpoints:  # signed checkpoints given stand in
        return "no checkpoint line at the end: the file was cut, or it was not signed"
    if checkpoints:
        newest = max((c["checkpoint"] for c in checkpoints), key=lambda c: c["tree_size"])
        if newest["last_position"] > last:
            return (
                f"truncated: the checkpoint signed at {newest['created_at']} says the log had "
                f"{newest['tree_size']} events up to position {newest['last_position']}; the "
                f"export ends at position {last}"
            )
        print(f"holds everything the {len(checkpoints)} checkpoints given signed")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("export")
    parser.add_argument("--public-key", help="the signer's Ed25519 public key (PEM)")
    parser.add_argument("--checkpoint", action="append", default=[], help="JSON lines")
    args = parser.parse_args(argv)
    public_key = None
    if args.public_key:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        with open(args.public_key, "rb") as pem:
            public_key = load_pem_public_key(pem.read())
    checkpoints: list[dict[str, Any]] = []
    for path in args.checkpoint:
        with open(path, "rb") as lines:
            checkpoints += [json.loads(line) for line in lines if line.strip()]
    for envelope in checkpoints:
        problem = check_signature(envelope, public_key) if public_key else None
        if problem or "tree_size" not in envelope.get("checkpoint", {}):
            print(f"FAILED: a --checkpoint: {problem or 'not a checkpoint of the log'}")
            return 1
    with open(args.export, "rb") as lines:
        problem = verify(lines, public_key, checkpoints)
    print(f"FAILED: {problem}" if problem else "VERIFIED")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
