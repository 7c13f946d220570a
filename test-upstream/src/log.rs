//! Per-request-id attempt accounting, shareable across instances.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::behaviour::ResetKind;

/// How many request ids an [`AttemptLog::new`] log keeps before forgetting
/// the oldest (so long-running demo instances don't grow without bound).
pub const DEFAULT_LOG_CAPACITY: usize = 65_536;

/// What an upstream did with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Not answered yet (e.g. still in its delay).
    Pending,
    /// Response headers with this HTTP status were handed to the connection.
    Status(u16),
    /// A gRPC response (HTTP `200`) with this `grpc-status` was handed to the
    /// connection.
    Grpc(u32),
    /// The attempt was reset as scripted.
    Reset(ResetKind),
    /// The request went away (client disconnect, stream reset, upstream
    /// stopped) before the upstream answered it.
    Cancelled,
}

/// One attempt of a request id, as seen by one upstream instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Name of the instance that received it.
    pub instance: String,
    /// 1-based attempt number within the log it was recorded in.
    pub attempt: u32,
    /// When the request headers arrived.
    pub at: Instant,
    /// What the instance did with it.
    pub outcome: Outcome,
}

/// Records attempts per request id (`x-test-id`, else `x-request-id`).
///
/// Every [`Upstream`](crate::Upstream) records into one log: its own by
/// default, so attempt numbers count per instance; give several instances the
/// same `Arc<AttemptLog>` ([`Upstream::start_group`](crate::Upstream::start_group)
/// or [`UpstreamBuilder::log`](crate::UpstreamBuilder::log)) to count attempts
/// across them, which is what `x-fault-sequence` and friends then follow, and
/// to see which hosts were tried in which order.
///
/// Requests without an id are not recorded. The log keeps at most `capacity`
/// ids, forgetting the least recently first-seen one beyond that. Each
/// request takes the (short, never held across an await) lock twice.
#[derive(Debug)]
pub struct AttemptLog {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Attempts by id, each tagged with a token for [`AttemptLog::finish`].
    by_id: HashMap<String, Vec<(u64, Attempt)>>,
    /// Ids in first-seen order, for eviction and [`AttemptLog::ids`].
    order: VecDeque<String>,
    next_token: u64,
}

impl Default for AttemptLog {
    fn default() -> Self {
        AttemptLog::new()
    }
}

impl AttemptLog {
    /// An empty log keeping up to [`DEFAULT_LOG_CAPACITY`] ids.
    pub fn new() -> AttemptLog {
        AttemptLog::with_capacity(DEFAULT_LOG_CAPACITY)
    }

    /// An empty log keeping up to `capacity` (at least 1) ids.
    pub fn with_capacity(capacity: usize) -> AttemptLog {
        AttemptLog {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// A new shared log, for passing to several instances.
    pub fn shared() -> Arc<AttemptLog> {
        Arc::new(AttemptLog::new())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// All attempts of `id`, in arrival order.
    pub fn attempts(&self, id: &str) -> Vec<Attempt> {
        self.lock()
            .by_id
            .get(id)
            .map(|v| v.iter().map(|(_, a)| a.clone()).collect())
            .unwrap_or_default()
    }

    /// Number of attempts of `id`.
    pub fn count(&self, id: &str) -> usize {
        self.lock().by_id.get(id).map_or(0, Vec::len)
    }

    /// Instance names that received `id`, in arrival order (one per attempt).
    pub fn hosts(&self, id: &str) -> Vec<String> {
        self.lock()
            .by_id
            .get(id)
            .map(|v| v.iter().map(|(_, a)| a.instance.clone()).collect())
            .unwrap_or_default()
    }

    /// Outcomes of the attempts of `id`, in arrival order.
    pub fn outcomes(&self, id: &str) -> Vec<Outcome> {
        self.lock()
            .by_id
            .get(id)
            .map(|v| v.iter().map(|(_, a)| a.outcome).collect())
            .unwrap_or_default()
    }

    /// All recorded ids, in first-seen order.
    pub fn ids(&self) -> Vec<String> {
        self.lock().order.iter().cloned().collect()
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.by_id.clear();
        inner.order.clear();
    }

    /// Waits (polling every 5 ms) until `id` has at least `n` attempts none
    /// of which is [`Outcome::Pending`], or `timeout` passes. Returns the
    /// attempts either way.
    pub async fn wait_settled(&self, id: &str, n: usize, timeout: Duration) -> Vec<Attempt> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let attempts = self.attempts(id);
            let settled =
                attempts.len() >= n && attempts.iter().all(|a| a.outcome != Outcome::Pending);
            if settled || tokio::time::Instant::now() >= deadline {
                return attempts;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Records the arrival of an attempt of `id` at `instance`; returns its
    /// attempt number and a token for [`AttemptLog::finish`].
    pub(crate) fn begin(&self, id: &str, instance: &str) -> (u32, u64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let token = inner.next_token;
        inner.next_token += 1;
        let attempts = match inner.by_id.get_mut(id) {
            Some(v) => v,
            None => {
                while inner.order.len() >= self.capacity {
                    if let Some(old) = inner.order.pop_front() {
                        inner.by_id.remove(&old);
                    }
                }
                inner.order.push_back(id.to_owned());
                inner.by_id.entry(id.to_owned()).or_default()
            }
        };
        let attempt = u32::try_from(attempts.len() + 1).unwrap_or(u32::MAX);
        attempts.push((
            token,
            Attempt {
                instance: instance.to_owned(),
                attempt,
                at: Instant::now(),
                outcome: Outcome::Pending,
            },
        ));
        (attempt, token)
    }

    /// Sets the outcome of the attempt `token` of `id` (if still recorded).
    pub(crate) fn finish(&self, id: &str, token: u64, outcome: Outcome) {
        if let Some(v) = self.lock().by_id.get_mut(id)
            && let Some((_, a)) = v.iter_mut().rev().find(|(t, _)| *t == token)
        {
            a.outcome = outcome;
        }
    }
}

/// An attempt in flight: marks itself [`Outcome::Cancelled`] if dropped
/// before [`PendingAttempt::finish`].
pub(crate) struct PendingAttempt {
    log: Arc<AttemptLog>,
    id: String,
    token: u64,
    done: bool,
}

impl PendingAttempt {
    /// Records the arrival of `id` at `instance` in `log`; returns the guard
    /// and the attempt number.
    pub(crate) fn begin(log: &Arc<AttemptLog>, id: String, instance: &str) -> (Self, u32) {
        let (attempt, token) = log.begin(&id, instance);
        let pending = PendingAttempt {
            log: log.clone(),
            id,
            token,
            done: false,
        };
        (pending, attempt)
    }

    /// Records the outcome.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.log.finish(&self.id, self.token, outcome);
        self.done = true;
    }
}

impl Drop for PendingAttempt {
    fn drop(&mut self) {
        if !self.done {
            self.log.finish(&self.id, self.token, Outcome::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_id_and_evicts_oldest() {
        let log = AttemptLog::with_capacity(2);
        assert_eq!(log.begin("a", "h1").0, 1);
        let (n, token) = log.begin("a", "h2");
        assert_eq!(n, 2);
        log.finish("a", token, Outcome::Status(200));
        assert_eq!(log.hosts("a"), ["h1", "h2"]);
        assert_eq!(log.outcomes("a"), [Outcome::Pending, Outcome::Status(200)]);
        log.begin("b", "h1");
        log.begin("c", "h1");
        assert_eq!(log.count("a"), 0, "evicted");
        assert_eq!(log.ids(), ["b", "c"]);
        // A stale token is harmless.
        log.finish("a", token, Outcome::Status(500));
        assert_eq!(log.count("a"), 0);
        log.clear();
        assert!(log.ids().is_empty());
    }

    #[test]
    fn dropped_pending_attempt_is_cancelled() {
        let log = AttemptLog::shared();
        let (p, n) = PendingAttempt::begin(&log, "x".into(), "h");
        assert_eq!(n, 1);
        drop(p);
        let (p, n) = PendingAttempt::begin(&log, "x".into(), "h");
        assert_eq!(n, 2);
        p.finish(Outcome::Reset(ResetKind::BeforeHeaders));
        assert_eq!(
            log.outcomes("x"),
            [Outcome::Cancelled, Outcome::Reset(ResetKind::BeforeHeaders)]
        );
    }
}
