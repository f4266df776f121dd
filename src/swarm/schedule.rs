//! When the next pass runs: a plain function of the schedule, the tokens in use,
//! the failures so far and a random draw, so it is tested without sleeping.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Passes never come closer than this in the default mode (moto hands out tokens
/// that were already expired, and a still-valid cached token past its half-life
/// is served while AWS fails).
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The default mode re-checks at least this often, so services created or
/// changed by others get auth within the hour even without `--watch-events`.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// While Docker or AWS fail: 1 s, 2 s, 4 s ... up to this (or `--every`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often a manager that is not the leader looks again.
pub const IDLE_RECHECK: Duration = Duration::from_secs(30);

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
pub fn next_pass(schedule: Schedule, due: Option<i64>, now: i64, draw: f64) -> Duration {
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
pub fn jitter(base: Duration, draw: f64) -> Duration {
    (base / 10)
        .min(Duration::from_secs(300))
        .mul_f64(draw.clamp(0.0, 1.0))
}

/// The wait after the `failures`-th failure in a row.
pub fn backoff(schedule: Schedule, failures: u32) -> Duration {
    let cap = match schedule {
        Schedule::Every(every) => every.min(MAX_BACKOFF),
        _ => MAX_BACKOFF,
    }
    .max(Duration::from_secs(1));
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(cap)
}

/// A number in [0, 1) from the standard library's per-process random keys.
pub fn random_draw() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
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
    fn backoff_doubles_up_to_a_cap() {
        let s = Schedule::HalfLife;
        let waits: Vec<u64> = (1..=12).map(|n| backoff(s, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let every = Schedule::Every(Duration::from_secs(2));
        assert_eq!(backoff(every, 5), Duration::from_secs(2));
        assert_eq!(backoff(s, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn draws_are_in_range() {
        for _ in 0..100 {
            let d = random_draw();
            assert!((0.0..1.0).contains(&d), "{d}");
        }
    }
}
