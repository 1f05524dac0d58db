//! When a share transfers: at any time (the default), or only inside windows that
//! open at the times of a cron pattern and stay open for a set time, e.g.
//! `schedule = "0 1 * * *"` with `schedule_window_mins = 240`: nightly from 01:00 to
//! 05:00 local time, for links that are busy by day or backups exchanged at night.
//! Outside a window the share still scans, exchanges indexes and serves peers; it
//! only starts no download. A file already downloading when the window closes is
//! finished. Pure: the caller passes the time.

use chrono::{DateTime, TimeZone};
use std::time::Duration;

/// A share's transfer windows.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: croner::Cron,
    pattern: String,
    window: Duration,
}

/// A bad `schedule` setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The cron pattern does not parse.
    #[error("bad schedule {pattern:?}: {why} (expected five cron fields: minute hour day-of-month month day-of-week, e.g. \"0 1 * * *\")")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What the cron parser said.
        why: String,
    },
    /// A window of zero length would never open.
    #[error("schedule_window_mins must be at least 1")]
    EmptyWindow,
    /// Longer than a year: the pattern would not matter.
    #[error("schedule_window_mins must be at most {MAX_WINDOW_MINS} (a year); without a schedule a share transfers at any time")]
    LongWindow,
    /// The pattern never matches (e.g. 30 February).
    #[error("schedule {0:?} never matches a future time")]
    Never(String),
}

/// The longest window, in minutes.
pub const MAX_WINDOW_MINS: u64 = 366 * 24 * 60;

/// Whether the window is open at some time, and until or from when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Window<Tz: TimeZone> {
    /// Transfers may start until `closes`.
    Open {
        /// When this window closes.
        closes: DateTime<Tz>,
    },
    /// No transfer starts before `opens` (None: the pattern never matches again).
    Closed {
        /// When the next window opens.
        opens: Option<DateTime<Tz>>,
    },
}

impl Schedule {
    /// Parses a five-field cron pattern; each match opens a window of `window`.
    pub fn parse(pattern: &str, window: Duration) -> Result<Self, ScheduleError> {
        if window.is_zero() {
            return Err(ScheduleError::EmptyWindow);
        }
        if window.as_secs() / 60 > MAX_WINDOW_MINS {
            return Err(ScheduleError::LongWindow);
        }
        // croner reads an empty list item (`, 1 * * *`, `1,,2`) as "no value": a pattern
        // that never matches, which the search below then needs about a second of CPU
        // per pattern to prove (found by the config fuzz target as a slow input).
        if pattern.split_whitespace().any(|f| f.split(',').any(str::is_empty)) {
            let why = "a field has an empty list item (a stray ',')".into();
            return Err(ScheduleError::Pattern { pattern: pattern.to_string(), why });
        }
        // Minutes are the finest step: a seconds or years field is a mistake here.
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser
            .parse(pattern)
            .map_err(|e| ScheduleError::Pattern { pattern: pattern.to_string(), why: e.to_string() })?;
        // A pattern that never matches would make every look at the window search
        // millennia of days.
        if cron.find_next_occurrence(&chrono::Utc::now(), false).is_err() {
            return Err(ScheduleError::Never(pattern.to_string()));
        }
        Ok(Self { cron, pattern: pattern.to_string(), window })
    }

    /// The window at `now`: open if the latest match (this minute included) was
    /// less than the window's length ago.
    pub fn at<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Window<Tz> {
        let len = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        if let Ok(start) = self.cron.find_previous_occurrence(now, true) {
            if let Some(closes) = start.checked_add_signed(len).filter(|c| c > now) {
                return Window::Open { closes };
            }
        }
        // When clocks go back, the next match can be the first pass through the
        // repeated hour, already behind `now`: the one after it is the opening.
        let mut opens = self.cron.find_next_occurrence(now, false).ok();
        if let Some(o) = opens.as_ref().filter(|o| *o <= now) {
            let later = o.clone() + chrono::Duration::hours(2);
            opens = self.cron.find_next_occurrence(&later.max(now.clone()), false).ok();
        }
        Window::Closed { opens }
    }

    /// The cron pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The window's length in whole minutes.
    pub fn window_mins(&self) -> u64 {
        self.window.as_secs() / 60
    }

    /// The pattern and window as configured, for status.
    pub fn describe(&self) -> String {
        format!("{} for {} min", self.pattern, self.window_mins())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, 0).unwrap()
    }

    fn nightly() -> Schedule {
        Schedule::parse("0 1 * * *", Duration::from_secs(4 * 3600)).unwrap()
    }

    #[test]
    fn open_from_each_match_for_the_window() {
        let s = nightly();
        assert_eq!(s.at(&t(1, 0)), Window::Open { closes: t(5, 0) }, "the matching minute itself");
        assert_eq!(s.at(&t(4, 59)), Window::Open { closes: t(5, 0) });
        assert_eq!(s.at(&t(5, 0)), Window::Closed { opens: Some(t(1, 0) + chrono::Duration::days(1)) });
        assert_eq!(s.at(&t(0, 30)), Window::Closed { opens: Some(t(1, 0)) });
        assert_eq!(s.describe(), "0 1 * * * for 240 min");
    }

    #[test]
    fn overlapping_windows_stay_open() {
        let s = Schedule::parse("*/30 * * * *", Duration::from_secs(3600)).unwrap();
        assert_eq!(s.at(&t(10, 45)), Window::Open { closes: t(11, 30) });
    }

    #[test]
    fn bad_patterns_and_empty_windows_are_refused_with_the_reason() {
        let e = Schedule::parse("every night", Duration::from_secs(60)).unwrap_err();
        assert!(matches!(e, ScheduleError::Pattern { .. }));
        assert!(e.to_string().contains("five cron fields"), "{e}");
        assert!(Schedule::parse("0 25 * * *", Duration::from_secs(60)).is_err(), "hour 25");
        assert!(Schedule::parse("0 0 1 * * *", Duration::from_secs(60)).is_err(), "a seconds field");
        assert!(Schedule::parse("@daily", Duration::from_secs(60)).is_ok(), "the usual shorthands");
        assert_eq!(
            Schedule::parse("0 0 30 2 *", Duration::from_secs(60)).unwrap_err(),
            ScheduleError::Never("0 0 30 2 *".into())
        );
        for stray in [", 1 * * *", "0 1,,2 * * *", "0 1, * * *"] {
            let e = Schedule::parse(stray, Duration::from_secs(60)).unwrap_err();
            assert!(matches!(e, ScheduleError::Pattern { .. }) && e.to_string().contains("stray ','"), "{stray}: {e}");
        }
        assert!(Schedule::parse("0 1,13 * * *", Duration::from_secs(60)).is_ok());
        assert_eq!(Schedule::parse("0 1 * * *", Duration::ZERO).unwrap_err(), ScheduleError::EmptyWindow);
        let year = Duration::from_secs((MAX_WINDOW_MINS + 1) * 60);
        assert_eq!(Schedule::parse("0 1 * * *", year).unwrap_err(), ScheduleError::LongWindow);
    }
}
