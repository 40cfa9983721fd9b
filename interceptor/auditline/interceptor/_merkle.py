"""RFC 6962 (RFC 9162 section 2.1) Merkle tree hashing, SHA-256.

Leaves are hashed as SHA-256(0x00 || data), interior nodes as
SHA-256(0x01 || left || right); a tree of n leaves splits at the largest power of
two below n. A `Frontier` is the tree's right edge (the roots of its complete
subtrees, largest first): enough to append leaves and to compute the root, in
O(log n) space.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "Frontier",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree whose leaf hashes are `leaves` (MTH in RFC 6962)."""
    if not leaves:
        return EMPTY_ROOT
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()


class Frontier:
    """The right edge of an append-only tree: (size, subtree roots largest first)."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError("a frontier holds one hash per 1 bit of its size")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        self.extend((leaf,))

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Add leaf hashes in order: about one SHA-256 each."""
        hashes, size, sha256 = self.hashes, self.size, hashlib.sha256
        for leaf in leaves:
            node, bits = leaf, size
            # Each trailing 1 bit of the size is a complete subtree the new leaf joins.
            while bits & 1:
                node = sha256(b"\x01" + hashes.pop() + node).digest()
                bits >>= 1
            hashes.append(node)
            size += 1
        self.size = size

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `leaves` (PATH in RFC 6962)."""
    if not 0 <= index < len(leaves):
        raise ValueError("the leaf is not in the tree")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root_of(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root_of(leaves[:k])]


def inclusion_proof_after(
    index: int, size: int, *, before: Frontier, leaves: Sequence[bytes]
) -> list[bytes]:
    """PATH of leaf `index` in a tree of `size` leaves whose first `before.size` are
    known only by their frontier (a log that begins later) and the rest are `leaves`.
    Every subtree the path needs that lies before them is a union of the frontier's
    (aligned subtrees nest or are apart, and the path's own leaf is after them)."""
    offset = before.size
    if not offset <= index < size <= offset + len(leaves):
        raise ValueError("the leaf is not in the tree")
    known: dict[tuple[int, int], bytes] = {}
    start = 0
    for bit, digest in zip(
        (b for b in reversed(range(offset.bit_length())) if offset >> b & 1),
        before.hashes,
        strict=True,
    ):
        known[(start, start + (1 << bit))] = digest
        start += 1 << bit

    def root(lo: int, hi: int) -> bytes:
        if (lo, hi) in known:
            return known[(lo, hi)]
        if lo >= offset:
            return root_of(leaves[lo - offset : hi - offset])
        k = _split(hi - lo)
        return node_hash(root(lo, lo + k), root(lo + k, hi))

    def path(lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if index < lo + k:
            return [*path(lo, lo + k), root(lo + k, hi)]
        return [*path(lo + k, hi), root(lo, lo + k)]

    return path(0, size)


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an audit path (RFC 9162 2.1.3.2); raise `ProofError` when it fails."""
    if not 0 <= index < size:
        raise ProofError("the leaf index is outside the tree")
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0 or node != root:
        raise ProofError("the proof does not lead to the root")


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of `old_size` leaves is a prefix of the tree of
    `leaves` (PROOF in RFC 6962)."""
    if not 0 < old_size <= len(leaves):
        raise ValueError("the old size must be between 1 and the new size")
    return _subproof(old_size, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root_of(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root_of(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root_of(leaves[:k])]


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check a consistency proof (RFC 9162 2.1.4.2); raise `ProofError` when it fails."""
    if not 0 < old_size <= new_size:
        raise ProofError("the sizes are not in order")
    if old_size == new_size:
        if proof or old_root != new_root:
            raise ProofError("equal trees differ")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    if not path:
        raise ProofError("the proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofError("the proof does not connect the two roots")
