//! Sets of chunk indexes: what a peer has (all of a file, or some chunks as a
//! bitmap), walked a 64-bit word at a time.

/// A set of chunk indexes of one download (a bitmap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkSet {
    words: Vec<u64>,
}

impl ChunkSet {
    /// An empty set for `n` chunks.
    pub fn new(n: usize) -> Self {
        Self { words: vec![0; n.div_ceil(64)] }
    }

    /// Adds a chunk; returns true if it was not there.
    pub fn insert(&mut self, i: usize) -> bool {
        let w = i / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << (i % 64)) != 0;
        self.words[w] |= 1 << (i % 64);
        !was
    }

    /// Removes a chunk; returns true if it was there.
    pub fn remove(&mut self, i: usize) -> bool {
        match self.words.get_mut(i / 64) {
            Some(w) => {
                let was = *w & (1 << (i % 64)) != 0;
                *w &= !(1 << (i % 64));
                was
            }
            None => false,
        }
    }

    /// True if the chunk is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Number of chunks in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub(super) fn word(&self, w: usize) -> u64 {
        self.words.get(w).copied().unwrap_or(0)
    }
}

impl FromIterator<usize> for ChunkSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = ChunkSet::default();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

/// What a peer can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Have {
    /// The whole version (from its index).
    All,
    /// Only these chunk indexes (a download in progress).
    Some(ChunkSet),
}

impl Have {
    pub(super) fn contains(&self, i: usize) -> bool {
        match self {
            Have::All => true,
            Have::Some(s) => s.contains(i),
        }
    }

    /// Word `w` of the bitmap over `n` chunks.
    pub(super) fn word(&self, w: usize, n: usize) -> u64 {
        match self {
            Have::All => full_word(w, n),
            Have::Some(s) => s.word(w) & full_word(w, n),
        }
    }
}

/// The bits of word `w` that stand for chunks below `n`.
pub(super) fn full_word(w: usize, n: usize) -> u64 {
    let lo = w * 64;
    if lo + 64 <= n {
        u64::MAX
    } else if lo >= n {
        0
    } else {
        (1u64 << (n - lo)) - 1
    }
}

/// Calls `f` with each index whose bit is set in `word` (word number `w`).
pub(super) fn each_bit(w: usize, mut word: u64, mut f: impl FnMut(usize)) {
    while word != 0 {
        f(w * 64 + word.trailing_zeros() as usize);
        word &= word - 1;
    }
}
