//! Version vectors: the causal order of changes to one entry.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// The short (u64) form of a node id, used inside version vectors.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ShortId(pub u64);

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for ShortId {
    /// The first seven base32 characters, which equal the start of the full node id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = data_encoding::BASE32_NOPAD.encode(&self.0.to_be_bytes());
        f.write_str(&s[..7])
    }
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VvOrder {
    /// Both saw exactly the same changes.
    Equal,
    /// The left side saw everything the right saw, and more.
    Greater,
    /// The right side saw everything the left saw, and more.
    Less,
    /// Each saw a change the other did not: a conflict.
    Concurrent,
}

/// A version vector: per node, how many changes of that node this version includes.
///
/// Kept sorted by node and without zero counters, so equal vectors are equal values.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct VersionVector(Vec<(ShortId, u64)>);

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (id, c)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}:{c}")?;
        }
        f.write_str("}")
    }
}

impl VersionVector {
    /// The empty vector: no change seen.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds a vector from (node, counter) pairs in any order; zero counters are dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (ShortId, u64)>) -> Self {
        let mut v = Self::new();
        for (id, c) in pairs {
            v.set(id, v.get(id).max(c));
        }
        v
    }

    /// The counter of one node (0 when absent).
    pub fn get(&self, id: ShortId) -> u64 {
        match self.0.binary_search_by_key(&id, |(k, _)| *k) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    fn set(&mut self, id: ShortId, c: u64) {
        match self.0.binary_search_by_key(&id, |(k, _)| *k) {
            Ok(i) if c == 0 => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = c,
            Err(_) if c == 0 => {}
            Err(i) => self.0.insert(i, (id, c)),
        }
    }

    /// The pairs, sorted by node.
    pub fn pairs(&self) -> &[(ShortId, u64)] {
        &self.0
    }

    /// True when sorted by node, without duplicates or zero counters (as built
    /// here); vectors decoded from a peer must be checked.
    pub fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0) && self.0.iter().all(|(_, c)| *c > 0)
    }

    /// True when no change has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This vector with one more change by `id`, past everything in it.
    ///
    /// Using the maximum counter + 1 (not just own + 1) keeps a node's counter
    /// monotonic even if its index was reset and it learns old versions back.
    pub fn bump(&self, id: ShortId) -> Self {
        let max = self.0.iter().map(|(_, c)| *c).max().unwrap_or(0);
        let mut v = self.clone();
        v.set(id, max.max(self.get(id)) + 1);
        v
    }

    /// The pointwise maximum: a version that includes both.
    pub fn merge(&self, other: &Self) -> Self {
        let mut v = self.clone();
        for (id, c) in &other.0 {
            if *c > v.get(*id) {
                v.set(*id, *c);
            }
        }
        v
    }

    /// Compares causally.
    pub fn compare(&self, other: &Self) -> VvOrder {
        let (mut greater, mut less) = (false, false);
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.0, &other.0);
        while i < a.len() || j < b.len() {
            let ord = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                (None, _) => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    greater = true;
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match a[i].1.cmp(&b[j].1) {
                        Ordering::Greater => greater = true,
                        Ordering::Less => less = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        match (greater, less) {
            (false, false) => VvOrder::Equal,
            (true, false) => VvOrder::Greater,
            (false, true) => VvOrder::Less,
            (true, true) => VvOrder::Concurrent,
        }
    }

    /// True when this version includes every change of `other`.
    pub fn dominates_or_equals(&self, other: &Self) -> bool {
        matches!(self.compare(other), VvOrder::Equal | VvOrder::Greater)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(p: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_pairs(p.iter().map(|(a, b)| (ShortId(*a), *b)))
    }

    #[test]
    fn basic_order() {
        let a = vv(&[(1, 1)]);
        let b = a.bump(ShortId(2));
        assert_eq!(b.compare(&a), VvOrder::Greater);
        assert_eq!(a.compare(&b), VvOrder::Less);
        let c = a.bump(ShortId(3));
        assert_eq!(b.compare(&c), VvOrder::Concurrent);
        let m = b.merge(&c);
        assert_eq!(m.compare(&b), VvOrder::Greater);
        assert_eq!(m.compare(&c), VvOrder::Greater);
        assert_eq!(VersionVector::new().compare(&VersionVector::new()), VvOrder::Equal);
        assert_eq!(vv(&[(5, 0)]), VersionVector::new());
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..5), 0..6)
            .prop_map(|p| VersionVector::from_pairs(p.into_iter().map(|(a, b)| (ShortId(a), b))))
    }

    proptest! {
        #[test]
        fn compare_is_antisymmetric(a in arb_vv(), b in arb_vv()) {
            let expected = match a.compare(&b) {
                VvOrder::Equal => VvOrder::Equal,
                VvOrder::Greater => VvOrder::Less,
                VvOrder::Less => VvOrder::Greater,
                VvOrder::Concurrent => VvOrder::Concurrent,
            };
            prop_assert_eq!(b.compare(&a), expected);
            prop_assert_eq!(a.compare(&b) == VvOrder::Equal, a == b);
        }

        #[test]
        fn merge_is_least_upper_bound(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            let m = a.merge(&b);
            prop_assert!(m.dominates_or_equals(&a));
            prop_assert!(m.dominates_or_equals(&b));
            prop_assert_eq!(&m, &b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            // Anything above both is above the merge.
            if c.dominates_or_equals(&a) && c.dominates_or_equals(&b) {
                prop_assert!(c.dominates_or_equals(&m));
            }
        }

        #[test]
        fn bump_is_strictly_greater(a in arb_vv(), id in 0u64..8) {
            let b = a.bump(ShortId(id));
            prop_assert_eq!(b.compare(&a), VvOrder::Greater);
        }

        #[test]
        fn transitive(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            if a.dominates_or_equals(&b) && b.dominates_or_equals(&c) {
                prop_assert!(a.dominates_or_equals(&c));
            }
        }
    }
}
