//! Instance-level fault configuration.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::behaviour::{Action, Behaviour, header_plan};
use crate::request::RequestInfo;

/// Per-instance defaults, for upstreams that misbehave without any request
/// headers (the demo's "flaky" instances) or that must be as cheap as
/// possible (benchmarks). It is itself a [`Behaviour`]: `x-fault-*` request
/// headers still apply and take precedence over these defaults.
///
/// ```
/// # use std::sync::Arc;
/// # use legate_test_upstream::{FaultConfig, Upstream};
/// # async fn demo() -> std::io::Result<()> {
/// let flaky = FaultConfig { fail_rate: 0.3, seed: 7, ..FaultConfig::default() };
/// let _up = Upstream::builder("flaky").behaviour(Arc::new(flaky)).start().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Fraction (`0.0..=1.0`) of requests answered with
    /// [`FaultConfig::fail_status`] when they carry no status header. The
    /// draw for the instance's Nth request is a hash of `(seed, N)`, so the
    /// set of failing sequence numbers is fixed by the seed (and the realised
    /// fraction is close to, not exactly, `fail_rate`).
    pub fail_rate: f64,
    /// Status used for the `fail_rate` failures (default `503`).
    pub fail_status: StatusCode,
    /// Seed for the `fail_rate` draws.
    pub seed: u64,
    /// Delay before the response headers of every request (a delay header
    /// overrides it).
    pub delay: Duration,
    /// Fast mode: answer every request `200` with exactly this body and
    /// `content-type: text/plain`; all other settings and fault headers are
    /// ignored, no attempts are logged and no JSON is built.
    pub static_body: Option<Bytes>,
}

impl FaultConfig {
    /// The defaults: no failures, no delay, JSON echo.
    pub const DEFAULT: FaultConfig = FaultConfig {
        fail_rate: 0.0,
        fail_status: StatusCode::SERVICE_UNAVAILABLE,
        seed: 0,
        delay: Duration::ZERO,
        static_body: None,
    };

    /// Whether the instance's `seq`th request (1-based) is a `fail_rate`
    /// failure.
    pub fn fails(&self, seq: u64) -> bool {
        // `NaN` and non-positive rates never fail; `>= 1` always does.
        self.fail_rate > 0.0 && unit_draw(self.seed, seq) < self.fail_rate
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig::DEFAULT
    }
}

impl Behaviour for FaultConfig {
    fn decide(&self, req: &RequestInfo) -> Action {
        Action::Plan(header_plan(req, self))
    }

    fn static_body(&self) -> Option<Bytes> {
        self.static_body.clone()
    }
}

/// A uniform draw in `[0, 1)` from `(seed, n)` (SplitMix64 finaliser).
fn unit_draw(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits as a fraction.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_rate_is_deterministic_and_close() {
        let cfg = |seed| FaultConfig {
            fail_rate: 0.3,
            seed,
            ..FaultConfig::default()
        };
        let pattern = |c: &FaultConfig| (1..=10_000).map(|n| c.fails(n)).collect::<Vec<_>>();
        let a = pattern(&cfg(42));
        assert_eq!(a, pattern(&cfg(42)));
        assert_ne!(a, pattern(&cfg(43)));
        let failures = a.iter().filter(|f| **f).count();
        assert!((2_700..3_300).contains(&failures), "{failures}");
    }

    #[test]
    fn fail_rate_edges() {
        let never = FaultConfig::default();
        let always = FaultConfig {
            fail_rate: 1.0,
            ..FaultConfig::default()
        };
        let nan = FaultConfig {
            fail_rate: f64::NAN,
            ..FaultConfig::default()
        };
        for n in 1..1_000 {
            assert!(!never.fails(n));
            assert!(always.fails(n));
            assert!(!nan.fails(n));
        }
    }
}
