"""RFC 6962 Merkle trees: the test vectors shared by the Go and C++ implementations,
and properties of proofs over random trees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditline.interceptor._merkle import (
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    inclusion_proof_after,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex
# The eight leaves and roots of sizes 1..8 used by certificate-transparency and Go's tlog.
LEAVES = [
    h(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    h(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def test_roots_of_the_vectors() -> None:
    assert root_of([]) == h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    for size in range(1, 9):
        assert root_of(HASHES[:size]) == ROOTS[size - 1]
        frontier = Frontier()
        frontier.extend(HASHES[:size])
        assert frontier.root() == ROOTS[size - 1]


def test_inclusion_vectors() -> None:
    proof = [
        h(x)
        for x in (
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        )
    ]
    assert inclusion_proof(5, HASHES) == proof
    verify_inclusion(5, 8, HASHES[5], proof, ROOTS[7])
    with pytest.raises(ProofError):
        verify_inclusion(4, 8, HASHES[5], proof, ROOTS[7])
    assert inclusion_proof(2, HASHES[:3]) == [ROOTS[1]]
    verify_inclusion(2, 3, HASHES[2], [ROOTS[1]], ROOTS[2])


def test_consistency_vectors() -> None:
    proof = [
        h(x)
        for x in (
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        )
    ]
    assert consistency_proof(6, HASHES) == proof
    verify_consistency(6, 8, proof, ROOTS[5], ROOTS[7])
    with pytest.raises(ProofError):
        verify_consistency(6, 8, proof, ROOTS[4], ROOTS[7])
    short = [
        h(x)
        for x in (
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        )
    ]
    assert consistency_proof(2, HASHES[:5]) == short
    verify_consistency(2, 5, short, ROOTS[1], ROOTS[4])


@given(st.integers(1, 300), st.data())
def test_every_proof_of_a_random_tree_verifies_and_no_other(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root = root_of(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, leaves)
    verify_inclusion(index, size, leaves[index], proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"other"), proof, root)
    old = data.draw(st.integers(1, size))
    consistency = consistency_proof(old, leaves)
    verify_consistency(old, size, consistency, root_of(leaves[:old]), root)
    if old < size:
        with pytest.raises(ProofError):
            verify_consistency(old, size, consistency, leaf_hash(b"x"), root)
    frontier = Frontier()
    frontier.extend(leaves[:old])
    copy = frontier.copy()
    copy.extend(leaves[old:])
    assert copy.root() == root
    assert Frontier(frontier.size, frontier.hashes).root() == root_of(leaves[:old])


@given(st.integers(1, 300), st.data())
def test_a_proof_in_a_tree_known_from_a_frontier_on_is_the_proof(
    size: int, data: st.DataObject
) -> None:
    """A log that begins later knows its tree's first leaves only by their frontier:
    the path of any later leaf is the same as from every leaf."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    offset = data.draw(st.integers(0, size - 1))
    index = data.draw(st.integers(offset, size - 1))
    tree_size = data.draw(st.integers(index + 1, size))
    before = Frontier()
    before.extend(leaves[:offset])
    after = inclusion_proof_after(index, tree_size, before=before, leaves=leaves[offset:])
    assert after == inclusion_proof(index, leaves[:tree_size])
