//! A compact range (frontier) of an RFC 6962 tree: the roots of its perfect
//! subtrees, largest first, one per set bit of the size. Appending a leaf
//! costs O(log n) hashes and the root is a right fold of the frontier, so
//! each checkpoint hashes only the leaves added since the previous one.

use picket_shared::merkle::{Hash, empty_root, node_hash};

/// The frontier of a tree of `size` leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, hash)` of each perfect subtree, largest first.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The Merkle tree hash of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }

    /// Stored form: JSON array of hex hashes, largest subtree first.
    pub fn encode(&self) -> String {
        let hex: Vec<String> = self.nodes.iter().map(|(_, h)| hex::encode(h)).collect();
        serde_json::Value::from(hex).to_string()
    }

    /// Parses the stored form for a tree of `size` leaves.
    ///
    /// # Errors
    /// If the text is not such an array or its length does not match `size`.
    pub fn decode(size: u64, text: &str) -> Result<Self, &'static str> {
        let list: Vec<String> =
            serde_json::from_str(text).map_err(|_| "frontier is not a JSON list")?;
        if list.len() != size.count_ones() as usize {
            return Err("frontier length does not match the tree size");
        }
        let heights = (0..64u32).rev().filter(|b| size & (1u64 << b) != 0);
        let mut nodes = Vec::with_capacity(list.len());
        for (h, s) in heights.zip(list.iter()) {
            let bytes = hex::decode(s).map_err(|_| "frontier hash is not hex")?;
            let hash: Hash = bytes
                .try_into()
                .map_err(|_| "frontier hash is not 32 bytes")?;
            nodes.push((h, hash));
        }
        Ok(Frontier { size, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_shared::merkle::{leaf_hash, root};

    #[test]
    fn matches_the_reference_root_at_every_size_and_round_trips() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for (n, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), root(&leaves[..=n]), "size {}", n + 1);
            let back = Frontier::decode(f.size(), &f.encode());
            assert_eq!(back.as_ref().ok(), Some(&f));
        }
        assert!(Frontier::decode(3, "[]").is_err());
    }
}

/// Every level of a tree held in memory (2n hashes), so that many inclusion
/// proofs (an export) cost O(log² n) each instead of O(n).
pub struct Levels(Vec<Vec<Hash>>);

impl Levels {
    /// Builds the levels over `leaves`.
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last() {
            if below.len() < 2 {
                break;
            }
            let up: Vec<Hash> = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Levels(levels)
    }

    /// Number of leaves.
    pub fn size(&self) -> usize {
        self.0.first().map_or(0, Vec::len)
    }

    /// `MTH(D[start:end])` where `start` is aligned as RFC 6962 splits produce.
    fn mth(&self, start: usize, end: usize) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let h = n.trailing_zeros() as usize;
            if let Some(x) = self.0.get(h).and_then(|l| l.get(start / n)) {
                return *x;
            }
        }
        let k = split(n);
        node_hash(&self.mth(start, start + k), &self.mth(start + k, end))
    }

    fn path(&self, m: usize, start: usize, end: usize, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.mth(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.mth(start, start + k));
        }
    }

    /// The inclusion proof of leaf `index` in the whole tree (RFC 6962 `PATH`),
    /// or `None` if the index is out of range.
    pub fn inclusion(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.size() {
            return None;
        }
        let mut out = Vec::new();
        self.path(index, 0, self.size(), &mut out);
        Some(out)
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.mth(0, self.size())
    }
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    let p = n.next_power_of_two();
    if p == n { n / 2 } else { p / 2 }
}

#[cfg(test)]
mod levels_tests {
    use super::*;
    use picket_shared::merkle::{inclusion_proof, leaf_hash, root};

    #[test]
    fn proofs_equal_the_reference_for_every_index_of_every_size() {
        let all: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for n in 1..=all.len() {
            let lv = Levels::new(all[..n].to_vec());
            assert_eq!(lv.root(), root(&all[..n]));
            for i in 0..n {
                assert_eq!(
                    lv.inclusion(i),
                    inclusion_proof(&all[..n], i as u64).ok(),
                    "size {n} index {i}"
                );
            }
            assert!(lv.inclusion(n).is_none());
        }
    }
}
