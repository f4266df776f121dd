//! The one retry policy of ecr-auth: exponential backoff with "equal jitter".
//!
//! Every daemon (Swarm refresher, variable sync, token broker) waits by this rule
//! after failures in a row, so many instances started together never retry in step
//! and a long outage costs one attempt every few minutes, not a busy loop.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure (before jitter).
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The daemons' policy: 1 s doubling to 5 minutes.
    pub const DAEMON: Backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// The wait after the `failures`-th failure in a row (1 = the first): doubling
    /// from `first`, capped by `max` and by `cap` (a daemon's own interval), then
    /// "equal jitter": half of it fixed, half spread by `draw` in [0, 1).
    pub fn delay(&self, failures: u32, cap: Option<Duration>, draw: f64) -> Duration {
        let exp = self
            .first
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let mut limit = exp.min(self.max);
        if let Some(cap) = cap {
            limit = limit.min(cap);
        }
        let limit = limit.max(Duration::from_secs(1));
        let half = limit / 2;
        half + (limit - half).mul_f64(draw.clamp(0.0, 0.999))
    }
}

/// A number in [0, 1) from the standard library's per-process random keys: the
/// jitter source of the daemons (tests pass their own draws instead).
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

    #[test]
    fn doubles_to_the_cap_with_equal_jitter() {
        let b = Backoff::DAEMON;
        let low: Vec<u64> = (1..=12)
            .map(|n| b.delay(n, None, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(
            low,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000, 150000, 150000]
        );
        // The highest draw stays below the full exponential value.
        assert_eq!(b.delay(3, None, 0.999).as_millis(), 3998);
        // A daemon's own interval caps the wait.
        assert_eq!(
            b.delay(10, Some(Duration::from_secs(2)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(b.delay(u32::MAX, None, 0.5), Duration::from_secs(225));
    }

    #[test]
    fn draws_are_in_range_and_differ() {
        let draws: Vec<f64> = (0..100).map(|_| random_draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)), "{draws:?}");
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
