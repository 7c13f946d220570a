//! The Envoy-compatible admin API on the bootstrap's `admin.address`.
//!
//! Read endpoints answer GET (and POST, as Envoy does); mutating ones (`/quitquitquit`) are
//! POST only.

mod clusters;
mod config_dump;
mod server_info;
pub mod time;

pub use server_info::command_line_options;

use crate::runtime::manager::Manager;
use crate::stats::Store;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin API reads.
pub struct AdminCtx {
    /// Stats.
    pub store: Store,
    /// Runtime configuration.
    pub manager: Arc<Manager>,
    /// The bootstrap as Envoy JSON (for `/config_dump`).
    pub bootstrap: serde_json::Value,
    /// When the bootstrap was loaded (its `last_updated` in `/config_dump`).
    pub bootstrap_loaded: SystemTime,
    /// `command_line_options` for `/server_info` (see [`command_line_options`]).
    pub options: serde_json::Value,
    /// `node` for `/server_info`.
    pub node: serde_json::Value,
    /// Process start.
    pub started: Instant,
    /// Set to true by `POST /quitquitquit`.
    pub quit: watch::Sender<bool>,
}

type Body = Full<Bytes>;

const PATHS: &str = "admin commands are:\n  /: Admin home page\n  /clusters: upstream cluster status\n  /config_dump: dump current Envoy configs\n  /help: print out list of admin commands\n  /hot_restart_version: print the hot restart compatibility version\n  /listeners: print listener info\n  /quitquitquit: exit the server\n  /ready: print server state, return 200 if LIVE, otherwise return 503\n  /server_info: print server version/status information\n  /stats: print server stats\n  /stats/prometheus: print server stats in prometheus format\n";

/// Envoy's answer to an unknown `/stats?format=`.
const STATS_FORMAT_USAGE: &str = "usage: /stats?format=(html|active-html|json|prometheus|text)\n";

/// Serves the admin API on `listener` until the process exits.
pub async fn serve(ctx: Arc<AdminCtx>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move {
                    if req.uri().path() != "/config_dump" {
                        return Ok::<_, std::convert::Infallible>(handle(&ctx, &req));
                    }
                    // A dump decodes a descriptor pool (tens of ms): off the proxy's workers,
                    // as Envoy's admin runs on its main thread, not on a worker.
                    let dumped = tokio::task::spawn_blocking(move || handle(&ctx, &req)).await;
                    Ok(dumped.unwrap_or_else(|e| {
                        text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("config_dump failed: {e}\n"),
                        )
                    }))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/plain; charset=UTF-8", body)
}

/// JSON as Envoy's admin prints it: indented by one space, with a final newline.
fn json(value: &serde_json::Value) -> Response<Body> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    let body = match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned() + "\n",
        Err(_) => String::new(),
    };
    respond(StatusCode::OK, "application/json", body)
}

/// JSON on one line, without a final newline, as Envoy prints `/stats?format=json`.
fn compact_json(value: &serde_json::Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", value.to_string())
}

/// Parses a query string into (key, value) pairs (values percent-decoded).
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/listeners?format=json`: Envoy's `ListenersStatus`.
fn listeners_json(listeners: &[(String, std::net::SocketAddr)]) -> serde_json::Value {
    let statuses: Vec<serde_json::Value> = listeners
        .iter()
        .map(|(name, address)| {
            serde_json::json!({
                "name": name,
                "local_address": {"socket_address": {
                    "address": address.ip().to_string(),
                    "port_value": address.port(),
                }},
            })
        })
        .collect();
    serde_json::json!({ "listener_statuses": statuses })
}

fn handle(ctx: &AdminCtx, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let post = req.method() == Method::POST;
    if req.method() != Method::GET && !post && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed.\n".into(),
        );
    }
    let q = query(req);
    let has = |k: &str| q.iter().any(|(key, _)| key == k);
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    match path {
        "/ready" => {
            if ctx.manager.is_live() {
                text(StatusCode::OK, "LIVE\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "INITIALIZING\n".into())
            }
        }
        "/server_info" => json(&server_info::server_info(ctx)),
        "/stats" => {
            let filter = match get("filter")
                .filter(|f| !f.is_empty())
                .map(regex::Regex::new)
            {
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    return text(StatusCode::BAD_REQUEST, format!("Invalid regex: {e}\n"));
                }
                None => None,
            };
            let used_only = has("usedonly");
            match get("format") {
                Some("json") => compact_json(&ctx.store.render_json(filter.as_ref(), used_only)),
                Some("prometheus") => text(StatusCode::OK, ctx.store.render_prometheus()),
                // `html` and `active-html` (Envoy's browser views) get the text form.
                None | Some("text" | "html" | "active-html") => text(
                    StatusCode::OK,
                    ctx.store.render_text(filter.as_ref(), used_only),
                ),
                Some(_) => text(StatusCode::BAD_REQUEST, STATS_FORMAT_USAGE.into()),
            }
        }
        "/stats/prometheus" => text(StatusCode::OK, ctx.store.render_prometheus()),
        "/clusters" => {
            let clusters = ctx.manager.clusters();
            if get("format") == Some("json") {
                json(&clusters::json(&clusters))
            } else {
                text(StatusCode::OK, clusters::text(&clusters))
            }
        }
        "/config_dump" => {
            let dump = config_dump::dump(ctx, has("include_eds"));
            match get("resource").filter(|r| !r.is_empty()) {
                None => json(&dump),
                Some(resource) => match config_dump::only_resource(&dump, resource) {
                    Some(filtered) => json(&filtered),
                    None => text(
                        StatusCode::NOT_FOUND,
                        format!("{resource} not found in config dump"),
                    ),
                },
            }
        }
        "/listeners" => {
            let listeners = ctx.manager.active_listeners();
            if get("format") == Some("json") {
                json(&listeners_json(&listeners))
            } else {
                let lines: String = listeners
                    .iter()
                    .map(|(name, address)| format!("{name}::{address}\n"))
                    .collect();
                text(StatusCode::OK, lines)
            }
        }
        // legate-proxy has no hot restart (the flags are accepted and ignored).
        "/hot_restart_version" => text(StatusCode::OK, "disabled".into()),
        "/help" => text(StatusCode::OK, PATHS.into()),
        "/quitquitquit" => {
            if !post {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method GET not allowed, POST required.\n".into(),
                );
            }
            let _ = ctx.quit.send(true);
            text(StatusCode::OK, "OK\n".into())
        }
        "/" => text(StatusCode::OK, PATHS.into()),
        _ => text(StatusCode::NOT_FOUND, format!("invalid path. {PATHS}")),
    }
}
