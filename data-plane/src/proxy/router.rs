//! The request path: route selection, then forwarding to a host of the chosen cluster.
//!
//! Reads one `Runtime` snapshot per request (an atomic load, no lock) and never mutates
//! configuration.

use super::body::{self, ProxyBody, UpstreamBody};
use super::headers::{self, UpstreamHeaders};
use super::listener::{HttpStats, ListenerCtx};
use super::local_reply;
use super::pool::UpstreamError;
use crate::config::{
    ForwardAction, HostRewrite, RouteAction, RouteEntry, RouteSource, UpstreamProtocol,
};
use crate::runtime::Runtime;
use crate::runtime::cluster::Cluster;
use crate::runtime::host::HostStats;
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
    let Some((_vh, entry)) = table.select(&authority, &path, req.method(), req.headers()) else {
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
            forward(cluster, entry, fwd, authority, path, req).await
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
    entry: &RouteEntry,
    fwd: &ForwardAction,
    authority: String,
    path: String,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let rewritten = fwd.rewrite_path(&entry.matcher, &path);
    let timeout = (!fwd.timeout.is_zero()).then_some(fwd.timeout);
    headers::prepare_request(
        &mut parts.headers,
        &UpstreamHeaders {
            original_path: rewritten.as_ref().map(|_| path.as_str()),
            expected_timeout_ms: timeout.map(|t| t.as_millis()),
        },
    );
    let upstream_path = rewritten.unwrap_or(path);
    let Some(host) = cluster.pick(None, &[]) else {
        cluster.stats.cx_none_healthy.inc();
        return local_reply::no_healthy_upstream();
    };
    let upstream_authority = match &fwd.host_rewrite {
        HostRewrite::None => authority,
        HostRewrite::Literal(h) => h.clone(),
        HostRewrite::Auto => host
            .hostname
            .as_ref()
            .map(|h| format!("{h}:{}", host.address.port()))
            .unwrap_or_else(|| host.address_text.clone()),
    };
    let h2 = cluster.config.protocol == UpstreamProtocol::Http2;
    let uri = if h2 {
        format!("http://{upstream_authority}{upstream_path}")
    } else {
        upstream_path
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return local_reply::reply(StatusCode::BAD_REQUEST, "");
    };
    parts.uri = uri;
    parts.version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    if h2 {
        parts.headers.remove(header::HOST);
    } else if let Ok(v) = HeaderValue::from_str(&upstream_authority) {
        parts.headers.insert(header::HOST, v);
    }
    let upstream_req = Request::from_parts(parts, body::stream(body));

    let cs = &cluster.stats;
    cs.rq_total.inc();
    cs.rq_active.inc();
    HostStats::inc(&host.stats.rq_total);
    HostStats::inc(&host.stats.rq_active);
    let started = Instant::now();
    let sent = host.pool.send(upstream_req);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, sent).await.map_err(|_| ()),
        None => Ok(sent.await),
    };
    cs.rq_active.dec();
    HostStats::dec(&host.stats.rq_active);
    cs.rq_completed.inc();
    cs.rq_time.record(elapsed_ms(started));
    match result {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            cs.count_status(status);
            if status >= 500 {
                HostStats::inc(&host.stats.rq_error);
            } else {
                HostStats::inc(&host.stats.rq_success);
            }
            downstream_response(resp, started)
        }
        Ok(Err(e)) => {
            HostStats::inc(&host.stats.rq_error);
            cs.count_status(503);
            upstream_failure(e)
        }
        Err(()) => {
            cs.rq_timeout.inc();
            HostStats::inc(&host.stats.rq_timeout);
            cs.count_status(504);
            local_reply::upstream_timeout()
        }
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
