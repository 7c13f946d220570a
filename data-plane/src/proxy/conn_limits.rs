//! The connection manager's limits on a downstream connection, as Envoy 1.40 enforces them:
//! `common_http_protocol_options.idle_timeout` (default 1 h), `max_connection_duration` and
//! `max_requests_per_connection`, and the `drain_timeout` (default 5 s) of a connection they
//! drain.
//!
//! | limit | when it is reached | then | stat |
//! |---|---|---|---|
//! | idle timeout | no request in flight for that long | no byte ever received: close at once; else drain | `downstream_cx_idle_timeout` |
//! | max connection duration | that long after the connection was accepted, busy or not | no byte ever received: close at once; else drain | `downstream_cx_max_duration_reached` |
//! | max requests | the request that reaches it arrives | its response says `connection: close`, and the connection closes after it (HTTP/2: drain) | `downstream_cx_max_requests_reached` |
//!
//! A *draining* HTTP/1.1 connection still serves requests, each response saying
//! `connection: close`, and is closed once `drain_timeout` has passed and no request is in
//! flight (Envoy then waits up to its `delayed_close_timeout`, 1 s, for the client to close
//! first; legate-proxy sends its FIN at once: docs/compat.md). Over HTTP/2 draining is a
//! graceful shutdown: GOAWAY, then close once the streams in flight are done (`h2_server`).
//!
//! Nothing here reads the clock or moves a timer while requests flow: a request costs a
//! counter, and its end's time comes from the clock read that times it
//! ([`ConnLife::idle_from`]); the one timer of a connection is made the first time it waits
//! for a request, moved earlier when a deadline comes before it, and moved on (later) only
//! when it fires before the deadline that is due by then.

use crate::config::ConnectionLimits;
use crate::stats::{Counter, Store};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// What ended a wait for the connection's next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEvent {
    /// The idle timeout: counted; the connection closes (nothing was ever received) or
    /// drains.
    Idle,
    /// The max connection duration: counted; the connection closes or drains.
    MaxDuration,
    /// The drain is over: the connection closes.
    DrainOver,
}

/// The connection manager's stats of these limits (`http.<prefix>.*`).
#[derive(Debug, Clone)]
pub struct ConnStats {
    /// `downstream_cx_idle_timeout`.
    pub idle_timeout: Counter,
    /// `downstream_cx_max_duration_reached`.
    pub max_duration_reached: Counter,
    /// `downstream_cx_max_requests_reached`.
    pub max_requests_reached: Counter,
}

impl ConnStats {
    /// The stats of connection manager `prefix`.
    pub fn new(store: &Store, prefix: &str) -> Self {
        let c = |s: &str| store.counter(&format!("http.{prefix}.{s}"));
        ConnStats {
            idle_timeout: c("downstream_cx_idle_timeout"),
            max_duration_reached: c("downstream_cx_max_duration_reached"),
            max_requests_reached: c("downstream_cx_max_requests_reached"),
        }
    }
}

/// One downstream connection's standing under [`ConnectionLimits`].
#[derive(Debug)]
pub struct ConnLife {
    limits: ConnectionLimits,
    stats: ConnStats,
    accepted: Instant,
    /// Requests so far.
    requests: u32,
    /// When the connection started to drain, once it has.
    draining_since: Option<Instant>,
    /// When the connection last had no request in flight.
    idle_since: Instant,
    /// The connection's one timer, made the first time it waits under a deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer has been polled since it was last set, and holds the waker.
    armed: bool,
}

impl ConnLife {
    /// A connection accepted at `now`.
    pub fn new(limits: ConnectionLimits, stats: ConnStats, now: Instant) -> Self {
        ConnLife {
            limits,
            stats,
            accepted: now,
            requests: 0,
            draining_since: None,
            idle_since: now,
            timer: None,
            armed: false,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// When the connection was accepted.
    pub fn accepted(&self) -> Instant {
        self.accepted
    }

    /// The stats it counts in.
    pub fn stats(&self) -> &ConnStats {
        &self.stats
    }

    /// A request arrived. `true`: it reached `max_requests_per_connection` (counted here):
    /// the connection carries no other.
    pub fn request_started(&mut self) -> bool {
        self.requests = self.requests.saturating_add(1);
        let last = self
            .limits
            .max_requests
            .is_some_and(|max| self.requests >= max);
        if last {
            self.stats.max_requests_reached.inc();
        }
        last
    }

    /// The connection has had no request in flight since `now`.
    pub fn idle_from(&mut self, now: Instant) {
        self.idle_since = now;
    }

    /// Whether the connection is draining (reads the clock only when a max connection
    /// duration is set): see [`ConnLife::draining_at`].
    pub fn draining(&mut self) -> bool {
        if self.draining_since.is_some() {
            return true;
        }
        self.limits.max_connection_duration.is_some() && self.draining_at(Instant::now())
    }

    /// Whether the connection is draining at `now`: a max connection duration passed while it
    /// was busy starts its drain (and is counted) here, from the moment it passed.
    pub fn draining_at(&mut self, now: Instant) -> bool {
        if self.draining_since.is_some() {
            return true;
        }
        match self.max_duration_deadline() {
            Some(at) if at <= now => {
                self.stats.max_duration_reached.inc();
                self.draining_since = Some(at);
                true
            }
            _ => false,
        }
    }

    /// Whether the drain (if any) is over at `now`: the connection closes once no request is
    /// in flight.
    pub fn drain_over(&self, now: Instant) -> bool {
        self.drain_deadline().is_some_and(|at| at <= now)
    }

    /// Waits, while no request is in flight, for the first connection deadline: ready with
    /// what it was. The caller acts on it ([`ConnLife::fired`]).
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<ConnEvent> {
        loop {
            let Some((at, event)) = self.next_deadline() else {
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            // A later deadline (the idle one moves with every request) leaves the timer where
            // it is: when it fires, it is moved on then.
            if at < timer.deadline() {
                timer.as_mut().reset(at);
                self.armed = false;
            }
            // Armed: it holds this task's waker (a connection is served by one task), so
            // until it fires there is nothing to poll.
            if self.armed && !timer.is_elapsed() {
                return Poll::Pending;
            }
            if timer.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
            self.armed = false;
            if timer.deadline() >= at {
                return Poll::Ready(event);
            }
            timer.as_mut().reset(at);
        }
    }

    /// Acts on `event` (counts it, starts the drain at `now`). `true`: close the connection
    /// now — the drain is over, or the connection never carried a request (Envoy makes a
    /// connection's codec with its first bytes, and one without a codec closes at once).
    pub fn fired(&mut self, event: ConnEvent, now: Instant) -> bool {
        match event {
            ConnEvent::Idle => self.stats.idle_timeout.inc(),
            ConnEvent::MaxDuration => self.stats.max_duration_reached.inc(),
            ConnEvent::DrainOver => return true,
        }
        if self.requests == 0 {
            return true;
        }
        self.draining_since.get_or_insert(now);
        false
    }

    fn max_duration_deadline(&self) -> Option<Instant> {
        self.limits
            .max_connection_duration
            .map(|d| self.accepted + d)
    }

    fn drain_deadline(&self) -> Option<Instant> {
        self.draining_since.map(|at| at + self.limits.drain_timeout)
    }

    /// The first deadline of an idle connection, and what it is; on a tie, the max duration.
    fn next_deadline(&self) -> Option<(Instant, ConnEvent)> {
        if self.draining_since.is_some() {
            return self.drain_deadline().map(|at| (at, ConnEvent::DrainOver));
        }
        super::stream_timeout::earliest([
            (self.max_duration_deadline(), ConnEvent::MaxDuration),
            (
                self.limits.idle_timeout.map(|d| self.idle_since + d),
                ConnEvent::Idle,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);

    fn stats() -> ConnStats {
        ConnStats::new(&Store::new(), "app")
    }

    fn new_life(limits: ConnectionLimits, s: &ConnStats, now: Instant) -> ConnLife {
        ConnLife::new(limits, s.clone(), now)
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Some(SEC),
            max_connection_duration: Some(10 * SEC),
            max_requests: Some(2),
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn the_request_that_reaches_the_maximum_is_the_last() {
        let s = stats();
        let mut life = new_life(limits(), &s, Instant::now());
        assert!(!life.request_started());
        assert!(life.request_started());
        assert_eq!(s.max_requests_reached.value(), 1);
        let mut unlimited = new_life(ConnectionLimits::default(), &s, Instant::now());
        for _ in 0..1000 {
            assert!(!unlimited.request_started());
        }
    }

    #[test]
    fn a_max_duration_passed_while_busy_drains_from_when_it_passed() {
        let s = stats();
        let t0 = Instant::now();
        let mut life = new_life(limits(), &s, t0);
        assert!(!life.draining_at(t0 + 9 * SEC));
        assert!(life.draining_at(t0 + 12 * SEC));
        assert!(life.draining_at(t0 + 13 * SEC), "still draining");
        assert_eq!(s.max_duration_reached.value(), 1, "counted once");
        assert!(!life.drain_over(t0 + 14 * SEC), "5 s from 10 s");
        assert!(life.drain_over(t0 + 15 * SEC));
    }

    #[test]
    fn an_idle_connection_waits_for_the_first_deadline() {
        let t0 = Instant::now();
        let mut life = new_life(limits(), &stats(), t0);
        assert_eq!(life.next_deadline(), Some((t0 + SEC, ConnEvent::Idle)));
        life.idle_from(t0 + 9 * SEC + SEC / 2);
        assert_eq!(
            life.next_deadline(),
            Some((t0 + 10 * SEC, ConnEvent::MaxDuration))
        );
        life.request_started();
        assert!(!life.fired(ConnEvent::MaxDuration, t0 + 10 * SEC));
        assert_eq!(
            life.next_deadline(),
            Some((t0 + 15 * SEC, ConnEvent::DrainOver)),
            "then only the drain's end"
        );
        assert!(life.fired(ConnEvent::DrainOver, t0 + 15 * SEC));
    }

    #[test]
    fn a_connection_that_never_received_a_byte_closes_at_once() {
        let s = stats();
        let mut life = new_life(limits(), &s, Instant::now());
        assert!(life.fired(ConnEvent::Idle, Instant::now()));
        assert_eq!(s.idle_timeout.value(), 1);
        let no_idle = ConnectionLimits {
            idle_timeout: None,
            ..ConnectionLimits::default()
        };
        let mut off = new_life(no_idle, &s, Instant::now());
        assert_eq!(off.next_deadline(), None);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(off.poll_idle(&mut cx).is_pending());
        assert!(off.timer.is_none(), "no deadline, no timer");
    }
}
