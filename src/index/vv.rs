//! Version vectors: the causal order of changes to one entry.

use crate::ids::ShortId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// The largest counter a version vector holds. A node that made a million changes
/// a second would take 146 000 years to reach it; a peer announcing more is refused,
/// so no counter can be pushed to where the next change would wrap.
pub const MAX_COUNTER: u64 = 1 << 62;

/// A change that cannot be counted any more (see [`MAX_COUNTER`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("version counter exhausted: this path has {0} changes recorded, the most a version vector holds")]
pub struct CounterExhausted(pub u64);

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

    /// True when sorted by node, without duplicates, zero counters or counters
    /// over [`MAX_COUNTER`] (as built here); vectors from a peer must be checked.
    pub fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0) && self.0.iter().all(|(_, c)| (1..=MAX_COUNTER).contains(c))
    }

    /// The vector of exactly these pairs, if they are canonical (see
    /// [`VersionVector::is_canonical`]): how a peer's vector is taken in.
    pub fn try_from_pairs(pairs: Vec<(ShortId, u64)>) -> Option<Self> {
        let v = Self(pairs);
        v.is_canonical().then_some(v)
    }

    /// True when no change has been recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This vector with one more change by `id`, past everything in it.
    ///
    /// Using the maximum counter + 1 (not just own + 1) keeps a node's counter
    /// monotonic even if its index was reset and it learns old versions back.
    pub fn bump(&self, id: ShortId) -> Result<Self, CounterExhausted> {
        let max = self.0.iter().map(|(_, c)| *c).max().unwrap_or(0);
        if max >= MAX_COUNTER {
            return Err(CounterExhausted(max));
        }
        let mut v = self.clone();
        v.set(id, max + 1);
        Ok(v)
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
        let b = a.bump(ShortId(2)).unwrap();
        assert_eq!(b.compare(&a), VvOrder::Greater);
        assert_eq!(a.compare(&b), VvOrder::Less);
        let c = a.bump(ShortId(3)).unwrap();
        assert_eq!(b.compare(&c), VvOrder::Concurrent);
        let m = b.merge(&c);
        assert_eq!(m.compare(&b), VvOrder::Greater);
        assert_eq!(m.compare(&c), VvOrder::Greater);
        assert_eq!(VersionVector::new().compare(&VersionVector::new()), VvOrder::Equal);
        assert_eq!(vv(&[(5, 0)]), VersionVector::new());
    }

    #[test]
    fn counters_never_wrap() {
        let huge = VersionVector::try_from_pairs(vec![(ShortId(9), MAX_COUNTER)]).unwrap();
        assert_eq!(huge.bump(ShortId(1)), Err(CounterExhausted(MAX_COUNTER)));
        assert!(VersionVector::try_from_pairs(vec![(ShortId(9), MAX_COUNTER + 1)]).is_none(), "refused on receipt");
        assert!(VersionVector::try_from_pairs(vec![(ShortId(9), u64::MAX)]).is_none());
        assert!(VersionVector::try_from_pairs(vec![(ShortId(2), 1), (ShortId(1), 1)]).is_none(), "unsorted");
        let near = VersionVector::try_from_pairs(vec![(ShortId(9), MAX_COUNTER - 1)]).unwrap();
        assert_eq!(near.bump(ShortId(1)).unwrap().get(ShortId(1)), MAX_COUNTER);
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
            let b = a.bump(ShortId(id)).unwrap();
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
