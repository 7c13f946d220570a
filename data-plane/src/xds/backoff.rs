//! Jittered exponential back-off between reconnection attempts (Envoy's
//! `JitteredExponentialBackOffStrategy`: full jitter over a doubling, capped interval).

use rand::Rng;
use std::time::Duration;

/// First back-off interval.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Largest back-off interval.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Back-off state: the n-th delay is uniform in `[0, min(max, base · 2ⁿ)]`.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh back-off.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay (full jitter), advancing the exponent.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Starts over from the base interval (after a stream delivered a response).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(*ceilings.last().unwrap_or(&0) as u64));
        }
        assert_eq!(
            ceilings,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), BACKOFF_MAX, "no overflow after many attempts");
        b.reset();
        assert_eq!(b.ceiling(), BACKOFF_BASE);
    }
}
