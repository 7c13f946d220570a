//! The request path: route selection, then forwarding to a host of the chosen cluster.
//!
//! Reads one `Runtime` snapshot per request (an atomic load, no lock) and never mutates
//! configuration.
//!
//! # Counters, as Envoy 1.40's router keeps them
//!
//! * The attempt whose response goes downstream is charged `upstream_rq_<code>`,
//!   `upstream_rq_<class>xx`, `upstream_rq_completed` and the same under `external.` (or
//!   `internal.`). A local reply that ends the request stands for that response: 503 for no
//!   healthy host, an overflow, a reset or connect failure; 504 for a timeout.
//! * A response that is retried is charged under `retry.` instead. A reset, connect failure or
//!   per-try timeout that is retried is charged nothing.
//! * `upstream_rq_retry` and `upstream_rq_retry_backoff_exponential` count a retry when its
//!   back-off ends and the next attempt starts; a route timeout during the back-off ends the
//!   request with a 504 that is charged nothing (no attempt was in flight).
//! * `upstream_rq_timeout` counts a route timeout that cuts an attempt short.

use super::admission::{self, Rejection};
use super::body::{self, DeadlineBody, DownstreamBody, ProxyBody, UpstreamBody};
use super::headers::{self, UpstreamHeaders};
use super::internal;
use super::listener::{HttpStats, ListenerCtx, ListenerState};
use super::local_reply;
use super::pool::UpstreamError;
use super::replay::{self, Prepared};
use super::stream_timeout::{ProgressReceiver, StreamLimits, StreamTimer, earliest};
use crate::config::{
    ForwardAction, HostRewrite, RouteAction, RouteEntry, RouteSource, ServerHeader, StripPort,
    UpstreamProtocol, VirtualHost,
};
use crate::resilience::Outcome;
use crate::resilience::breaker::RequestGuard;
use crate::resilience::retry::{self, RetryState};
use crate::runtime::Runtime;
use crate::runtime::cluster::Cluster;
use crate::runtime::host::{Host, HostStats};
use crate::stats::Counter;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// `x-envoy-attempt-count`.
static X_ENVOY_ATTEMPT_COUNT: http::HeaderName =
    http::HeaderName::from_static("x-envoy-attempt-count");
/// `x-envoy-expected-rq-timeout-ms`.
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
/// `x-envoy-upstream-service-time`.
static X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");

/// Handles one downstream request; never fails (errors become local replies). The request
/// stays in flight until the codec has sent the response in full: it ends the returned
/// [`InFlight`] then.
pub async fn handle(
    ctx: Arc<ListenerCtx>,
    req: Request<DownstreamBody>,
) -> (Response<ProxyBody>, InFlight) {
    respond(ctx, req, None).await
}

/// Answers a request the HTTP/1.1 codec refused before it could become one (malformed, too
/// large), counted as a request as Envoy counts it.
pub async fn refused(
    ctx: Arc<ListenerCtx>,
    rejection: Rejection,
) -> (Response<ProxyBody>, InFlight) {
    respond(ctx, Request::new(DownstreamBody::empty()), Some(rejection)).await
}

async fn respond(
    ctx: Arc<ListenerCtx>,
    mut req: Request<DownstreamBody>,
    refused: Option<Rejection>,
) -> (Response<ProxyBody>, InFlight) {
    let in_flight = InFlight::start(ctx.state.load_full());
    let state = &*in_flight.state;
    let stats = &state.stats;
    let start = in_flight.start;
    stats.rq_total.inc();
    if req.version() == Version::HTTP_2 {
        stats.rq_http2_total.inc();
    } else {
        stats.rq_http1_total.inc();
    }
    let options = &state.config.headers;
    let mut request_id = None;
    let mut resp = match refused.or_else(|| admission::check(&req)) {
        Some(rejection) => refuse(stats, rejection, req.version()),
        None => {
            let verdict =
                internal::sanitize(req.headers_mut(), state.config.internal_address.as_ref());
            if options.strip_trailing_host_dot || options.strip_port != StripPort::None {
                let (mut parts, body) = req.into_parts();
                headers::normalize_host(
                    &mut parts,
                    options.strip_trailing_host_dot,
                    options.strip_port,
                    state.local_port,
                );
                req = Request::from_parts(parts, body);
            }
            if let Some((cluster, node)) = &state.user_agent {
                headers::add_user_agent(req.headers_mut(), cluster, node.as_ref());
            }
            if options.request_id_in_response {
                request_id =
                    headers::ensure_request_id(req.headers_mut(), options.generate_request_id);
            }
            let runtime = ctx.runtime.load();
            let limits = StreamLimits::of(&state.config);
            match limits.max_duration {
                None => route(&runtime, state, req, verdict, start, limits).await,
                Some(max) => {
                    // `max_stream_duration`: one deadline over all the router does, and over
                    // the response body (the answer is 504 once the request is complete).
                    let deadline = start + max;
                    let (req, request_ended) = {
                        let (parts, body) = req.into_parts();
                        let (body, ended) = body.flag_end();
                        (Request::from_parts(parts, body), ended)
                    };
                    let routed = route(&runtime, state, req, verdict, start, limits);
                    match tokio::time::timeout_at(deadline, routed).await {
                        Ok(resp) => resp.map(|b| {
                            DeadlineBody::wrap(b, deadline, stats.rq_max_duration_reached.clone())
                        }),
                        Err(_) => {
                            let timer = StreamTimer::MaxDuration;
                            timer.count(stats);
                            timer.reply(request_ended.load(Ordering::Relaxed))
                        }
                    }
                }
            }
        }
    };
    // Envoy charges the response code when it encodes the response head.
    stats.count_response(resp.status().as_u16());
    let headers = resp.headers_mut();
    match options.server_header {
        ServerHeader::Overwrite => {
            headers.insert(header::SERVER, state.server_header.clone());
        }
        ServerHeader::AppendIfAbsent => {
            if let header::Entry::Vacant(e) = headers.entry(header::SERVER) {
                e.insert(state.server_header.clone());
            }
        }
        ServerHeader::PassThrough => {}
    }
    if let Some(via) = &state.via {
        headers::append_via(headers, via);
    }
    if let Some(id) = request_id {
        headers::set_request_id(headers, id);
    }
    (resp, in_flight)
}

/// A downstream request from its head until its response has been sent in full, as Envoy's
/// connection manager keeps a stream: `downstream_rq_active` meanwhile, `downstream_rq_time`
/// when it ends. Dropped without [`InFlight::complete`] (the client went away, or the codec
/// dropped the request's future or its response), it counts as `downstream_rq_rx_reset`, as
/// Envoy counts a stream reset.
pub struct InFlight {
    state: Arc<ListenerState>,
    start: Instant,
    complete: bool,
}

impl InFlight {
    fn start(state: Arc<ListenerState>) -> Self {
        state.stats.rq_active.inc();
        InFlight {
            state,
            start: Instant::now(),
            complete: false,
        }
    }

    /// The response has been sent in full; returns when (the clock read that timed it).
    pub fn complete(mut self) -> Instant {
        self.complete = true;
        let now = Instant::now();
        let ms = millis(now.saturating_duration_since(self.start));
        self.state.stats.rq_time.record(ms);
        now
    }

    /// The proxy resets the stream (its response body failed midway): Envoy counts
    /// `downstream_rq_tx_reset`, and — its codecs report every reset to the stream — also
    /// `downstream_rq_rx_reset`.
    pub fn reset_locally(self) {
        self.state.stats.rq_tx_reset.inc();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.stats.rq_active.dec();
        if !self.complete {
            self.state.stats.rq_rx_reset.inc();
        }
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

/// Envoy's answer to a request its connection manager refuses, counted as Envoy counts it.
fn refuse(stats: &HttpStats, rejection: Rejection, version: Version) -> Response<ProxyBody> {
    if rejection.is_protocol_error() {
        stats.cx_protocol_error.inc();
    }
    if rejection.resets_stream() {
        stats.rq_rx_reset.inc();
        // An HTTP/1.1 head refused (the codec stops reading it) or an upgrade or CONNECT
        // refused (its stream stays open for data): Envoy counts the reply as sent before the
        // request was complete.
        if version != Version::HTTP_2 {
            stats.rq_response_before_rq_complete.inc();
        }
    }
    match rejection {
        Rejection::Upgrade => stats.rq_ws_on_non_ws_route.inc(),
        Rejection::Connect => stats.no_route.inc(),
        Rejection::Fragment => stats.rq_failed_path_normalization.inc(),
        Rejection::Timeout(timer) => timer.count(stats),
        Rejection::Underscore => stats.codec[0].rejected.inc(),
        _ => {}
    }
    rejection.reply(version)
}

async fn route(
    rt: &Runtime,
    state: &ListenerState,
    req: Request<DownstreamBody>,
    verdict: internal::Verdict,
    start: Instant,
    limits: StreamLimits,
) -> Response<ProxyBody> {
    let stats = &state.stats;
    let routes = &state.config.routes;
    stats.router_rq_total.inc();
    let table = match routes {
        RouteSource::Inline(t) => t.as_ref(),
        RouteSource::Rds(name) => match rt.routes.get(name) {
            Some(t) => t.as_ref(),
            None => {
                stats.no_route.inc();
                return local_reply::no_route();
            }
        },
    };
    let (parts, body) = req.into_parts();
    let authority = authority(&parts);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = authority.to_str().unwrap_or("");
    let Some((vh, entry)) = table.select(host, path, &parts.method, &parts.headers) else {
        stats.no_route.inc();
        return local_reply::no_route();
    };
    match &entry.action {
        RouteAction::Direct { status, body } => {
            stats.rq_direct_response.inc();
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let mut r = Response::new(match body {
                Some(b) => body::full(b.clone()),
                None => body::empty(),
            });
            *r.status_mut() = status;
            r
        }
        RouteAction::Forward(fwd) => {
            let Some(cluster) = rt.clusters.get(fwd.target.pick(rand::random())) else {
                stats.no_cluster.inc();
                return local_reply::no_cluster();
            };
            let target = Target {
                cluster,
                vh,
                entry,
                fwd,
                verdict,
            };
            let stream = StreamContext {
                stats,
                start,
                limits,
                generate_request_id: state.config.headers.generate_request_id,
                via: state.via.as_ref(),
            };
            forward(&target, parts, authority, body, stream).await
        }
    }
}

/// The request's authority: `:authority` for HTTP/2 (or an absolute-form HTTP/1.1 target),
/// else the `Host` header (shared, not copied); empty when there is neither.
fn authority(parts: &http::request::Parts) -> HeaderValue {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("")),
        None => parts
            .headers
            .get(header::HOST)
            .cloned()
            .unwrap_or(HeaderValue::from_static("")),
    }
}

/// The downstream stream a forwarded request belongs to.
struct StreamContext<'a> {
    stats: &'a HttpStats,
    /// When the request head arrived.
    start: Instant,
    /// The connection manager's stream timeouts.
    limits: StreamLimits,
    /// The connection manager's `generate_request_id`.
    generate_request_id: bool,
    /// The connection manager's `via`.
    via: Option<&'a HeaderValue>,
}

/// Where a request is forwarded, and whether it is internal.
struct Target<'a> {
    cluster: &'a Arc<Cluster>,
    vh: &'a VirtualHost,
    entry: &'a RouteEntry,
    fwd: &'a ForwardAction,
    verdict: internal::Verdict,
}

async fn forward(
    target: &Target<'_>,
    mut parts: http::request::Parts,
    authority: HeaderValue,
    body: DownstreamBody,
    stream: StreamContext<'_>,
) -> Response<ProxyBody> {
    let Target {
        cluster, vh, fwd, ..
    } = *target;
    let start = stream.start;
    let stream_idle = stream.limits.idle_on_route(fwd.idle_timeout);
    let configured = fwd.retry_policy.as_ref().or(vh.retry_policy.as_ref());
    // Only an internal request that came with x-envoy-* headers can steer the router.
    let (policy, timeout) = if target.verdict.may_steer {
        let policy = retry::effective_policy(configured, &parts.headers);
        let timeout = retry::route_timeout(fwd.timeout, &parts.headers);
        retry::strip_consumed_headers(&mut parts.headers);
        (policy, timeout)
    } else {
        (configured.cloned(), retry::configured_timeout(fwd.timeout))
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let rewritten = fwd.rewrite_path(&target.entry.matcher, path.as_str());
    let per_try = policy.as_ref().and_then(|p| p.per_try_timeout);
    let per_try_idle = policy.as_ref().and_then(|p| p.per_try_idle_timeout);
    let hash = request_hash(&fwd.hash_headers, &parts.headers, &authority);
    headers::prepare_request(
        &mut parts.headers,
        &UpstreamHeaders {
            original_path: rewritten.as_ref().map(|_| path.as_str()),
            generate_request_id: stream.generate_request_id,
            via: stream.via,
        },
    );
    let upstream_path = match rewritten {
        None => path,
        Some(p) => match PathAndQuery::try_from(p) {
            Ok(p) => p,
            Err(_) => return local_reply::reply(StatusCode::BAD_REQUEST, ""),
        },
    };
    let h2 = cluster.config.protocol == UpstreamProtocol::Http2;
    // Buffer the body only when a retry could need it again.
    let buffered = policy.as_ref().is_some_and(|p| p.num_retries > 0);
    // While the request body arrives, the stream timeouts watch it; a body streamed as it
    // comes also tells when it has ended: the route timeout starts then.
    let request_deadline = stream.limits.request.map(|t| start + t);
    let mut progress = None;
    let mut prepared = if buffered {
        let limits = replay::ReadLimits {
            idle: stream_idle,
            request_deadline,
            since: start,
        };
        match replay::prepare(body, cluster.config.buffer_limit as usize, limits).await {
            Ok(prepared) => prepared,
            Err(timer) => {
                timer.count(stream.stats);
                return timer.reply(false);
            }
        }
    } else if http_body::Body::is_end_stream(&body) {
        Prepared::Once(Some(body::stream(body)))
    } else {
        let (body, watch) = body::stream_watched(body, start);
        progress = Some(watch);
        Prepared::Once(Some(body))
    };
    let mut retries = policy.map(RetryState::new);
    if retries.is_some() && !prepared.replayable() {
        cluster.stats.retry.abandoned.inc();
        retries = None;
    }
    let mut attempts = Attempts {
        cluster,
        fwd,
        internal: target.verdict.internal,
        include_attempt_count: vh.include_attempt_count,
        method: parts.method,
        headers: parts.headers,
        authority,
        upstream_path,
        h2,
        per_try,
        per_try_idle,
        timeout,
        stream_idle,
        request_deadline,
        http: stream.stats,
        hash,
        // The route timeout covers every attempt and the back-off between them. It starts
        // once the request is read: after buffering a body, else with the request (one clock
        // read fewer), or — a body streamed upstream as it comes — when it has been read.
        started: if buffered { Instant::now() } else { start },
        progress,
    };
    attempts.run(&mut prepared, retries.as_mut()).await
}

/// Everything one request's attempts share.
struct Attempts<'a> {
    cluster: &'a Arc<Cluster>,
    fwd: &'a ForwardAction,
    internal: bool,
    include_attempt_count: bool,
    method: http::Method,
    headers: http::HeaderMap,
    /// The downstream authority (the `Host` header's value for HTTP/1.1).
    authority: HeaderValue,
    upstream_path: PathAndQuery,
    h2: bool,
    per_try: Option<Duration>,
    /// The longest silence an attempt may keep (`per_try_idle_timeout`).
    per_try_idle: Option<Duration>,
    /// The request's hash for ring_hash and maglev (`None`: a random pick).
    hash: Option<u64>,
    /// The route timeout (never retried).
    timeout: Option<Duration>,
    /// The stream idle timeout (the route's `idle_timeout`, else the connection manager's).
    stream_idle: Option<Duration>,
    /// The request timeout's deadline (it only runs while the request is arriving).
    request_deadline: Option<Instant>,
    /// The listener's stats (the stream timeouts are counted there).
    http: &'a HttpStats,
    /// When the request was complete (received in full): the timeouts, `upstream_rq_time` and
    /// `x-envoy-upstream-service-time` count from there.
    started: Instant,
    /// The progress of a request body streamed upstream as it comes: its end moves `started`;
    /// `None` when the request was complete before the first attempt. Kept for the response
    /// body when the response came first (request frames keep the stream from being idle).
    progress: Option<ProgressReceiver>,
}

/// What one attempt produced: the response (not boxed: a box would cost an allocation per
/// request), or why there was none.
type Attempt = Result<Response<UpstreamBody>, NoResponse>;

/// The timers an attempt waits for its response head under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptTimer {
    /// The route timeout (never retried).
    Route,
    /// The per-try timeout.
    PerTry,
    /// The per-try idle timeout (nothing arrived that long).
    Idle,
    /// A stream timeout: the request is answered by the connection manager.
    Stream {
        timer: StreamTimer,
        /// The request had been received in full (the idle timeout answers 504, not 408).
        request_complete: bool,
    },
}

/// Why an attempt produced no response.
enum NoResponse {
    Failed(UpstreamError),
    /// A timer ran out before the response head.
    Expired(AttemptTimer),
}

/// What the attempt whose response goes downstream keeps until that response's body ends (see
/// `UpstreamBody::hold`), as Envoy keeps the upstream stream: the host's `rq_active` count
/// (handed over by [`HostActive::hand_over`]), the breaker's request slot and the route
/// timeout; at the end, `upstream_rq_time`.
#[derive(Debug)]
pub struct AttemptEnd {
    host: Arc<Host>,
    cluster: Arc<Cluster>,
    /// When the request was complete (see `Attempts::started`).
    started: Instant,
    internal: bool,
    /// The route timeout, in milliseconds (its deadline is `started` plus it).
    timeout: Option<NonZeroU32>,
    /// `per_try_idle_timeout`, in milliseconds as Envoy keeps it (small: an `AttemptEnd` moves
    /// with every response).
    idle: Option<NonZeroU32>,
    /// The stream idle timeout, in milliseconds.
    stream_idle: Option<NonZeroU32>,
    /// The listener's `downstream_rq_idle_timeout`, when the stream idle timeout is on.
    idle_counter: Option<Counter>,
    /// The progress of a request body still arriving when the response came (an early
    /// response): its frames keep the stream from being idle, and the route timeout and
    /// `upstream_rq_time` start at its end, as Envoy's start once the request is complete.
    request: Option<ProgressReceiver>,
    /// When the body last made progress, from the first time it had to wait (the idle timers
    /// start then; most bodies never wait, and so never read the clock).
    last: Option<Instant>,
    /// The timer of the earliest deadline, made the first time the body has to wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    _request: RequestGuard,
}

/// Which timeout cut a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTimeout {
    /// The route timeout.
    Route,
    /// `per_try_idle_timeout`: nothing arrived for that long.
    Idle,
    /// The stream idle timeout: nothing went either way for that long.
    Stream,
}

impl AttemptEnd {
    /// More of the body arrived: the idle timeouts start again.
    pub fn activity(&mut self) {
        if let Some(last) = &mut self.last {
            *last = Instant::now();
        }
    }

    /// Ready once the route timeout or an idle timeout has passed (never without one).
    pub fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<BodyTimeout> {
        if self.timeout.is_none() && self.idle.is_none() && self.stream_idle.is_none() {
            return Poll::Pending;
        }
        let last = *self.last.get_or_insert_with(Instant::now);
        // Request frames still arriving keep the stream busy, not the attempt.
        let stream_last = match &self.request {
            Some(progress) => last.max(progress.borrow().last),
            None => last,
        };
        let first = earliest([
            (
                self.timeout
                    .and_then(|ms| Some(self.request_complete()? + as_duration(ms))),
                BodyTimeout::Route,
            ),
            (
                self.idle.map(|ms| last + as_duration(ms)),
                BodyTimeout::Idle,
            ),
            (
                self.stream_idle.map(|ms| stream_last + as_duration(ms)),
                BodyTimeout::Stream,
            ),
        ]);
        let Some((deadline, which)) = first else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).map(|()| which)
    }

    /// A timeout cut the response body. The route timeout: as Envoy's `onResponseTimeout`
    /// once the response has started, `upstream_rq_timeout` and the host's `rq_timeout` (no
    /// code is charged again, nothing is reported to outlier detection). The idle timeout: as
    /// Envoy's `onPerTryIdleTimeout`, `upstream_rq_per_try_idle_timeout`, the host's
    /// `rq_timeout`, and a timeout reported to outlier detection. The stream idle timeout: the
    /// connection manager's `downstream_rq_idle_timeout` only.
    pub fn timed_out(self, which: BodyTimeout) {
        match which {
            BodyTimeout::Route => self.cluster.stats.rq_timeout.inc(),
            BodyTimeout::Idle => {
                self.cluster.stats.retry.per_try_idle_timeout.inc();
                self.cluster.report(&self.host, Outcome::Timeout);
            }
            BodyTimeout::Stream => {
                if let Some(counter) = &self.idle_counter {
                    counter.inc();
                }
                return;
            }
        }
        HostStats::inc(&self.host.stats.rq_timeout);
    }

    /// The response has been read to its end: the request's `upstream_rq_time`, unless the
    /// request never was complete (Envoy records none then).
    pub fn complete(self) {
        if let Some(since) = self.request_complete() {
            self.cluster
                .stats
                .record_rq_time(elapsed_ms(since), self.internal);
        }
    }

    /// When the request was complete, if it is.
    fn request_complete(&self) -> Option<Instant> {
        match &self.request {
            None => Some(self.started),
            Some(progress) => progress.borrow().ended,
        }
    }
}

impl Drop for AttemptEnd {
    fn drop(&mut self) {
        HostStats::dec(&self.host.stats.rq_active);
    }
}

/// Counts an attempt in its host's `rq_active` until dropped (also when a timeout drops the
/// attempt).
struct HostActive<'a>(&'a Host);

impl<'a> HostActive<'a> {
    fn new(host: &'a Host) -> Self {
        HostStats::inc(&host.stats.rq_active);
        HostActive(host)
    }

    /// Leaves the count for an [`AttemptEnd`] of the same host to end.
    fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for HostActive<'_> {
    fn drop(&mut self) {
        HostStats::dec(&self.0.stats.rq_active);
    }
}

/// How the wait for the end of a request body streamed upstream ended.
enum RequestPhase<T> {
    /// The attempt ended first (a response head, or a failure).
    Answered(T),
    /// The body ended then.
    Complete(Instant),
    /// A stream timer ran out while the body was arriving.
    Expired(StreamTimer),
}

/// Waits for the attempt `sent` or the end of the request body it streams, whichever comes
/// first, under the stream idle timeout (from the body's last frame) and the request deadline.
async fn until_request_complete<F: Future>(
    mut sent: Pin<&mut F>,
    progress: &mut ProgressReceiver,
    idle: Option<Duration>,
    request_deadline: Option<Instant>,
) -> RequestPhase<F::Output> {
    // False once the body is gone without an end (the attempt then fails on its own).
    let mut watching = true;
    loop {
        let seen = *progress.borrow_and_update();
        if let Some(at) = seen.ended {
            return RequestPhase::Complete(at);
        }
        let first = StreamLimits::first_deadline(idle, seen.last, request_deadline);
        let deadline = first.map_or(seen.last, |(at, _)| at);
        tokio::select! {
            biased;
            answered = sent.as_mut() => return RequestPhase::Answered(answered),
            changed = progress.changed(), if watching => watching = changed.is_ok(),
            () = tokio::time::sleep_until(deadline), if first.is_some() => {
                // Frames that arrived since only moved `last`: look again.
                let now = *progress.borrow();
                if now.ended.is_none()
                    && let Some((at, timer)) =
                        StreamLimits::first_deadline(idle, now.last, request_deadline)
                    && at <= Instant::now()
                {
                    return RequestPhase::Expired(timer);
                }
            }
        }
    }
}

impl Attempts<'_> {
    async fn run(
        &mut self,
        body: &mut Prepared,
        mut retries: Option<&mut RetryState>,
    ) -> Response<ProxyBody> {
        let cluster = self.cluster;
        // Without a retry policy the first attempt is the only one.
        let single = retries.is_none();
        let cs = &cluster.stats;
        let breakers = &cs.pool.breakers;
        let mut route_deadline = self.timeout.map(|t| self.started + t);
        let mut attempt_no: u32 = 0;
        // Held from a retry decision until the next one, or until the request ends.
        let mut _retry_guard = None;
        loop {
            attempt_no += 1;
            let excluded = retries.as_deref().map(|r| r.excluded()).unwrap_or(&[]);
            let Some(host) = cluster.pick(self.hash, excluded) else {
                cs.cx_none_healthy.inc();
                cs.charge_final(503, self.internal);
                return local_reply::no_healthy_upstream();
            };
            let Ok(request_guard) = breakers.try_request() else {
                // Envoy fails an overflow through the pool, charging the cluster a 503 (and
                // the host an error).
                HostStats::inc(&host.stats.rq_error);
                cs.charge_final(503, self.internal);
                return local_reply::overflow();
            };
            // The first attempt starts when the request does (one clock read fewer).
            let started = if attempt_no == 1 {
                self.started
            } else {
                Instant::now()
            };
            let elapsed = started.duration_since(self.started);
            let Some(req) = self.build(&host, attempt_no, elapsed, body.attempt_body(), single)
            else {
                return local_reply::reply(StatusCode::BAD_REQUEST, "");
            };
            let active = HostActive::new(&host);
            let result: Attempt = {
                // Pinned where it is made: the send future is large, and handing it to the
                // timeout by value would copy it.
                let mut sent = std::pin::pin!(host.pool.send(req));
                let mut try_start = started;
                // A request body still streaming upstream: as in Envoy, the timeouts start once
                // it has been received (an answer before that comes back as it is). Meanwhile
                // the stream timeouts watch it arrive.
                let early = match self.progress.take() {
                    None => None,
                    Some(mut progress) => {
                        let phase = until_request_complete(
                            sent.as_mut(),
                            &mut progress,
                            self.stream_idle,
                            self.request_deadline,
                        )
                        .await;
                        match phase {
                            RequestPhase::Answered(sent) => {
                                self.progress = Some(progress);
                                Some(sent.map_err(NoResponse::Failed))
                            }
                            RequestPhase::Complete(at) => {
                                self.started = at;
                                try_start = at;
                                route_deadline = self.timeout.map(|t| at + t);
                                None
                            }
                            RequestPhase::Expired(timer) => {
                                Some(Err(NoResponse::Expired(AttemptTimer::Stream {
                                    timer,
                                    request_complete: false,
                                })))
                            }
                        }
                    }
                };
                let try_deadline = self.per_try.map(|t| try_start + t);
                // Before the response head nothing arrives: the idle timer runs from the start.
                let idle_deadline = self.per_try_idle.map(|t| try_start + t);
                // The stream has been idle since the request was complete (upstream answers
                // that are retried are not sent downstream: they do not count).
                let stream_deadline = self.stream_idle.map(|t| self.started + t);
                // The earliest timer; on a tie the route timeout (it is never retried).
                let first = earliest([
                    (route_deadline, AttemptTimer::Route),
                    (
                        stream_deadline,
                        AttemptTimer::Stream {
                            timer: StreamTimer::Idle,
                            request_complete: true,
                        },
                    ),
                    (try_deadline, AttemptTimer::PerTry),
                    (idle_deadline, AttemptTimer::Idle),
                ]);
                match (early, first) {
                    (Some(result), _) => result,
                    (None, None) => sent.await.map_err(NoResponse::Failed),
                    (None, Some((deadline, why))) => {
                        match tokio::time::timeout_at(deadline, sent).await {
                            Ok(Ok(r)) => Ok(r),
                            Ok(Err(e)) => Err(NoResponse::Failed(e)),
                            Err(_) => Err(NoResponse::Expired(why)),
                        }
                    }
                }
            };
            // As Envoy, a host's `rq_total` counts attempts that got a stream: not a failed
            // connect, nor a request refused while waiting for a connection.
            if !matches!(&result, Err(NoResponse::Failed(e)) if e.is_connect_failure() || *e == UpstreamError::Overflow)
            {
                HostStats::inc(&host.stats.rq_total);
            }
            let outcome = match &result {
                Err(NoResponse::Failed(UpstreamError::Overflow)) => {
                    // A pending-request overflow is a local reply, never retried or reported
                    // to outlier detection (Envoy's `UO`); Envoy charges it as a 503.
                    HostStats::inc(&host.stats.rq_error);
                    cs.charge_final(503, self.internal);
                    return local_reply::overflow();
                }
                Err(NoResponse::Expired(AttemptTimer::Stream {
                    timer,
                    request_complete,
                })) => {
                    // The connection manager ends the stream; the router charges nothing.
                    timer.count(self.http);
                    return timer.reply(*request_complete);
                }
                Err(NoResponse::Expired(AttemptTimer::Route)) => {
                    // Envoy's `onResponseTimeout`: the attempt in flight is charged the
                    // timeout, for outlier detection too, and the request ends with a 504.
                    cs.rq_timeout.inc();
                    HostStats::inc(&host.stats.rq_timeout);
                    HostStats::inc(&host.stats.rq_error);
                    cluster.report(&host, Outcome::Timeout);
                    cs.charge_final(504, self.internal);
                    return local_reply::upstream_timeout();
                }
                Ok(r) => Outcome::Response(r.status().as_u16()),
                Err(NoResponse::Failed(UpstreamError::ConnectFailure)) => Outcome::ConnectFailure,
                Err(NoResponse::Failed(UpstreamError::ConnectTimeout)) => Outcome::ConnectTimeout,
                Err(NoResponse::Failed(_)) => Outcome::Reset,
                Err(NoResponse::Expired(timer)) => {
                    if *timer == AttemptTimer::Idle {
                        cs.retry.per_try_idle_timeout.inc();
                    } else {
                        cs.retry.per_try_timeout.inc();
                    }
                    HostStats::inc(&host.stats.rq_timeout);
                    Outcome::Timeout
                }
            };
            cluster.report(&host, outcome);
            if let Some(state) = retries.as_deref_mut() {
                state.tried.push(host.address);
                let headers = match &result {
                    Ok(r) => Some(r.headers()),
                    _ => None,
                };
                if retry::is_retriable(&state.policy, outcome, headers) {
                    // max_retries / retry budget: an overflow returns this result as it is.
                    let admitted = state
                        .has_budget()
                        .then(|| breakers.try_retry().ok())
                        .flatten();
                    if let Some(guard) = admitted {
                        _retry_guard = Some(guard);
                        // Envoy counts every retried attempt as a host error, whatever its code.
                        HostStats::inc(&host.stats.rq_error);
                        if let Outcome::Response(code) = outcome {
                            cs.charge_retried(code);
                        }
                        drop(result);
                        drop(active);
                        drop(request_guard);
                        let wait = state.next_backoff();
                        if !wait.is_zero() {
                            let until = Instant::now() + wait;
                            let stream_deadline = self.stream_idle.map(|t| self.started + t);
                            // No attempt is in flight: Envoy charges nothing. On a tie, the
                            // route timeout.
                            let first = earliest([
                                (route_deadline, None),
                                (stream_deadline, Some(StreamTimer::Idle)),
                            ]);
                            match first {
                                Some((at, ends)) if at <= until => {
                                    tokio::time::sleep_until(at).await;
                                    return match ends {
                                        None => local_reply::upstream_timeout(),
                                        Some(timer) => {
                                            timer.count(self.http);
                                            timer.reply(true)
                                        }
                                    };
                                }
                                _ => tokio::time::sleep_until(until).await,
                            }
                        }
                        cs.retry.retry.inc();
                        cs.retry.backoff_exponential.inc();
                        continue;
                    }
                    if !state.has_budget() {
                        cs.retry.limit_exceeded.inc();
                    }
                } else if state.retries > 0 {
                    cs.retry.success.inc();
                }
            }
            let code = match &result {
                // A protocol error is a reset to retries and outlier detection, but Envoy
                // answers (and charges) 502.
                Err(NoResponse::Failed(e)) => e.status().as_u16(),
                _ => outcome.effective_status(),
            };
            HostStats::inc(if code >= 500 {
                &host.stats.rq_error
            } else {
                &host.stats.rq_success
            });
            cs.charge_final(code, self.internal);
            return match result {
                Ok(mut r) => {
                    // Envoy's `x-envoy-upstream-service-time` counts from the complete request;
                    // a response before its end (`progress` is still there) has none.
                    let service_ms = self.progress.is_none().then(|| elapsed_ms(self.started));
                    active.hand_over();
                    r.body_mut().hold(AttemptEnd {
                        host,
                        cluster: self.cluster.clone(),
                        started: self.started,
                        internal: self.internal,
                        timeout: as_millis(self.timeout),
                        idle: as_millis(self.per_try_idle),
                        stream_idle: as_millis(self.stream_idle),
                        idle_counter: self.stream_idle.map(|_| self.http.rq_idle_timeout.clone()),
                        request: self.progress.take(),
                        last: None,
                        timer: None,
                        _request: request_guard,
                    });
                    downstream_response(r, service_ms)
                }
                Err(NoResponse::Failed(e)) => local_reply::upstream_reset(e, attempt_no > 1),
                Err(NoResponse::Expired(_)) => local_reply::upstream_timeout(),
            };
        }
    }

    /// The upstream request of one attempt, addressed to `host`, `elapsed` after the route
    /// timeout started.
    ///
    /// `last`: no other attempt can follow (no retry policy), so the headers are moved into
    /// the request instead of copied.
    fn build(
        &mut self,
        host: &Host,
        attempt: u32,
        elapsed: Duration,
        body: ProxyBody,
        last: bool,
    ) -> Option<Request<ProxyBody>> {
        let authority = match &self.fwd.host_rewrite {
            HostRewrite::None => self.authority.clone(),
            HostRewrite::Literal(h) => HeaderValue::from_str(h).ok()?,
            HostRewrite::Auto => match &host.hostname {
                Some(h) => HeaderValue::from_str(&format!("{h}:{}", host.address.port())).ok()?,
                None => HeaderValue::from_str(&host.address_text).ok()?,
            },
        };
        // The request line's target: origin-form for HTTP/1.1, absolute for HTTP/2 (its
        // `:scheme`, `:authority` and `:path`). No text is parsed again.
        let uri = if self.h2 {
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(Authority::try_from(authority.as_bytes()).ok()?);
            uri.path_and_query = Some(self.upstream_path.clone());
            Uri::from_parts(uri).ok()?
        } else {
            Uri::from(self.upstream_path.clone())
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = if self.h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let headers = req.headers_mut();
        *headers = if last {
            std::mem::take(&mut self.headers)
        } else {
            self.headers.clone()
        };
        if self.h2 {
            headers.remove(header::HOST);
        } else if headers.get(header::HOST) != Some(&authority) {
            headers.insert(header::HOST, authority);
        }
        if self.include_attempt_count {
            headers.insert(
                &X_ENVOY_ATTEMPT_COUNT,
                headers::number_value(attempt.into()),
            );
        }
        if let Some(ms) = expected_timeout_ms(self.per_try, self.timeout, elapsed) {
            headers.insert(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, headers::number_value(ms));
        }
        Some(req)
    }
}

/// Envoy's `x-envoy-expected-rq-timeout-ms` (`FilterUtility::setTimeoutHeaders`): the per-try
/// timeout, else the route timeout, capped by what is left of the route timeout (at least 1).
/// `None` when neither is set.
fn expected_timeout_ms(
    per_try: Option<Duration>,
    route: Option<Duration>,
    elapsed: Duration,
) -> Option<u64> {
    let expected = millis(per_try.or(route)?);
    Some(match route.map(millis) {
        Some(global) => {
            let elapsed = millis(elapsed);
            if elapsed >= global {
                1
            } else {
                expected.min(global - elapsed)
            }
        }
        None => expected,
    })
}

/// The request's hash for ring_hash and maglev from the route's header hash policies, as
/// Envoy's `HashPolicyImpl::generateHash` computes it: per policy whose header is present,
/// XXH64 over the header's values in sorted order (each value's hash the seed of the next);
/// the policies' hashes combined by rotating the hash so far left by one bit and XOR-ing.
/// `host` (or `:authority`) is the request's authority. `None` when no header is present: the
/// load balancer then picks with a random hash, as Envoy does.
fn request_hash(
    names: &[String],
    headers: &http::HeaderMap,
    authority: &HeaderValue,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for name in names {
        let mut values: Vec<&[u8]> = if name == "host" || name == ":authority" {
            vec![authority.as_bytes()]
        } else {
            headers
                .get_all(name.as_str())
                .iter()
                .map(HeaderValue::as_bytes)
                .collect()
        };
        if values.is_empty() {
            continue;
        }
        values.sort_unstable();
        let h = values.iter().fold(0, |seed, v| crate::lb::xxh64(v, seed));
        hash = Some(hash.map_or(0, |old| old.rotate_left(1)) ^ h);
    }
    hash
}

/// Whole milliseconds, saturating.
/// A timeout in whole milliseconds, as Envoy keeps it (zero, like `None`, disables it).
fn as_millis(d: Option<Duration>) -> Option<NonZeroU32> {
    d.and_then(|d| NonZeroU32::new(u32::try_from(d.as_millis()).unwrap_or(u32::MAX)))
}

/// The inverse of [`as_millis`].
fn as_duration(ms: NonZeroU32) -> Duration {
    Duration::from_millis(u64::from(ms.get()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn elapsed_ms(since: Instant) -> u64 {
    millis(since.elapsed())
}

/// The upstream response as it goes downstream; `service_ms`: how long the upstream took
/// (`x-envoy-upstream-service-time`).
fn downstream_response(
    resp: Response<UpstreamBody>,
    service_ms: Option<u64>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(ms) = service_ms {
        parts
            .headers
            .insert(&X_ENVOY_UPSTREAM_SERVICE_TIME, headers::number_value(ms));
    }
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

#[cfg(test)]
mod tests {
    use super::{expected_timeout_ms, request_hash};
    use crate::lb::xxh64;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn request_hash_as_envoy_computes_it() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let authority = HeaderValue::from_static("example.com");
        let mut h = HeaderMap::new();
        assert_eq!(request_hash(&names(&["x-user"]), &h, &authority), None);
        h.insert("x-user", HeaderValue::from_static("alice"));
        let alice = xxh64(b"alice", 0);
        assert_eq!(
            request_hash(&names(&["x-user"]), &h, &authority),
            Some(alice)
        );
        // Values in sorted order, each hash the seed of the next.
        h.append("x-user", HeaderValue::from_static("aaron"));
        let both = xxh64(b"alice", xxh64(b"aaron", 0));
        assert_eq!(
            request_hash(&names(&["x-user"]), &h, &authority),
            Some(both)
        );
        // A second policy: the first hash rotated left by one, XOR the second.
        let host = xxh64(b"example.com", 0);
        assert_eq!(
            request_hash(&names(&["x-user", "host", "x-absent"]), &h, &authority),
            Some(both.rotate_left(1) ^ host)
        );
    }
    use std::time::Duration;

    #[test]
    fn expected_timeout_is_what_is_left() {
        let ms = Duration::from_millis;
        assert_eq!(expected_timeout_ms(None, None, ms(0)), None);
        assert_eq!(
            expected_timeout_ms(None, Some(ms(15000)), ms(0)),
            Some(15000)
        );
        assert_eq!(
            expected_timeout_ms(None, Some(ms(15000)), ms(11)),
            Some(14989)
        );
        assert_eq!(
            expected_timeout_ms(Some(ms(200)), Some(ms(15000)), ms(11)),
            Some(200)
        );
        assert_eq!(
            expected_timeout_ms(Some(ms(200)), Some(ms(300)), ms(250)),
            Some(50)
        );
        assert_eq!(
            expected_timeout_ms(Some(ms(200)), Some(ms(300)), ms(300)),
            Some(1)
        );
        assert_eq!(
            expected_timeout_ms(Some(ms(200)), None, ms(9000)),
            Some(200)
        );
    }
}
