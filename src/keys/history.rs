//! A key's recent usage, per UTC hour and per UTC day, as `GET /usage` shows it, and how long
//! usage records are kept ([`UsageRetention`]). Both backends store executions per key and
//! per hour (sled as counters, PostgreSQL as `pyexec_usage_hourly` beside its ledger of
//! charges); this module owns the windows and turns those hours into buckets, so both show
//! the same thing. May not touch a database.

use std::time::Duration;

use time::OffsetDateTime;

/// Hourly buckets shown: the current hour and the 23 before it.
pub const HOURLY_BUCKETS: u32 = 24;
/// Most daily buckets shown: today and up to 29 days before it (fewer when the retention is
/// shorter).
pub const MAX_DAILY_BUCKETS: u32 = 30;
/// Days usage records are kept unless `serve --usage-retention-days` says otherwise.
pub const DEFAULT_USAGE_RETENTION_DAYS: u32 = 30;
/// How often a node deletes usage records older than the retention.
pub const USAGE_PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

const SECONDS_PER_HOUR: i64 = 3600;
const HOURS_PER_DAY: i64 = 24;

/// How long usage records (PostgreSQL's charges and both backends' hourly counts) are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRetention {
    days: u32,
}

impl Default for UsageRetention {
    fn default() -> Self {
        UsageRetention::days(DEFAULT_USAGE_RETENTION_DAYS)
    }
}

impl UsageRetention {
    /// Keeps `days` days (at least one: the hourly window needs 24 hours).
    pub fn days(days: u32) -> UsageRetention {
        UsageRetention { days: days.max(1) }
    }

    pub fn in_days(self) -> u32 {
        self.days
    }

    /// Records from before this instant are deleted when pruning at `at`.
    pub fn cutoff(self, at: OffsetDateTime) -> OffsetDateTime {
        at - time::Duration::days(i64::from(self.days))
    }

    /// Daily buckets shown: every day that lies wholly inside the retention, at most
    /// [`MAX_DAILY_BUCKETS`].
    fn daily_buckets(self) -> u32 {
        self.days.min(MAX_DAILY_BUCKETS)
    }

    /// The first hour (in hours since the Unix epoch) any bucket shown at `at` covers.
    pub(crate) fn first_hour_shown(self, at: OffsetDateTime) -> i64 {
        let hourly = hour_of(at) - i64::from(HOURLY_BUCKETS - 1);
        let daily = day_of(at) - i64::from(self.daily_buckets() - 1);
        hourly.min(daily * HOURS_PER_DAY)
    }
}

/// One bucket: executions charged from `start` (inclusive) for an hour or a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageBucket {
    pub start: OffsetDateTime,
    pub executions: u64,
}

/// A key's executions per hour and per day, oldest bucket first; every bucket of each window
/// is present (zeros included), the last one being the current, still open, hour or day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageHistory {
    /// How long usage records are kept; `daily` covers at most this many days.
    pub retention_days: u32,
    /// The current hour and the 23 before it.
    pub hourly: Vec<UsageBucket>,
    /// Today and the days before it: `min(retention_days, 30)` buckets.
    pub daily: Vec<UsageBucket>,
}

impl UsageHistory {
    /// Buckets the stored hourly counts — `(hour since the Unix epoch, executions)`, in any
    /// order, hours outside the windows ignored — into the windows that end at `at`.
    pub(crate) fn from_hours(
        at: OffsetDateTime,
        retention: UsageRetention,
        hours: impl IntoIterator<Item = (i64, u64)>,
    ) -> UsageHistory {
        let last_hour = hour_of(at);
        let last_day = day_of(at);
        let mut hourly = window(last_hour, HOURLY_BUCKETS, 1);
        let mut daily = window(last_day, retention.daily_buckets(), HOURS_PER_DAY);
        for (hour, executions) in hours {
            add(&mut hourly, last_hour - hour, executions);
            add(
                &mut daily,
                last_day - hour.div_euclid(HOURS_PER_DAY),
                executions,
            );
        }
        UsageHistory {
            retention_days: retention.in_days(),
            hourly,
            daily,
        }
    }
}

/// `count` empty buckets of `hours` hours each, the last one being bucket number `last`.
fn window(last: i64, count: u32, hours: i64) -> Vec<UsageBucket> {
    (0..i64::from(count))
        .rev()
        .map(|back| UsageBucket {
            start: hour_start((last - back) * hours),
            executions: 0,
        })
        .collect()
}

/// Adds to the bucket `back` buckets before the last one, if the window reaches it.
fn add(buckets: &mut [UsageBucket], back: i64, executions: u64) {
    let Ok(back) = usize::try_from(back) else {
        return;
    };
    if let Some(index) = buckets.len().checked_sub(back + 1) {
        buckets[index].executions += executions;
    }
}

/// Hours since the Unix epoch (UTC) of the hour `at` falls in.
pub(crate) fn hour_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(SECONDS_PER_HOUR)
}

/// The instant hour number `hour` (since the Unix epoch) starts.
pub(crate) fn hour_start(hour: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(hour * SECONDS_PER_HOUR)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn day_of(at: OffsetDateTime) -> i64 {
    hour_of(at).div_euclid(HOURS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn utc(rfc3339: &str) -> OffsetDateTime {
        OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
    }

    fn hour(at: OffsetDateTime) -> i64 {
        hour_of(at)
    }

    fn nonzero(buckets: &[UsageBucket]) -> Vec<(OffsetDateTime, u64)> {
        buckets
            .iter()
            .filter(|b| b.executions > 0)
            .map(|b| (b.start, b.executions))
            .collect()
    }

    #[test]
    fn windows_end_with_the_current_hour_and_day_and_include_empty_buckets() {
        let at = utc("2026-12-03T09:48:02Z");
        let history = UsageHistory::from_hours(at, UsageRetention::default(), []);
        assert_eq!(history.hourly.len(), 24);
        assert_eq!(history.hourly[0].start, utc("2026-12-02T10:00:00Z"));
        assert_eq!(history.hourly[23].start, utc("2026-12-03T09:00:00Z"));
        assert_eq!(history.daily.len(), 30);
        assert_eq!(history.daily[0].start, utc("2026-11-04T00:00:00Z"));
        assert_eq!(history.daily[29].start, utc("2026-12-03T00:00:00Z"));
        assert!(
            history
                .hourly
                .iter()
                .chain(&history.daily)
                .all(|b| b.executions == 0)
        );
    }

    #[test]
    fn an_hour_is_counted_in_its_own_bucket_up_to_the_instant_before_the_next() {
        let charged = utc("2026-12-03T08:00:00Z");
        let hours = [(hour(charged), 5)];
        for at in [
            utc("2026-12-03T09:00:00Z"),
            utc("2026-12-03T09:59:59.999999999Z"),
        ] {
            let history = UsageHistory::from_hours(at, UsageRetention::default(), hours);
            assert_eq!(nonzero(&history.hourly), [(charged, 5)]);
            assert_eq!(
                history.hourly[22].start, charged,
                "the bucket before the last"
            );
        }
    }

    #[test]
    fn the_hourly_window_holds_exactly_24_hours() {
        let charged = utc("2026-12-02T10:00:00Z");
        let hours = [(hour(charged), 2)];
        let oldest = UsageHistory::from_hours(
            utc("2026-12-03T09:59:59Z"),
            UsageRetention::default(),
            hours,
        );
        assert_eq!(nonzero(&oldest.hourly), [(charged, 2)]);
        assert_eq!(oldest.hourly[0].start, charged);
        let gone = UsageHistory::from_hours(
            utc("2026-12-03T10:00:00Z"),
            UsageRetention::default(),
            hours,
        );
        assert_eq!(nonzero(&gone.hourly), []);
        assert_eq!(nonzero(&gone.daily), [(utc("2026-12-02T00:00:00Z"), 2)]);
    }

    #[test]
    fn days_sum_their_hours_and_split_at_midnight_utc() {
        let hours = [
            (hour(utc("2026-12-01T23:00:00Z")), 3),
            (hour(utc("2026-12-02T00:00:00Z")), 4),
            (hour(utc("2026-12-02T23:00:00Z")), 5),
        ];
        let history = UsageHistory::from_hours(
            utc("2026-12-03T00:30:00Z"),
            UsageRetention::default(),
            hours,
        );
        assert_eq!(
            nonzero(&history.daily),
            [
                (utc("2026-12-01T00:00:00Z"), 3),
                (utc("2026-12-02T00:00:00Z"), 9)
            ]
        );
        assert_eq!(nonzero(&history.hourly), [(utc("2026-12-02T23:00:00Z"), 5)]);
    }

    #[test]
    fn daily_buckets_stay_inside_the_retention() {
        let at = utc("2026-12-03T09:00:00Z");
        let week = UsageRetention::days(7);
        let history = UsageHistory::from_hours(at, week, [(hour(week.cutoff(at)), 1)]);
        assert_eq!(history.retention_days, 7);
        assert_eq!(history.daily.len(), 7);
        assert_eq!(history.daily[0].start, utc("2026-11-27T00:00:00Z"));
        assert!(history.daily[0].start >= week.cutoff(at));
        assert_eq!(nonzero(&history.daily), [], "the cut-off day is not shown");
        assert_eq!(week.first_hour_shown(at), hour(history.daily[0].start));

        let long = UsageRetention::days(365);
        let history = UsageHistory::from_hours(at, long, []);
        assert_eq!(history.daily.len(), 30);
        assert_eq!(UsageRetention::days(0), UsageRetention::days(1));
    }

    #[test]
    fn the_first_hour_shown_is_the_older_of_the_two_windows() {
        let at = utc("2026-12-03T09:00:00Z");
        assert_eq!(
            UsageRetention::default().first_hour_shown(at),
            hour(utc("2026-11-04T00:00:00Z"))
        );
        assert_eq!(
            UsageRetention::days(1).first_hour_shown(at),
            hour(utc("2026-12-02T10:00:00Z"))
        );
    }
}
