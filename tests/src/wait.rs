//! Polling with deadlines, and free ports.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// Interval between polls in [`wait_until`] and friends.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A port that was free a moment ago on 127.0.0.1 (bind to port 0, read the
/// port, close). Prefer letting the process bind port 0 and report its address
/// where that is possible.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Calls `f` every few milliseconds until it yields `Some`, and returns that
/// value. Panics mentioning `what` if that doesn't happen within `deadline`
/// (each call of `f` is itself cut off at the deadline).
pub async fn wait_until<F, Fut, T>(what: &str, deadline: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll(deadline, f, || Ok(())).await {
        Ok(v) => v,
        Err(why) => panic!("{}", why.message(what, deadline)),
    }
}

/// Why a [`poll`] gave up.
#[derive(Debug)]
pub(crate) enum GaveUp {
    /// The deadline passed.
    Timeout,
    /// The `check` callback aborted the wait with this reason.
    Aborted(String),
}

impl GaveUp {
    /// A panic message for a wait for `what`.
    pub(crate) fn message(&self, what: &str, deadline: Duration) -> String {
        match self {
            GaveUp::Timeout => format!("timed out after {deadline:?} waiting for {what}"),
            GaveUp::Aborted(why) => format!("gave up waiting for {what}: {why}"),
        }
    }
}

/// The polling loop behind [`wait_until`]: between attempts `check` may abort
/// the wait with a reason (e.g. "the process exited").
pub(crate) async fn poll<F, Fut, T, C>(
    deadline: Duration,
    mut f: F,
    mut check: C,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    C: FnMut() -> Result<(), String>,
{
    let start = Instant::now();
    loop {
        let remaining = deadline.saturating_sub(start.elapsed());
        if let Ok(Some(v)) = tokio::time::timeout(remaining, f()).await {
            return Ok(v);
        }
        check().map_err(GaveUp::Aborted)?;
        let remaining = deadline.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            return Err(GaveUp::Timeout);
        }
        tokio::time::sleep(POLL_INTERVAL.min(remaining)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_first_some() {
        let mut n = 0;
        let v = wait_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let v = (n >= 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for nothing")]
    async fn panics_on_timeout() {
        wait_until("nothing", Duration::from_millis(100), || async {
            None::<()>
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for a slow future")]
    async fn cuts_off_slow_futures() {
        wait_until("a slow future", Duration::from_millis(100), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Some(())
        })
        .await;
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should be free");
    }
}
