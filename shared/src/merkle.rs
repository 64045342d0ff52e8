//! The audit log's Merkle tree (DESIGN.md, "Audit log"): RFC 6962 hashing,
//! tree heads, inclusion and consistency proofs, and their verification.
//!
//! - Leaf hash: `SHA-256(0x00 ‖ data)`; node hash: `SHA-256(0x01 ‖ left ‖ right)`;
//!   the root of the empty tree is `SHA-256("")` (RFC 6962 §2.1).
//! - Proof generation follows RFC 6962 §2.1.1 (`PATH`) and §2.1.2 (`PROOF`,
//!   `SUBPROOF`). It works on the list of leaf hashes held in memory and costs
//!   O(n) hashing per proof: it is the reference the server's storage-backed
//!   code is checked against, and fine for the tree sizes tests use.
//! - Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 in the bit-twiddling
//!   form of `transparency-dev/merkle`, whose test vectors
//!   (`../shared/vectors/merkle/`) the tests run in full, including the
//!   failing cases. The subtree variants (a subtree `[start, end)` instead of
//!   a whole tree, from the Merkle Tree Certificates draft) are verified too,
//!   because those vectors exercise the same code.
//!
//! Every function here is pure; proof lengths are checked before any hashing,
//! so a hostile proof costs at most 64 hashes to refuse.

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash of a leaf, an inner node or a tree.
pub type Hash = [u8; 32];

/// Why a Merkle proof or a proof request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The leaf index is not inside the tree (`index >= size`) or, for a
    /// subtree, not inside `[start, end)`.
    #[error("leaf index {index} is outside the tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked about.
        index: u64,
        /// The tree (or subtree) size it was checked against.
        size: u64,
    },
    /// The two tree sizes of a consistency proof cannot be compared:
    /// the old size is zero or larger than the new one.
    #[error("no consistency proof exists from size {old} to size {new}")]
    InvalidSizes {
        /// The earlier tree size.
        old: u64,
        /// The later tree size.
        new: u64,
    },
    /// A subtree `[start, end)` is empty, reversed, or not aligned on a
    /// power of two (`start` must be a multiple of `bit_ceil(end - start)`),
    /// or extends beyond the tree.
    #[error("[{start}, {end}) is not a valid subtree")]
    InvalidSubtree {
        /// First leaf of the subtree.
        start: u64,
        /// One past the last leaf of the subtree.
        end: u64,
    },
    /// The proof does not have the number of hashes the sizes and index
    /// require (this includes a non-empty proof between equal sizes).
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        /// How many hashes the proof has.
        got: usize,
        /// How many it must have.
        expected: usize,
    },
    /// The proof is well-formed but the hashes it leads to differ from the
    /// expected root(s): wrong leaf, wrong proof, wrong root, or a forked log.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

/// The root of the empty tree: `SHA-256("")` (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of `data`: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle tree hash (`MTH`) of a list of leaf hashes: the tree's root.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof (`PATH`, RFC 6962 §2.1.1) of leaf `index` in the tree
/// made of `leaves`, lowest level first.
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`] if `index >= leaves.len()`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = leaves.len();
    let out_of_range = MerkleError::IndexOutOfRange {
        index,
        size: size as u64,
    };
    let idx = usize::try_from(index).map_err(|_| out_of_range)?;
    if idx >= size {
        return Err(out_of_range);
    }
    let mut proof = Vec::new();
    path(idx, leaves, &mut proof);
    Ok(proof)
}

/// The consistency proof (`PROOF`, RFC 6962 §2.1.2) between the tree of the
/// first `old_size` leaves and the tree made of all `leaves`.
///
/// Equal sizes give an empty proof.
///
/// # Errors
/// [`MerkleError::InvalidSizes`] if `old_size` is zero or larger than `leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let new = leaves.len();
    let invalid = MerkleError::InvalidSizes {
        old: old_size,
        new: new as u64,
    };
    let m = usize::try_from(old_size).map_err(|_| invalid)?;
    if m == 0 || m > new {
        return Err(invalid);
    }
    let mut proof = Vec::new();
    if m < new {
        subproof(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

/// Checks that `leaf` is the leaf hash at `index` of the tree of `size`
/// leaves whose root is `root`.
///
/// # Errors
/// - [`MerkleError::IndexOutOfRange`] if `index >= size`.
/// - [`MerkleError::WrongProofLength`] if the proof is not exactly as long as
///   `index` and `size` require.
/// - [`MerkleError::RootMismatch`] if the proof leads to another root.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_proof(index, size, leaf, proof)?;
    check_match(&computed, root)
}

/// The root that an inclusion proof for `leaf` at `index` leads to in a tree
/// of `size` leaves (what [`verify_inclusion`] compares with the expected root).
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`] or [`MerkleError::WrongProofLength`], as
/// for [`verify_inclusion`].
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (inner, border) = decomp_incl_proof(index, size);
    check_len(proof, inner + border)?;
    let (inner_proof, border_proof) = proof.split_at(inner);
    let res = chain_inner(*leaf, inner_proof, index);
    Ok(chain_border_right(res, border_proof))
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`.
///
/// Equal sizes need an empty proof and equal roots.
///
/// # Errors
/// - [`MerkleError::InvalidSizes`] if `old_size` is zero or larger than `new_size`.
/// - [`MerkleError::WrongProofLength`] if the proof is not exactly as long as
///   the sizes require (in particular, empty when the sizes differ).
/// - [`MerkleError::RootMismatch`] if either root does not match the proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), MerkleError> {
    if old_size == 0 || new_size < old_size {
        return Err(MerkleError::InvalidSizes {
            old: old_size,
            new: new_size,
        });
    }
    let computed = root_from_subtree_consistency(0, old_size, new_size, proof, old_root)?;
    check_match(&computed, new_root)
}

/// Checks that `leaf` is the leaf at `index` of the subtree `[start, end)`
/// whose hash is `subtree_root` (Merkle Tree Certificates draft, "subtree
/// inclusion proof"). `[0, size)` is the whole tree and gives
/// [`verify_inclusion`].
///
/// # Errors
/// - [`MerkleError::InvalidSubtree`] if `[start, end)` is not a valid subtree.
/// - [`MerkleError::IndexOutOfRange`] if `index` is not in `[start, end)`.
/// - [`MerkleError::WrongProofLength`] / [`MerkleError::RootMismatch`] as for
///   [`verify_inclusion`].
pub fn verify_subtree_inclusion(
    index: u64,
    start: u64,
    end: u64,
    leaf: &Hash,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<(), MerkleError> {
    check_subtree(start, end)?;
    if index < start || index >= end {
        return Err(MerkleError::IndexOutOfRange {
            index,
            size: end - start,
        });
    }
    verify_inclusion(index - start, end - start, leaf, proof, subtree_root)
}

/// Checks that the subtree `[start, end)` with hash `subtree_root` is part
/// of the tree of `size` leaves with root `root` (Merkle Tree Certificates
/// draft, "subtree consistency proof"). With `start = 0` this is
/// [`verify_consistency`] from `end` to `size`. An empty range
/// (`start == end <= size`) needs an empty proof and the empty-tree hash as
/// `subtree_root`, and then holds for any `root`.
///
/// # Errors
/// - [`MerkleError::InvalidSubtree`] if `[start, end)` is reversed or not
///   aligned, or `end > size`.
/// - [`MerkleError::WrongProofLength`] / [`MerkleError::RootMismatch`] as for
///   [`verify_consistency`].
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    subtree_root: &Hash,
    root: &Hash,
) -> Result<(), MerkleError> {
    if size < end {
        return Err(MerkleError::InvalidSubtree { start, end });
    }
    if start == end {
        // An empty range is part of every tree that reaches it, whatever its
        // root: the proof is empty and the subtree's hash is the empty-tree hash.
        check_len(proof, 0)?;
        return check_match(subtree_root, &empty_root());
    }
    check_subtree(start, end)?;
    let computed = root_from_subtree_consistency(start, end, size, proof, subtree_root)?;
    check_match(&computed, root)
}

/// Largest power of two strictly smaller than `n` (`n >= 2`): where RFC 6962
/// splits a tree of `n` leaves.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// RFC 6962 `PATH(m, D[n])`, appended to `out` lowest level first.
fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// RFC 6962 `SUBPROOF(m, D[n], b)`, appended to `out` lowest level first.
fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// `[start, end)` is a subtree: non-empty, and `start` is a multiple of the
/// smallest power of two not below `end - start`.
fn check_subtree(start: u64, end: u64) -> Result<(), MerkleError> {
    let invalid = MerkleError::InvalidSubtree { start, end };
    if start >= end {
        return Err(invalid);
    }
    if start == 0 {
        return Ok(());
    }
    let len = end - start;
    // A subtree longer than 2^63 can only start at 0.
    let ceil = len.checked_next_power_of_two().ok_or(invalid)?;
    if start & (ceil - 1) != 0 {
        return Err(invalid);
    }
    Ok(())
}

/// Number of bits needed to represent `x` (Go's `bits.Len64`).
fn bit_len(x: u64) -> usize {
    (u64::BITS - x.leading_zeros()) as usize
}

/// Splits an inclusion proof for `index` in a tree of `size` into the part
/// below the point where the paths to `index` and `size - 1` diverge (inner)
/// and the part along the right border above it. Requires `index < size`.
fn decomp_incl_proof(index: u64, size: u64) -> (usize, usize) {
    let inner = bit_len(index ^ (size - 1));
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

/// The root of the tree of `size` leaves implied by a consistency proof from
/// subtree `[start, end)` with hash `sub_root` (which is checked on the way).
/// Callers have checked the subtree and `end <= size`.
fn root_from_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    sub_root: &Hash,
) -> Result<Hash, MerkleError> {
    if start == 0 && end == size {
        check_len(proof, 0)?;
        return Ok(*sub_root);
    }
    if proof.is_empty() {
        // The length check below would say the same; this names the usual mistake.
        return Err(MerkleError::WrongProofLength {
            got: 0,
            expected: 1,
        });
    }
    // Height of the subtree [start, end).
    let height = bit_len((end - 1) ^ start);
    if end == size {
        // The subtree's root lies on the right border: one left sibling per
        // level where its ancestor is a right child.
        let index = start >> height;
        check_len(proof, index.count_ones() as usize)?;
        return Ok(chain_border_right(*sub_root, proof));
    }
    // Level where the paths to leaves end - 1 and size - 1 diverge.
    let fork = bit_len((end - 1) ^ (size - 1));
    // Height of the rightmost full subtree inside [start, end): the proof starts there.
    let shift = (end - start).trailing_zeros() as usize;
    let (seed, rest) = if end - start == 1 << shift {
        // A full subtree: its root is `sub_root`, not repeated in the proof.
        (*sub_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    // fork > shift for every valid subtree with end < size (the low `shift`
    // bits of end - 1 are all ones); saturating keeps hostile input panic-free.
    let expected = (proof.len() - rest.len())
        + fork.saturating_sub(shift)
        + ((end - 1) >> fork).count_ones() as usize;
    check_len(proof, expected)?;

    // Hash up to the subtree's root twice: as it is (must equal sub_root) and
    // as it has grown in the tree of `size` leaves.
    let (mut sub, mut grown) = (seed, seed);
    let mut hashes = rest.iter();
    let mut next = || {
        hashes.next().ok_or(MerkleError::WrongProofLength {
            got: proof.len(),
            expected: proof.len() + 1,
        })
    };
    for level in shift..height {
        if ((end - 1) >> level) & 1 == 1 {
            let h = next()?;
            sub = node_hash(h, &sub);
            grown = node_hash(h, &grown);
        } else if level < fork {
            grown = node_hash(&grown, next()?);
        }
    }
    let remaining = hashes.as_slice();
    check_match(&sub, sub_root)?;
    // The rest is an inclusion proof of the grown subtree's root, seen as a
    // leaf of the tree `height` levels up.
    let index = start >> height;
    let size_at_height = ((size - 1) >> height) + 1;
    root_from_inclusion_proof(index, size_at_height, &grown, remaining)
}

fn check_len(proof: &[Hash], expected: usize) -> Result<(), MerkleError> {
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    Ok(())
}

fn check_match(computed: &Hash, expected: &Hash) -> Result<(), MerkleError> {
    // Roots are public: a plain comparison is fine.
    if computed != expected {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
// Tests: a failed unwrap is a failed assertion, with its location.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8; 3])).collect()
    }

    #[test]
    fn rfc6962_known_roots() {
        // The 8-leaf tree of RFC 6962's reference tests (also the vectors' tree).
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let l: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(
            hex::encode(root(&l)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(l[0]),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn generated_proofs_verify_for_all_small_trees() {
        for n in 1..=33usize {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(&l, i as u64).unwrap();
                verify_inclusion(i as u64, n as u64, &l[i], &p, &r).unwrap();
                // Wrong index or wrong leaf is refused.
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(i as u64, n as u64, &other, &p, &r).is_err());
            }
            for m in 1..=n {
                let p = consistency_proof(&l, m as u64).unwrap();
                let old = root(&l[..m]);
                verify_consistency(m as u64, n as u64, &p, &old, &r).unwrap();
                if m < n {
                    assert_eq!(
                        verify_consistency(m as u64, n as u64, &p, &r, &r),
                        Err(MerkleError::RootMismatch)
                    );
                }
            }
        }
    }

    #[test]
    fn proof_requests_out_of_range_are_refused() {
        let l = leaves(4);
        assert!(matches!(
            inclusion_proof(&l, 4),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            consistency_proof(&l, 0),
            Err(MerkleError::InvalidSizes { .. })
        ));
        assert!(matches!(
            consistency_proof(&l, 5),
            Err(MerkleError::InvalidSizes { .. })
        ));
        assert!(consistency_proof(&l, 4).unwrap().is_empty());
    }
}
