//! When the next pass runs: a plain function of the schedule, the tokens in use
//! and a random draw, so it is tested without sleeping. After failures the
//! daemons' one retry rule applies ([`crate::backoff`], capped by [`Schedule::backoff_cap`]).

use std::time::Duration;

/// Passes never come closer than this in the default mode (moto hands out tokens
/// that were already expired, and a still-valid cached token past its half-life
/// is served while AWS fails).
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The default mode re-checks at least this often, so services created or
/// changed by others get auth within the hour even without `--watch-events`.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// How often a manager that is not the leader looks again.
pub(crate) const IDLE_RECHECK: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Once,
    Every(Duration),
    /// When any token in use has passed half its life.
    HalfLife,
}

/// The wait before the next full pass after a pass that went well.
/// `due` is the earliest half-life of the tokens in use (unix seconds);
/// `draw` is a random number in [0, 1) for the jitter.
pub(crate) fn next_pass(schedule: Schedule, due: Option<i64>, now: i64, draw: f64) -> Duration {
    let base = match schedule {
        Schedule::Once => return Duration::ZERO,
        Schedule::Every(every) => every,
        Schedule::HalfLife => match due {
            Some(due) => Duration::from_secs(due.saturating_sub(now).max(0) as u64),
            None => MAX_INTERVAL,
        }
        .clamp(MIN_INTERVAL, MAX_INTERVAL),
    };
    base + jitter(base, draw)
}

/// Up to a tenth of the interval, at most 5 minutes: many refreshers started
/// together (one per cluster, same image) don't hit AWS in the same second.
pub(crate) fn jitter(base: Duration, draw: f64) -> Duration {
    (base / 10)
        .min(Duration::from_secs(300))
        .mul_f64(draw.clamp(0.0, 1.0))
}

impl Schedule {
    /// The longest wait after failures: `--every`, else the backoff's own maximum.
    pub fn backoff_cap(self) -> Option<Duration> {
        match self {
            Schedule::Every(every) => Some(every),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn half_life_mode() {
        let s = Schedule::HalfLife;
        // A fresh 12 h token: half-life in 6 h, but look again within the hour.
        assert_eq!(next_pass(s, Some(NOW + 6 * 3600), NOW, 0.0), MAX_INTERVAL);
        // Due in 10 minutes: then.
        assert_eq!(
            next_pass(s, Some(NOW + 600), NOW, 0.0),
            Duration::from_secs(600)
        );
        // Already past (expired-at-issue tokens): not a hot loop.
        assert_eq!(next_pass(s, Some(NOW - 5), NOW, 0.0), MIN_INTERVAL);
        // No ECR service at all.
        assert_eq!(next_pass(s, None, NOW, 0.0), MAX_INTERVAL);
        // Jitter: at most a tenth, capped at 5 minutes.
        assert_eq!(
            next_pass(s, Some(NOW + 600), NOW, 0.5),
            Duration::from_secs(630)
        );
        assert_eq!(
            next_pass(s, None, NOW, 0.999_999),
            MAX_INTERVAL + Duration::from_secs(300).mul_f64(0.999_999)
        );
    }

    #[test]
    fn every_mode_and_once() {
        let every = Schedule::Every(Duration::from_secs(4 * 3600));
        assert_eq!(
            next_pass(every, Some(NOW), NOW, 0.0),
            Duration::from_secs(4 * 3600)
        );
        assert_eq!(
            next_pass(every, None, NOW, 1.0),
            Duration::from_secs(4 * 3600 + 300)
        );
        let short = Schedule::Every(Duration::from_secs(2));
        assert_eq!(
            next_pass(short, None, NOW, 1.0),
            Duration::from_millis(2200)
        );
        assert_eq!(next_pass(Schedule::Once, None, NOW, 0.3), Duration::ZERO);
    }

    #[test]
    fn only_every_caps_the_backoff() {
        let every = Duration::from_secs(2);
        assert_eq!(Schedule::Every(every).backoff_cap(), Some(every));
        assert_eq!(Schedule::HalfLife.backoff_cap(), None);
        assert_eq!(Schedule::Once.backoff_cap(), None);
    }
}
