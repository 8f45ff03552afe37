"""The signed checkpoint that may end an audit export: how many events, from which position to
which, the chain's hash before the first and after the last, when, signed with Ed25519.

It makes what the hash chain alone can't show detectable: events cut off the end of a file at a
line boundary, and a chain rewritten from some point on with its hashes recomputed."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.event_log import STREAM_NAME, canonical_json

ALGORITHM = "ed25519"


@dataclass(frozen=True)
class ChainSpan:
    """A contiguous run of the hash chain: what an export holds."""

    count: int = 0
    first_position: int | None = None
    last_position: int | None = None
    first_prev_hash: str | None = None
    last_hash: str | None = None

    def then(self, body: dict[str, Any]) -> ChainSpan:
        """This span with `body` appended."""
        return ChainSpan(
            count=self.count + 1,
            first_position=self.first_position if self.count else int(body["position"]),
            last_position=int(body["position"]),
            first_prev_hash=self.first_prev_hash if self.count else str(body["prev_hash"]),
            last_hash=str(body["hash"]),
        )

    def as_checkpoint(self, created_at: datetime) -> dict[str, Any]:
        return {
            "stream": STREAM_NAME,
            "count": self.count,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "first_prev_hash": self.first_prev_hash,
            "last_hash": self.last_hash,
            "created_at": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint: which key signed, to tell a wrong key from a bad signature."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed(checkpoint: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """`checkpoint` in its signed envelope: the signature is over its canonical JSON. Exports'
    checkpoints and the published ones (`tenantry.audit.checkpoints`) share it."""
    signature = private_key.sign(canonical_json(checkpoint))
    return {
        "checkpoint": checkpoint,
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def signature_problem(line: dict[str, Any], public_key: Ed25519PublicKey) -> str | None:
    """None if the envelope `line` is signed by `public_key`; else what is wrong."""
    checkpoint = line.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return "the checkpoint line is malformed"
    if line.get("algorithm") != ALGORITHM:
        return f"the checkpoint is not signed with {ALGORITHM}"
    if line.get("key_id") != key_id(public_key):
        return (
            f"the checkpoint was signed with another key (key id {line.get('key_id')}, "
            f"this public key's is {key_id(public_key)})"
        )
    try:
        signature = base64.b64decode(str(line.get("signature", "")), validate=True)
        public_key.verify(signature, canonical_json(checkpoint))
    except (InvalidSignature, ValueError):
        return "the checkpoint's signature is not valid: the checkpoint was altered"
    return None


def checkpoint_line(
    span: ChainSpan,
    private_key: Ed25519PrivateKey,
    now: datetime,
    tree: dict[str, Any] | None = None,
) -> bytes:
    """The last line of a signed export (canonical JSON, newline-terminated); `tree`: the
    Merkle tree's size and root, when the export starts at the log's first event."""
    checkpoint = {**span.as_checkpoint(now), **(tree or {})}
    return canonical_json(signed(checkpoint, private_key)) + b"\n"


def is_checkpoint(line: dict[str, Any]) -> bool:
    return "checkpoint" in line and "position" not in line


def check_checkpoint(
    line: dict[str, Any], span: ChainSpan, public_key: Ed25519PublicKey | None
) -> str | None:
    """None if the checkpoint is signed by `public_key` (when given) and describes `span`;
    else what is wrong."""
    checkpoint = line.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return "the checkpoint line is malformed"
    if public_key is not None and (problem := signature_problem(line, public_key)):
        return problem
    said = {k: checkpoint.get(k) for k in _SPAN_FIELDS}
    found = {k: getattr(span, k) for k in _SPAN_FIELDS}
    if said != found:
        differ = ", ".join(
            f"{k} {said[k]} (the file: {found[k]})" for k in said if said[k] != found[k]
        )
        return f"the file is not what was signed: the checkpoint says {differ}"
    return None


_SPAN_FIELDS = ("count", "first_position", "last_position", "first_prev_hash", "last_hash")


# --- keys ---------------------------------------------------------------------------------


def generate_key_pair(private_path: Path) -> Path:
    """Write a new private key (PEM, PKCS#8, readable by the owner only) to `private_path` and
    its public key (PEM) beside it, with `.pub` appended; return the public key's path."""
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key
