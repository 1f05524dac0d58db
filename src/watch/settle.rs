//! The watcher's pure core: which changed paths are due for a scan, and when.
//! Time is passed in (any fixed epoch), so the rules are tested on virtual time.
//!
//! A path closed after writing, or moved in, is finished: it goes out after a
//! [`BATCH`] window that lets a burst of files (a copied tree, an untar) travel
//! together. Any other change (data written without a close yet, a create, a
//! delete) waits until the path has been quiet for the settle period, so a file
//! still being written is not replicated half-written. A path taken less than
//! the share's `min_interval` ago waits for the rest of it, so a file rewritten
//! without pause is announced at most once per interval, and its last version
//! still goes out.

use crate::relpath::RelPath;
use std::collections::HashMap;
use std::time::Duration;

/// How long a path that is not finished must go without events before it is scanned.
pub const SETTLE: Duration = Duration::from_secs(1);
/// A path written without pause is scanned this long after its first event anyway
/// (the scanner skips it if it changes while hashed), so a busy file is not left
/// for the hourly rescan.
pub const MAX_SETTLE: Duration = Duration::from_secs(10);
/// How long a finished path waits for others to join its batch. Short next to the
/// 0.25 s a change may take to reach every peer; long enough that the files of
/// one copy are scanned, committed and announced together.
pub const BATCH: Duration = Duration::from_millis(20);

/// What one event says of its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Written, created, removed or renamed away: scanned once quiet.
    Busy,
    /// Closed after writing, or moved in: complete, scanned at once.
    Finished,
    /// Only its metadata (mode, times, links) changed: a finished path stays
    /// finished, one being written stays so.
    Metadata,
}

/// Since when a path has events, and whether the latest says it is finished.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    first: Duration,
    last: Duration,
    finished: bool,
}

/// The paths with events not scanned yet.
#[derive(Debug)]
pub struct Settle {
    events: HashMap<RelPath, Waiting>,
    overflow: bool,
    quiet: Duration,
    min_interval: Duration,
    /// When each path was last taken, while that is less than `min_interval` ago.
    taken: HashMap<RelPath, Duration>,
    /// The deadline the worker sleeps until (from [`Settle::next_due`]): an event
    /// due earlier must wake it, later ones need not.
    told: Option<Duration>,
}

impl Default for Settle {
    fn default() -> Self {
        Self::new(SETTLE)
    }
}

impl Settle {
    /// An empty table whose busy paths wait to be quiet for `quiet`.
    pub fn new(quiet: Duration) -> Self {
        Self {
            events: HashMap::new(),
            overflow: false,
            quiet,
            min_interval: Duration::ZERO,
            taken: HashMap::new(),
            told: None,
        }
    }

    /// Sets the share's `min_interval`: the least time between two scans of one path.
    pub fn set_min_interval(&mut self, min_interval: Duration) {
        self.min_interval = min_interval;
        if min_interval.is_zero() {
            self.taken.clear();
        }
    }

    /// Notes an event on `path` at `now`; true if it is due before the deadline
    /// the worker sleeps until, which must then be woken.
    pub fn record(&mut self, path: RelPath, change: Change, now: Duration) -> bool {
        let w = match self.events.get_mut(&path) {
            Some(w) => {
                w.last = now;
                w.finished = match change {
                    Change::Busy => false,
                    Change::Finished => true,
                    Change::Metadata => w.finished,
                };
                *w
            }
            // A chmod or touch of a file at rest says it is complete as it is.
            None => *self.events.entry(path.clone()).or_insert(Waiting {
                first: now,
                last: now,
                finished: change != Change::Busy,
            }),
        };
        let due = self.due_at(&path, w, false);
        let wake = self.told.is_none_or(|t| due < t);
        if wake {
            self.told = Some(due);
        }
        wake
    }

    /// Notes that events were lost (queue overflow, watch error): only a full scan
    /// can tell what changed.
    pub fn overflowed(&mut self) {
        self.overflow = true;
    }

    /// True (once) if events were lost since the last call.
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflow)
    }

    /// True if nothing waits to be scanned.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.overflow
    }

    /// When `path` is due: a finished one [`BATCH`] after its latest event, any
    /// other once quiet for the settle period or [`MAX_SETTLE`] after its first
    /// event; and never sooner than `min_interval` after it was last taken.
    /// `along`: when it may come along with a batch that is due: a finished path
    /// at once, any other once quiet for half the settle period.
    fn due_at(&self, path: &RelPath, w: Waiting, along: bool) -> Duration {
        let due = match (w.finished, along) {
            (true, true) => Duration::ZERO,
            (true, false) => w.last + BATCH,
            (false, _) => {
                let quiet = if along { self.quiet / 2 } else { self.quiet };
                (w.last + quiet).min(w.first + MAX_SETTLE)
            }
        };
        match self.taken.get(path) {
            Some(t) => due.max(*t + self.min_interval),
            None => due,
        }
    }

    /// When the earliest waiting path is due (see [`Settle::take_due`]). The
    /// caller sleeps until then: events due later do not wake it.
    pub fn next_due(&mut self) -> Option<Duration> {
        self.told = self.events.iter().map(|(p, w)| self.due_at(p, *w, false)).min();
        self.told
    }

    /// Removes and returns, in path order, the paths due at `now`; and, once one
    /// is, with it every finished path and every other path quiet for half the
    /// settle period (those a `min_interval` holds back excepted): a burst of
    /// events (an `rm -rf`, an untar) comes out in few batches, so the delete
    /// brake judges a large delete whole and a copied tree travels together.
    pub fn take_due(&mut self, now: Duration) -> Vec<RelPath> {
        if !self.events.iter().any(|(p, w)| self.due_at(p, *w, false) <= now) {
            return Vec::new();
        }
        let mut due: Vec<RelPath> =
            self.events.iter().filter(|(p, w)| self.due_at(p, **w, true) <= now).map(|(p, _)| p.clone()).collect();
        due.sort();
        for p in &due {
            self.events.remove(p);
        }
        if !self.min_interval.is_zero() {
            let keep = self.min_interval;
            self.taken.retain(|_, t| *t + keep > now);
            self.taken.extend(due.iter().map(|p| (p.clone(), now)));
        }
        self.told = None;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    const Q: Duration = SETTLE;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_path_is_due_only_after_it_has_been_quiet() {
        let mut s = Settle::default();
        let t = Duration::from_secs(10);
        s.record(p("a"), Change::Busy, t);
        assert_eq!(s.next_due(), Some(t + Q));
        assert!(s.take_due(t + Q / 2).is_empty(), "still settling");
        // Written again: the deadline moves.
        s.record(p("a"), Change::Busy, t + Q / 2);
        assert!(s.take_due(t + Q).is_empty(), "a new event restarts the quiet period");
        assert_eq!(s.take_due(t + Q / 2 + Q), vec![p("a")]);
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn due_paths_come_out_once_in_order_and_the_rest_wait() {
        let mut s = Settle::default();
        let t = Duration::from_secs(1);
        s.record(p("b"), Change::Busy, t);
        s.record(p("a"), Change::Busy, t);
        s.record(p("c"), Change::Busy, t + Q);
        assert_eq!(s.take_due(t + Q), vec![p("a"), p("b")]);
        assert!(s.take_due(t + Q).is_empty(), "taken once");
        assert_eq!(s.next_due(), Some(t + 2 * Q));
        assert_eq!(s.take_due(t + 2 * Q), vec![p("c")]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_burst_comes_out_as_one_batch() {
        let mut s = Settle::default();
        let t = Duration::from_secs(1);
        s.record(p("a"), Change::Busy, t);
        s.record(p("b"), Change::Busy, t + Q * 3 / 10);
        s.record(p("c"), Change::Busy, t + Q * 8 / 10);
        assert!(s.take_due(t + Q / 2).is_empty(), "nothing due yet");
        assert_eq!(s.take_due(t + Q), vec![p("a"), p("b")], "b is quiet for 0.7 s: taken with a");
        assert_eq!(s.next_due(), Some(t + Q * 18 / 10), "c, written 0.2 s ago, waits");
    }

    #[test]
    fn a_path_written_without_pause_is_due_after_the_cap() {
        let mut s = Settle::default();
        let t = Duration::from_secs(5);
        let mut now = t;
        while now < t + MAX_SETTLE {
            s.record(p("log"), Change::Busy, now);
            assert!(s.take_due(now).is_empty(), "never quiet, not yet capped at {now:?}");
            now += Q / 2;
        }
        assert_eq!(s.take_due(t + MAX_SETTLE), vec![p("log")]);
    }

    #[test]
    fn lost_events_ask_for_one_full_scan() {
        let mut s = Settle::default();
        s.overflowed();
        assert!(!s.is_empty());
        assert!(s.take_overflow());
        assert!(!s.take_overflow(), "reported once");
        assert!(s.is_empty());
    }

    #[test]
    fn a_closed_file_is_due_after_the_batch_window_not_the_quiet_period() {
        let mut s = Settle::default();
        let t = Duration::from_secs(3);
        // Created and written, then closed.
        s.record(p("f"), Change::Busy, t);
        s.record(p("f"), Change::Busy, t + MS);
        s.record(p("f"), Change::Finished, t + 2 * MS);
        assert_eq!(s.next_due(), Some(t + 2 * MS + BATCH));
        assert!(s.take_due(t + 2 * MS + BATCH - MS).is_empty(), "the batch window");
        assert_eq!(s.take_due(t + 2 * MS + BATCH), vec![p("f")]);
        // Moved in: one event says it all.
        s.record(p("g"), Change::Finished, t + Q);
        assert_eq!(s.take_due(t + Q + BATCH), vec![p("g")]);
    }

    #[test]
    fn a_write_after_the_close_waits_for_quiet_again() {
        let mut s = Settle::default();
        let t = Duration::from_secs(3);
        s.record(p("f"), Change::Finished, t);
        s.record(p("f"), Change::Busy, t + MS);
        assert_eq!(s.next_due(), Some(t + MS + Q), "opened and written again: not finished");
        s.record(p("f"), Change::Finished, t + 2 * MS);
        assert_eq!(s.next_due(), Some(t + 2 * MS + BATCH), "closed again");
    }

    #[test]
    fn a_metadata_change_keeps_what_the_path_was() {
        let mut s = Settle::default();
        let t = Duration::from_secs(3);
        s.record(p("done"), Change::Finished, t);
        s.record(p("done"), Change::Metadata, t + MS);
        s.record(p("busy"), Change::Busy, t);
        s.record(p("busy"), Change::Metadata, t + MS);
        s.record(p("chmod"), Change::Metadata, t);
        assert_eq!(s.take_due(t + MS + BATCH), vec![p("chmod"), p("done")], "a chmod at rest is complete");
        assert_eq!(s.next_due(), Some(t + MS + Q), "written, no close yet: still waits");
    }

    #[test]
    fn finished_files_travel_together_and_bring_the_quiet_ones_along() {
        let mut s = Settle::default();
        let t = Duration::from_secs(3);
        s.record(p("quiet"), Change::Busy, t - Q * 6 / 10);
        s.record(p("a"), Change::Finished, t);
        s.record(p("b"), Change::Finished, t + 10 * MS);
        s.record(p("c"), Change::Finished, t + 15 * MS);
        s.record(p("writing"), Change::Busy, t + 15 * MS);
        assert_eq!(
            s.take_due(t + BATCH),
            vec![p("a"), p("b"), p("c"), p("quiet")],
            "b and c come with a; the path quiet for 0.6 s too"
        );
        assert_eq!(s.next_due(), Some(t + 15 * MS + Q), "the one being written waits");
    }

    #[test]
    fn the_worker_is_woken_only_for_an_earlier_deadline() {
        let mut s = Settle::default();
        let t = Duration::from_secs(3);
        assert!(s.record(p("a"), Change::Busy, t), "the first path wakes the worker");
        assert_eq!(s.next_due(), Some(t + Q));
        assert!(!s.record(p("b"), Change::Busy, t + MS), "due later: no wake-up");
        assert!(s.record(p("c"), Change::Finished, t + 2 * MS), "finished: due before the deadline");
        assert_eq!(s.next_due(), Some(t + 2 * MS + BATCH));
        for i in 3..1000 {
            let at = t + 2 * MS + i * MS / 100;
            assert!(!s.record(p(&format!("f{i}")), Change::Finished, at), "a burst wakes it once");
        }
        assert_eq!(s.take_due(t + 2 * MS + BATCH).len(), 998, "every finished path, and not a or b");
        assert!(s.record(p("d"), Change::Busy, t + Q), "after a take the worker's deadline is new");
    }

    /// Runs a worker on virtual time in 1 ms steps until `end`: `events(now)`
    /// gives the events of each instant; returns what was taken, when.
    fn run(
        s: &mut Settle,
        end: Duration,
        mut events: impl FnMut(Duration) -> Vec<(&'static str, Change)>,
    ) -> Vec<(Duration, Vec<RelPath>)> {
        let mut taken = Vec::new();
        let mut now = Duration::ZERO;
        while now <= end {
            for (path, change) in events(now) {
                s.record(p(path), change, now);
            }
            if s.next_due().is_some_and(|d| d <= now) {
                taken.push((now, s.take_due(now)));
            }
            now += MS;
        }
        taken
    }

    /// A file rewritten (opened, written, closed) every 100 ms for 10 s.
    fn rewritten_every_100ms(now: Duration) -> Vec<(&'static str, Change)> {
        let ms = now.as_millis();
        match (ms % 100, ms / 100 <= 100) {
            (0, true) => vec![("hot", Change::Busy)],
            (1, true) => vec![("hot", Change::Finished)],
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_hot_file_goes_out_at_most_once_per_min_interval_and_its_last_version_too() {
        let interval = Duration::from_secs(2);
        let mut s = Settle::default();
        s.set_min_interval(interval);
        let taken = run(&mut s, Duration::from_secs(15), |now| {
            let mut ev = rewritten_every_100ms(now);
            if now == Duration::from_secs(5) {
                ev.push(("cold", Change::Finished));
            }
            ev
        });
        let hot: Vec<Duration> = taken.iter().filter(|(_, ps)| ps.contains(&p("hot"))).map(|(t, _)| *t).collect();
        assert!(hot.len() >= 5, "it keeps going out: {hot:?}");
        for w in hot.windows(2) {
            assert!(w[1] - w[0] >= interval, "taken at {:?} and again at {:?}", w[0], w[1]);
        }
        let last_write = Duration::from_millis(10_001);
        assert!(*hot.last().unwrap() >= last_write, "the last version goes out: {hot:?}");
        assert!(s.is_empty(), "nothing left behind");
        let cold = taken.iter().find(|(_, ps)| ps.contains(&p("cold"))).map(|(t, _)| *t);
        assert_eq!(cold, Some(Duration::from_secs(5) + BATCH), "another file is not held back by the hot one");
    }

    #[test]
    fn without_min_interval_every_closed_version_goes_out() {
        let mut s = Settle::default();
        let taken = run(&mut s, Duration::from_secs(11), rewritten_every_100ms);
        assert_eq!(taken.len(), 101, "one scan per close: {:?}", taken.iter().map(|t| t.0).collect::<Vec<_>>());
        for (t, ps) in &taken {
            assert_eq!(ps, &vec![p("hot")]);
            assert_eq!(t.as_millis() % 100, 1 + BATCH.as_millis(), "{BATCH:?} after the close: {t:?}");
        }
    }
}
