//! Resilience layers of the request path, one concern per module (as in linkerd2-proxy):
//! `retry` (policy, budgets of attempts, back-off), `breaker` (circuit breakers), `outlier`
//! (outlier detection). The router composes them; none of them does I/O.

pub mod breaker;
pub mod outlier;
pub mod retry;

/// What one upstream attempt came to, as outlier detection and retries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status arrived from the host.
    Response(u16),
    /// The TCP connect failed (refused, unreachable) — a local-origin failure.
    ConnectFailure,
    /// The connect timed out — a local-origin failure.
    ConnectTimeout,
    /// The connection was reset or closed before response headers — a local-origin failure.
    Reset,
    /// The per-try timeout fired before response headers — a local-origin failure.
    Timeout,
}

impl Outcome {
    /// True for failures that originate here rather than in an HTTP response
    /// (`split_external_local_origin_errors` separates these).
    pub fn is_local_origin(self) -> bool {
        !matches!(self, Outcome::Response(_))
    }

    /// The status Envoy charges for this outcome when it is not split out: local-origin
    /// failures count as 503 (timeouts as 504).
    pub fn effective_status(self) -> u16 {
        match self {
            Outcome::Response(s) => s,
            Outcome::Timeout => 504,
            _ => 503,
        }
    }
}
