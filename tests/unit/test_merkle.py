"""The Merkle tree against RFC 9162 §2.1 itself: a reference written here straight from the
RFC's recursive definitions of MTH, PATH and PROOF (lists of leaves, no shortcuts), compared
with the incremental tree for every size 1-300 and random pairs beyond, and the RFC's
verification algorithms accepting exactly the right proofs."""

from __future__ import annotations

import hashlib
import random
from functools import cache

import pytest

from tenantry.audit.merkle import (
    MerkleTree,
    consistent,
    leaf_hash,
    root_from_inclusion,
    root_of,
)

# --- the reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1, word for word ---------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    return _ref_mth(tuple(d))


@cache  # the definition, remembered: the tests ask for the same ranges often
def _ref_mth(d: tuple[bytes, ...]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = _k(n)
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# --- the data: leaf bytes as the log's are (32 bytes of a chain hash) -----------------------

LEAVES = [_h(str(i).encode()) for i in range(300)]


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    built = MerkleTree()
    for data in LEAVES:
        built.append(leaf_hash(data.hex()))
    return built


def test_the_leaf_hash_is_sha256_of_0x00_and_the_chain_hash_bytes() -> None:
    chain_hash = "ab" * 32
    assert leaf_hash(chain_hash) == _h(b"\x00" + bytes.fromhex(chain_hash))


def test_the_root_of_every_size_is_the_rfc_mth(tree: MerkleTree) -> None:
    assert tree.root(0) == _h(b"")
    for size in range(1, 301):
        expected = ref_mth(LEAVES[:size])
        assert tree.root(size) == expected, size
        assert root_of(leaf_hash(x.hex()) for x in LEAVES[:size]) == expected, size


def test_inclusion_proofs_for_every_leaf_of_every_size_1_to_300(tree: MerkleTree) -> None:
    for size in range(1, 301):
        root = ref_mth(LEAVES[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == ref_path(index, LEAVES[:size]), (index, size)
            leaf = leaf_hash(LEAVES[index].hex())
            assert root_from_inclusion(index, size, leaf, proof) == root, (index, size)


def test_consistency_proofs_for_every_pair_up_to_300(tree: MerkleTree) -> None:
    for new in range(1, 301):
        new_root = ref_mth(LEAVES[:new])
        for old in range(1, new + 1):
            proof = tree.consistency_proof(old, new)
            assert proof == ref_proof(old, LEAVES[:new]), (old, new)
            assert consistent(old, new, ref_mth(LEAVES[:old]), new_root, proof), (old, new)


def test_random_pairs_in_a_larger_tree() -> None:
    rng = random.Random(9162)
    data = [_h(b"big" + str(i).encode()) for i in range(3000)]
    tree = MerkleTree()
    for x in data:
        tree.append(leaf_hash(x.hex()))
    for _ in range(60):
        new = rng.randint(1, len(data))
        old = rng.randint(1, new)
        index = rng.randrange(new)
        new_root = ref_mth(data[:new])
        assert tree.root(new) == new_root
        assert tree.inclusion_proof(index, new) == ref_path(index, data[:new])
        assert tree.consistency_proof(old, new) == ref_proof(old, data[:new])
        assert consistent(old, new, ref_mth(data[:old]), new_root, ref_proof(old, data[:new]))


def test_wrong_proofs_are_refused(tree: MerkleTree) -> None:
    rng = random.Random(14)
    for _ in range(300):
        size = rng.randint(2, 300)
        index = rng.randrange(size)
        root = tree.root(size)
        leaf = leaf_hash(LEAVES[index].hex())
        proof = tree.inclusion_proof(index, size)
        other = leaf_hash(LEAVES[(index + 1) % size].hex())
        assert root_from_inclusion(index, size, other, proof) != root
        flipped = [*proof]
        at = rng.randrange(len(flipped))
        flipped[at] = bytes([flipped[at][0] ^ 1]) + flipped[at][1:]
        assert root_from_inclusion(index, size, leaf, flipped) != root
        assert root_from_inclusion(index, size, leaf, proof[:-1]) != root
        old = rng.randint(1, size - 1)
        cproof = tree.consistency_proof(old, size)
        old_root = tree.root(old)
        assert not consistent(old, size, old_root, tree.root(size - 1), cproof)
        assert not consistent(old, size, tree.root(old - 1), root, cproof) or old == 1
        if cproof:
            bad = [*cproof]
            bad[-1] = _h(bad[-1])
            assert not consistent(old, size, old_root, root, bad)
        assert not consistent(old, size, old_root, root, [])


def test_sizes_outside_the_tree_are_refused(tree: MerkleTree) -> None:
    with pytest.raises(ValueError, match="301"):
        tree.root(301)
    with pytest.raises(ValueError, match="not in a tree"):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        tree.consistency_proof(0, 5)
    assert root_from_inclusion(5, 5, LEAVES[0], []) is None
