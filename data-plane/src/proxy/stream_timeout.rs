//! The connection manager's stream timeouts, as Envoy 1.40 enforces them:
//! `stream_idle_timeout` (default 5 min; a route's `idle_timeout` replaces it),
//! `request_timeout` and `request_headers_timeout` (both off by default).
//!
//! | timer | runs | fires before the response head | fires mid-response |
//! |---|---|---|---|
//! | stream idle | from the request's first byte, again after each request or response frame | 408 `stream timeout` while the request is incomplete, else 504; `downstream_rq_idle_timeout` | the stream is reset; `downstream_rq_idle_timeout` |
//! | request | from the request's first byte until the request has been received in full | 408 `request timeout`; `downstream_rq_timeout` | (stopped) |
//! | request headers | from the request's first byte until its head has been received in full | 408 `request header timeout`; `downstream_rq_header_timeout` | (stopped) |
//! | max stream duration (`common_http_protocol_options.max_stream_duration`) | from the request's first byte | 408 `downstream duration timeout` while the request is incomplete, else 504; `downstream_rq_max_duration_reached` | the stream is reset; `downstream_rq_max_duration_reached` |
//!
//! Where each is enforced: a request head that arrives in parts, in `http1_server`; a request
//! body being read, in `replay::prepare` (buffered for retries) or the router's wait for the
//! end of a body streamed upstream ([`Progress`]); the wait for the response head and the retry
//! back-off, as one more deadline among the router's; the response body, in `UpstreamBody`.
//! No timer of its own runs for a request that arrives complete: its idle deadline joins the
//! route timeout's. The max stream duration, off by default, is one timer around the router's
//! whole work for a request (`router::respond`) and one on its response body
//! (`body::DeadlineBody`).
//!
//! Not covered (a known gap): the rest of a body too large to buffer for retries
//! (`replay::Prepared::Once` after the buffer limit) streams upstream unwatched, so a stall in
//! it is not seen before the response head; and after an early response over h2c, the route
//! timeout starts when the response body is next polled after the request has ended, not at
//! that moment (over HTTP/1.1 the codec feeds the request body from the same task, so at once).

use super::body::ProxyBody;
use super::listener::HttpStats;
use super::local_reply;
use crate::config::ListenerConfig;
use http::{HeaderValue, Response, StatusCode, header};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A listener's stream timeouts (its connection manager's settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// `stream_idle_timeout`; `None`: disabled.
    pub idle: Option<Duration>,
    /// `request_timeout`; `None`: disabled.
    pub request: Option<Duration>,
    /// `request_headers_timeout`; `None`: disabled.
    pub headers: Option<Duration>,
    /// `max_stream_duration`; `None`: disabled.
    pub max_duration: Option<Duration>,
}

impl StreamLimits {
    /// The timeouts of a listener's connection manager.
    pub fn of(config: &ListenerConfig) -> Self {
        StreamLimits {
            idle: config.stream_idle_timeout,
            request: config.request_timeout,
            headers: config.request_headers_timeout,
            max_duration: config.max_stream_duration,
        }
    }

    /// The idle timeout of a stream on a route whose `idle_timeout` is `route`: the route's
    /// when it has one (zero disables it), else the connection manager's.
    pub fn idle_on_route(self, route: Option<Duration>) -> Option<Duration> {
        match route {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => self.idle,
        }
    }

    /// While a request is still arriving: the earlier of its idle deadline (`last` activity
    /// plus `idle`) and its request deadline, and which it is. On a tie, the request timeout.
    pub fn first_deadline(
        idle: Option<Duration>,
        last: Instant,
        request_deadline: Option<Instant>,
    ) -> Option<(Instant, StreamTimer)> {
        earliest([
            (request_deadline, StreamTimer::Request),
            (idle.map(|d| last + d), StreamTimer::Idle),
        ])
    }
}

/// The earliest of `deadlines` that is set, and what it stands for; on a tie, the first listed
/// (callers list their deadlines in the order that wins a tie).
pub fn earliest<T>(
    deadlines: impl IntoIterator<Item = (Option<Instant>, T)>,
) -> Option<(Instant, T)> {
    deadlines
        .into_iter()
        .filter_map(|(deadline, what)| Some((deadline?, what)))
        .min_by_key(|(deadline, _)| *deadline)
}

/// Which stream timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTimer {
    /// `stream_idle_timeout` (or the route's `idle_timeout`).
    Idle,
    /// `request_timeout`.
    Request,
    /// `request_headers_timeout` (a request head that has not arrived in full in that time).
    Headers,
    /// `max_stream_duration` (the stream has lasted that long, whatever it is doing).
    MaxDuration,
}

impl StreamTimer {
    /// Counts the timeout (`downstream_rq_idle_timeout` or `downstream_rq_timeout`).
    pub fn count(self, stats: &HttpStats) {
        match self {
            StreamTimer::Idle => stats.rq_idle_timeout.inc(),
            StreamTimer::Request => stats.rq_timeout.inc(),
            StreamTimer::Headers => stats.rq_header_timeout.inc(),
            StreamTimer::MaxDuration => stats.rq_max_duration_reached.inc(),
        }
    }

    /// Envoy's local reply when the timer fires before the response head. The idle timeout and
    /// the max stream duration answer 504 once the request has been received in full
    /// (`request_complete`), else 408;
    /// a 408 to a request still arriving over HTTP/1.1 closes the connection (the codec adds
    /// `connection: close` when it sees the unread body).
    pub fn reply(self, request_complete: bool) -> Response<ProxyBody> {
        match self {
            StreamTimer::Idle if request_complete => {
                local_reply::reply(StatusCode::GATEWAY_TIMEOUT, "stream timeout")
            }
            StreamTimer::Idle => local_reply::reply(StatusCode::REQUEST_TIMEOUT, "stream timeout"),
            StreamTimer::Request => {
                local_reply::reply(StatusCode::REQUEST_TIMEOUT, "request timeout")
            }
            StreamTimer::Headers => {
                local_reply::reply(StatusCode::REQUEST_TIMEOUT, "request header timeout")
            }
            StreamTimer::MaxDuration if request_complete => {
                local_reply::reply(StatusCode::GATEWAY_TIMEOUT, "downstream duration timeout")
            }
            StreamTimer::MaxDuration => {
                local_reply::reply(StatusCode::REQUEST_TIMEOUT, "downstream duration timeout")
            }
        }
    }

    /// The reply to a request head that never arrived in full (HTTP/1.1): 408, closing.
    pub fn head_reply(self) -> Response<ProxyBody> {
        let mut r = self.reply(false);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// How far the downstream request body streamed upstream has come: shared by the body (which
/// writes it) and the router (which reads it). Only the body's end wakes the router; its other
/// frames only move `last`, read when a timer fires.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// When the last frame arrived (or the request head, before any).
    pub last: Instant,
    /// When the body ended, once it has.
    pub ended: Option<Instant>,
}

/// The writer's side of a request body's [`Progress`].
pub type ProgressSender = watch::Sender<Progress>;
/// The router's side of a request body's [`Progress`].
pub type ProgressReceiver = watch::Receiver<Progress>;

/// A new [`Progress`], starting at `since`.
pub fn progress(since: Instant) -> (ProgressSender, ProgressReceiver) {
    watch::channel(Progress {
        last: since,
        ended: None,
    })
}

/// Records a frame of the request body (`end`: its last), waking the router only at the end.
pub fn record(progress: &ProgressSender, end: bool) {
    let now = Instant::now();
    progress.send_if_modified(|p| {
        p.last = now;
        if end {
            p.ended = Some(now);
        }
        end
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_route_idle_timeout_replaces_the_managers() {
        let limits = StreamLimits {
            idle: Some(300 * SEC),
            ..StreamLimits::default()
        };
        assert_eq!(limits.idle_on_route(None), Some(300 * SEC));
        assert_eq!(limits.idle_on_route(Some(2 * SEC)), Some(2 * SEC));
        assert_eq!(
            limits.idle_on_route(Some(Duration::ZERO)),
            None,
            "0 disables"
        );
        let off = StreamLimits::default();
        assert_eq!(off.idle_on_route(Some(2 * SEC)), Some(2 * SEC));
    }

    #[test]
    fn the_earlier_deadline_fires_and_the_request_timeout_wins_a_tie() {
        let t0 = Instant::now();
        let first = StreamLimits::first_deadline;
        assert_eq!(first(None, t0, None), None);
        assert_eq!(
            first(Some(SEC), t0, None),
            Some((t0 + SEC, StreamTimer::Idle))
        );
        assert_eq!(
            first(Some(SEC), t0, Some(t0 + 2 * SEC)),
            Some((t0 + SEC, StreamTimer::Idle))
        );
        assert_eq!(
            first(Some(3 * SEC), t0, Some(t0 + 2 * SEC)),
            Some((t0 + 2 * SEC, StreamTimer::Request))
        );
        assert_eq!(
            first(Some(SEC), t0, Some(t0 + SEC)),
            Some((t0 + SEC, StreamTimer::Request))
        );
    }

    #[test]
    fn replies_as_envoy_words_them() {
        let status = |r: Response<ProxyBody>| r.status().as_u16();
        assert_eq!(status(StreamTimer::Idle.reply(true)), 504);
        assert_eq!(status(StreamTimer::Idle.reply(false)), 408);
        assert_eq!(status(StreamTimer::Request.reply(false)), 408);
        assert_eq!(status(StreamTimer::Headers.reply(false)), 408);
        let head = StreamTimer::Idle.head_reply();
        assert_eq!(head.headers()["connection"], "close");
        assert_eq!(head.headers()["content-length"], "14", "`stream timeout`");
    }

    #[tokio::test]
    async fn only_the_end_of_a_body_wakes_the_reader() {
        let t0 = Instant::now();
        let (tx, mut rx) = progress(t0);
        record(&tx, false);
        assert!(!rx.has_changed().expect("open"), "a frame does not wake");
        assert!(rx.borrow().last >= t0);
        assert_eq!(rx.borrow().ended, None);
        record(&tx, true);
        assert!(rx.has_changed().expect("open"), "the end wakes");
        assert!(rx.borrow_and_update().ended.is_some());
    }
}
