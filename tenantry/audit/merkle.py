"""The Merkle tree over the event log (RFC 9162 §2.1): its hashes, an append-only tree that
keeps every complete subtree, inclusion and consistency proofs, and their verification.

A leaf is one published event; its leaf bytes are the 32 raw bytes of the event's chain hash
(the 64 hex characters of `hash`, decoded). The chain hash already covers every field of the
event and the whole history before it, so the tree needs nothing else of the event."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256 of the empty string


def leaf_hash(chain_hash_hex: str) -> bytes:
    """SHA-256(0x00 || the 32 bytes of the event's chain hash)."""
    return hashlib.sha256(LEAF_PREFIX + bytes.fromhex(chain_hash_hex)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n > 1): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only tree that keeps the hash of every complete, aligned subtree: level l
    holds the subtrees of 2**l leaves (level 0: the leaf hashes). Appending is O(1) amortized,
    the root of any size and any proof take O(log n) stored hashes, and nothing is ever
    recomputed from the leaves. Memory: about 64 bytes a leaf."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash (see `leaf_hash`), completing the subtrees it closes."""
        node, index, level = leaf, self.size, 0
        while True:
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += node
            if index % 2 == 0:
                break
            left = self._subtree(level, index - 1)
            node, index, level = node_hash(left, node), index // 2, level + 1
        self.size += 1

    def _subtree(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * 32 : index * 32 + 32])

    def leaf(self, index: int) -> bytes:
        return self._subtree(0, index)

    def hash_of(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), where `start` is a multiple of the largest power of two
        below end - start (every range the RFC's recursion asks for is)."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self._subtree(n.bit_length() - 1, start // n)
        k = _largest_power_of_two_below(n)
        return node_hash(self.hash_of(start, start + k), self.hash_of(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree's first `size` leaves (all of them by default)."""
        size = self.size if size is None else size
        self._check_size(size)
        return self.hash_of(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1)."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*self._path(m, start, start + k), self.hash_of(start + k, end)]
        return [*self._path(m - k, start + k, end), self.hash_of(start, start + k)]

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1)."""
        self._check_size(new_size)
        if not 0 < old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [self.hash_of(start, end)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, whole), self.hash_of(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self.hash_of(start, start + k)]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of a stream of leaf hashes, keeping only the O(log n) frontier."""
    frontier: list[tuple[int, bytes]] = []  # (leaves under it, hash), largest first
    for leaf in leaves:
        count, node = 1, leaf
        while frontier and frontier[-1][0] == count:
            count, node = count * 2, node_hash(frontier.pop()[1], node)
        frontier.append((count, node))
    if not frontier:
        return EMPTY_ROOT
    node = frontier.pop()[1]
    while frontier:
        node = node_hash(frontier.pop()[1], node)
    return node


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root that `path` proves `leaf` (at `index`) under, or None if the path can't be a
    path of that leaf in a tree of `size` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def consistent(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True if `proof` shows that the tree of `old_size` with `old_root` is a prefix of the
    tree of `new_size` with `new_root` (RFC 9162 §2.1.4.2)."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
