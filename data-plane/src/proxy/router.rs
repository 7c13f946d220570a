//! The request path: route selection, then forwarding to a host of the chosen cluster.
//!
//! Reads one `Runtime` snapshot per request (an atomic load, no lock) and never mutates
//! configuration.

use super::body::{self, ProxyBody, UpstreamBody};
use super::headers::{self, UpstreamHeaders};
use super::listener::{HttpStats, ListenerCtx};
use super::local_reply;
use super::pool::UpstreamError;
use super::replay::{self, Prepared};
use crate::config::{
    ForwardAction, HostRewrite, RouteAction, RouteEntry, RouteSource, UpstreamProtocol, VirtualHost,
};
use crate::resilience::Outcome;
use crate::resilience::retry::{self, RetryState};
use crate::runtime::Runtime;
use crate::runtime::cluster::Cluster;
use crate::runtime::host::{Host, HostStats};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

/// Handles one downstream request; never fails (errors become local replies).
pub async fn handle(
    ctx: Arc<ListenerCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let state = ctx.state.load_full();
    let stats = &state.stats;
    let start = Instant::now();
    stats.rq_total.inc();
    stats.rq_active.inc();
    if req.version() == Version::HTTP_2 {
        stats.rq_http2_total.inc();
    } else {
        stats.rq_http1_total.inc();
    }
    let runtime = ctx.runtime.load();
    let mut resp = route(&runtime, &state.config.routes, stats, req).await;
    stats.count_status(resp.status().as_u16());
    stats.rq_active.dec();
    stats.rq_completed.inc();
    stats.rq_time.record(start.elapsed().as_millis() as u64);
    resp.headers_mut()
        .insert(header::SERVER, state.server_header.clone());
    Ok(resp)
}

async fn route(
    rt: &Runtime,
    routes: &RouteSource,
    stats: &HttpStats,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
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
    let authority = authority(&req).to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let Some((vh, entry)) = table.select(&authority, &path, req.method(), req.headers()) else {
        stats.no_route.inc();
        return local_reply::no_route();
    };
    match &entry.action {
        RouteAction::Direct { status, body } => {
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
            forward(cluster, vh, entry, fwd, authority, path, req).await
        }
    }
}

/// The request's authority: `:authority` for HTTP/2, `Host` for HTTP/1.1.
fn authority(req: &Request<Incoming>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

async fn forward(
    cluster: &Arc<Cluster>,
    vh: &VirtualHost,
    entry: &RouteEntry,
    fwd: &ForwardAction,
    authority: String,
    path: String,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let policy = retry::effective_policy(
        fwd.retry_policy.as_ref().or(vh.retry_policy.as_ref()),
        &parts.headers,
    );
    let timeout = retry::route_timeout(fwd.timeout, &parts.headers);
    retry::strip_consumed_headers(&mut parts.headers);
    let rewritten = fwd.rewrite_path(&entry.matcher, &path);
    let per_try = policy.as_ref().and_then(|p| p.per_try_timeout);
    headers::prepare_request(
        &mut parts.headers,
        &UpstreamHeaders {
            original_path: rewritten.as_ref().map(|_| path.as_str()),
            expected_timeout_ms: per_try.or(timeout).map(|t| t.as_millis()),
        },
    );
    let upstream_path = rewritten.unwrap_or(path);
    let h2 = cluster.config.protocol == UpstreamProtocol::Http2;
    // Buffer the body only when a retry could need it again.
    let mut prepared = match &policy {
        Some(p) if p.num_retries > 0 => {
            replay::prepare(body, cluster.config.buffer_limit as usize).await
        }
        _ => Prepared::Once(Some(body::stream(body))),
    };
    let mut retries = policy.map(RetryState::new);
    if retries.is_some() && !prepared.replayable() {
        cluster.stats.retry.abandoned.inc();
        retries = None;
    }
    let attempts = Attempts {
        cluster,
        fwd,
        include_attempt_count: vh.include_attempt_count,
        method: parts.method,
        headers: parts.headers,
        authority,
        upstream_path,
        h2,
        per_try,
    };
    let run = attempts.run(&mut prepared, retries.as_mut());
    match timeout {
        None => run.await,
        Some(t) => match tokio::time::timeout(t, run).await {
            Ok(resp) => resp,
            Err(_) => {
                // The route timeout covers every attempt and the back-off between them;
                // it is not retried.
                cluster.stats.rq_timeout.inc();
                cluster.stats.count_status(504);
                local_reply::upstream_timeout()
            }
        },
    }
}

/// Everything one request's attempts share.
struct Attempts<'a> {
    cluster: &'a Arc<Cluster>,
    fwd: &'a ForwardAction,
    include_attempt_count: bool,
    method: http::Method,
    headers: http::HeaderMap,
    authority: String,
    upstream_path: String,
    h2: bool,
    per_try: Option<std::time::Duration>,
}

/// What one attempt produced.
enum Attempt {
    Response(Box<Response<UpstreamBody>>),
    Failed(UpstreamError),
    TimedOut,
}

impl Attempts<'_> {
    async fn run(
        &self,
        body: &mut Prepared,
        mut retries: Option<&mut RetryState>,
    ) -> Response<ProxyBody> {
        let cluster = self.cluster;
        let cs = &cluster.stats;
        let breakers = &cs.pool.breakers;
        let mut attempt_no: u32 = 0;
        // Held from a retry decision until the next one, or until the request ends.
        let mut _retry_guard = None;
        loop {
            attempt_no += 1;
            let excluded = retries.as_deref().map(|r| r.excluded()).unwrap_or(&[]);
            let Some(host) = cluster.pick(None, excluded) else {
                cs.cx_none_healthy.inc();
                return local_reply::no_healthy_upstream();
            };
            let Ok(request_guard) = breakers.try_request() else {
                // Envoy fails an overflow through the pool, charging the cluster a 503.
                cs.count_status(503);
                cs.rq_completed.inc();
                return local_reply::overflow();
            };
            let Some(req) = self.build(&host, attempt_no, body.attempt_body()) else {
                return local_reply::reply(StatusCode::BAD_REQUEST, "");
            };
            HostStats::inc(&host.stats.rq_total);
            HostStats::inc(&host.stats.rq_active);
            let started = Instant::now();
            let sent = host.pool.send(req);
            let mut result = match self.per_try {
                Some(t) => match tokio::time::timeout(t, sent).await {
                    Ok(Ok(r)) => Attempt::Response(Box::new(r)),
                    Ok(Err(e)) => Attempt::Failed(e),
                    Err(_) => Attempt::TimedOut,
                },
                None => match sent.await {
                    Ok(r) => Attempt::Response(Box::new(r)),
                    Err(e) => Attempt::Failed(e),
                },
            };
            HostStats::dec(&host.stats.rq_active);
            cs.rq_completed.inc();
            cs.rq_time.record(elapsed_ms(started));
            if let Attempt::Response(r) = &mut result {
                r.body_mut().hold(request_guard);
            } else {
                drop(request_guard);
            }
            let outcome = match &result {
                Attempt::Failed(UpstreamError::Overflow) => {
                    // A pending-request overflow is a local reply, never retried or reported
                    // to outlier detection (Envoy's `UO`); Envoy charges it as a 503.
                    cs.count_status(503);
                    return local_reply::overflow();
                }
                Attempt::Response(r) => Outcome::Response(r.status().as_u16()),
                Attempt::Failed(UpstreamError::ConnectFailure) => Outcome::ConnectFailure,
                Attempt::Failed(UpstreamError::ConnectTimeout) => Outcome::ConnectTimeout,
                Attempt::Failed(_) => Outcome::Reset,
                Attempt::TimedOut => {
                    cs.retry.per_try_timeout.inc();
                    HostStats::inc(&host.stats.rq_timeout);
                    Outcome::Timeout
                }
            };
            cluster.report(&host, outcome);
            cs.count_status(outcome.effective_status());
            if outcome.effective_status() >= 500 {
                HostStats::inc(&host.stats.rq_error);
            } else {
                HostStats::inc(&host.stats.rq_success);
            }
            if let Some(state) = retries.as_deref_mut() {
                state.tried.push(host.address);
                let headers = match &result {
                    Attempt::Response(r) => Some(r.headers()),
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
                        cs.retry.retry.inc();
                        drop(result);
                        let wait = state.next_backoff();
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        continue;
                    }
                    if !state.has_budget() {
                        cs.retry.limit_exceeded.inc();
                    }
                } else if state.retries > 0 {
                    cs.retry.success.inc();
                }
            }
            return match result {
                Attempt::Response(r) => downstream_response(*r, started),
                Attempt::Failed(e) => upstream_failure(e),
                Attempt::TimedOut => local_reply::upstream_timeout(),
            };
        }
    }

    /// The upstream request of one attempt, addressed to `host`.
    fn build(&self, host: &Host, attempt: u32, body: ProxyBody) -> Option<Request<ProxyBody>> {
        let authority = match &self.fwd.host_rewrite {
            HostRewrite::None => self.authority.clone(),
            HostRewrite::Literal(h) => h.clone(),
            HostRewrite::Auto => host
                .hostname
                .as_ref()
                .map(|h| format!("{h}:{}", host.address.port()))
                .unwrap_or_else(|| host.address_text.clone()),
        };
        let uri = if self.h2 {
            format!("http://{authority}{}", self.upstream_path)
        } else {
            self.upstream_path.clone()
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri.parse::<Uri>().ok()?;
        *req.version_mut() = if self.h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let headers = req.headers_mut();
        *headers = self.headers.clone();
        if self.h2 {
            headers.remove(header::HOST);
        } else {
            headers.insert(header::HOST, HeaderValue::from_str(&authority).ok()?);
        }
        if self.include_attempt_count {
            headers.insert("x-envoy-attempt-count", HeaderValue::from(attempt));
        }
        Some(req)
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn upstream_failure(e: UpstreamError) -> Response<ProxyBody> {
    local_reply::upstream_reset(e.reason())
}

fn downstream_response(resp: Response<UpstreamBody>, started: Instant) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&elapsed_ms(started).to_string()) {
        parts.headers.insert("x-envoy-upstream-service-time", v);
    }
    Response::from_parts(parts, body.boxed())
}
