//! The control plane's admin HTTP API (loopback by default).
//!
//! - `GET /healthz`: the process is up.
//! - `GET /ready`: 200 once a configuration is served, else 503.
//! - `GET /metrics`: Prometheus text.
//! - `GET /clients`: connected xDS clients, as JSON.
//! - `GET /config`: the model in force and the last reload's outcome, as JSON.

use crate::server::registry::Registry;
use crate::state::ConfigState;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// What the admin API reads.
#[derive(Clone)]
pub struct Admin {
    /// Configuration and reload state.
    pub state: Arc<ConfigState>,
    /// xDS clients.
    pub registry: Arc<Registry>,
}

type Body = Full<Bytes>;

impl Admin {
    /// Serves the admin API on `listener` forever.
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(&req)) }
                });
                let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = conn.serve_connection(TokioIo::new(stream), svc).await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/ready" => {
                if self.state.generation.load(Ordering::Acquire) > 0 {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no configuration yet\n")
                }
            }
            "/metrics" => {
                let mut r = text(StatusCode::OK, &self.metrics());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            "/clients" => json(&serde_json::to_value(self.registry.snapshot())),
            "/config" => {
                let body = serde_json::json!({
                    "source": self.state.source.display().to_string(),
                    "generation": self.state.generation.load(Ordering::Acquire),
                    "last_reload": &**self.state.last_reload.load(),
                    "config": &**self.state.current.load(),
                });
                json(&Ok(body))
            }
            "/" => text(
                StatusCode::OK,
                "legate-cp admin: /healthz /ready /metrics /clients /config\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let c = &self.registry.counters;
        let s = &self.state;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "legate_cp_connected_clients",
            "gauge",
            "xDS streams currently open.",
            self.registry.connected() as u64,
        );
        metric(
            "legate_cp_streams_total",
            "counter",
            "xDS streams opened.",
            c.streams_total.load(Ordering::Relaxed),
        );
        metric(
            "legate_cp_pushes_total",
            "counter",
            "xDS responses sent.",
            c.pushes.load(Ordering::Relaxed),
        );
        metric(
            "legate_cp_acks_total",
            "counter",
            "xDS ACKs received.",
            c.acks.load(Ordering::Relaxed),
        );
        metric(
            "legate_cp_nacks_total",
            "counter",
            "xDS NACKs received.",
            c.nacks.load(Ordering::Relaxed),
        );
        metric(
            "legate_cp_reloads_total",
            "counter",
            "Configurations accepted.",
            s.reloads_total.load(Ordering::Relaxed),
        );
        metric(
            "legate_cp_reload_errors_total",
            "counter",
            "Configurations rejected.",
            s.reload_errors_total.load(Ordering::Relaxed),
        );
        metric(
            "legate_cp_config_version",
            "gauge",
            "Generation of the configuration in force.",
            s.generation.load(Ordering::Acquire),
        );
        let ok = u64::from(s.last_reload.load().ok);
        metric(
            "legate_cp_last_reload_ok",
            "gauge",
            "1 if the last reload attempt was accepted.",
            ok,
        );
        out
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &Result<serde_json::Value, serde_json::Error>) -> Response<Body> {
    match value.as_ref().map(serde_json::to_string_pretty) {
        Ok(Ok(s)) => {
            let mut r = Response::new(Full::new(Bytes::from(s + "\n")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode JSON\n"),
    }
}
