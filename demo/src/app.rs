//! The "app": plain HTTP calls to the ambassador on localhost, at a steady rate, and what it
//! saw of them (status, latency, which instance answered).

use crate::topology::service_of;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use legate_test_upstream::INSTANCE_HEADER;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One call the app makes: a path on the ambassador, and the service it is attributed to when
/// no instance answered (the ambassador's own replies carry no `x-upstream-instance`).
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// Request path.
    pub path: &'static str,
    /// The service the path routes to by default.
    pub service: &'static str,
}

/// The app's request mix, repeated: 5/8 payments, 2/8 inventory, 1/8 the `/api/` split route
/// (90% payments, 10% payments-canary: attributed by the answering instance).
pub const MIX: [Call; 8] = [
    Call {
        path: "/payments/charge",
        service: "payments",
    },
    Call {
        path: "/inventory/items",
        service: "inventory",
    },
    Call {
        path: "/payments/charge",
        service: "payments",
    },
    Call {
        path: "/api/orders",
        service: "payments",
    },
    Call {
        path: "/payments/refund",
        service: "payments",
    },
    Call {
        path: "/stock",
        service: "inventory",
    },
    Call {
        path: "/payments/charge",
        service: "payments",
    },
    Call {
        path: "/payments/charge",
        service: "payments",
    },
];

/// The call to the mTLS service, added to every round of [`MIX`] when the demo runs it.
pub const LEDGER: Call = Call {
    path: "/ledger/entries",
    service: crate::mtls::SERVICE,
};

/// The app's calls, in order: [`MIX`], and [`LEDGER`] when `mtls` (the local demo runs the
/// mTLS service; docker compose does not).
pub fn mix(mtls: bool) -> Vec<Call> {
    let mut calls = MIX.to_vec();
    if mtls {
        calls.push(LEDGER);
    }
    calls
}

/// How long one call may take before the app gives up (above the route timeouts).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 client with keep-alive.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A keep-alive HTTP/1.1 client.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// The outcome of one GET.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `x-upstream-instance`, if an upstream answered.
    pub instance: Option<String>,
    /// Body.
    pub body: Bytes,
}

/// GET `http://addr{path_and_query}` with a deadline.
pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path_and_query: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let uri: http::Uri = format!("http://{addr}{path_and_query}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let call = async {
        let resp = client.get(uri).await.map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        let instance = resp
            .headers()
            .get(INSTANCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?
            .to_bytes();
        Ok(Reply {
            status,
            instance,
            body,
        })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Latency histogram: buckets 5% apart from 10 µs (percentiles within 5%).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const BUCKET_BASE_US: f64 = 10.0;
const BUCKET_GROWTH: f64 = 1.05;

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_secs_f64() * 1e6).max(BUCKET_BASE_US);
        let i = ((us / BUCKET_BASE_US).ln() / BUCKET_GROWTH.ln()).ceil() as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0..=1), as the upper bound of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let us = BUCKET_BASE_US * BUCKET_GROWTH.powi(i as i32);
                return Some(Duration::from_secs_f64(us / 1e6));
            }
        }
        None
    }
}

/// Counts for one service over some span of time.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Calls completed (answered or failed).
    pub requests: u64,
    /// Calls answered 2xx.
    pub ok: u64,
    /// Latencies of all completed calls.
    pub latency: Histogram,
    /// Calls answered by each instance.
    pub instances: BTreeMap<String, u64>,
    /// The last failure, as the app saw it.
    pub last_failure: Option<String>,
}

impl Counts {
    fn record(&mut self, ok: bool, latency: Duration, instance: Option<&str>, failure: &str) {
        self.requests += 1;
        if ok {
            self.ok += 1;
        } else {
            self.last_failure = Some(failure.to_owned());
        }
        self.latency.record(latency);
        if let Some(i) = instance {
            *self.instances.entry(i.to_owned()).or_default() += 1;
        }
    }
}

/// What the app saw, per service: since the last summary tick, and since traffic started.
#[derive(Debug, Default)]
pub struct AppStats {
    /// Since the last [`AppStats::take_window`].
    pub window: BTreeMap<String, Counts>,
    /// Since traffic started.
    pub total: BTreeMap<String, Counts>,
}

impl AppStats {
    fn record(&mut self, call: Call, result: &Result<Reply, String>, latency: Duration) {
        let (service, ok, instance, failure) = match result {
            Ok(r) => {
                let service = r
                    .instance
                    .as_deref()
                    .map(service_of)
                    .unwrap_or(call.service)
                    .to_owned();
                let ok = (200..300).contains(&r.status);
                let failure = match &r.instance {
                    Some(i) => format!("{} → {} from {i}", call.path, r.status),
                    None => {
                        let body = String::from_utf8_lossy(&r.body);
                        format!("{} → {} {}", call.path, r.status, body.trim())
                    }
                };
                (service, ok, r.instance.clone(), failure)
            }
            Err(e) => (
                call.service.to_owned(),
                false,
                None,
                format!("{} → {e}", call.path),
            ),
        };
        for map in [&mut self.window, &mut self.total] {
            map.entry(service.clone()).or_default().record(
                ok,
                latency,
                instance.as_deref(),
                &failure,
            );
        }
    }

    /// Returns the window's counts and starts a new window.
    pub fn take_window(&mut self) -> BTreeMap<String, Counts> {
        std::mem::take(&mut self.window)
    }
}

/// Calls the ambassador at `target` `rate` times a second, cycling through `calls` (see
/// [`mix`]), until `stop` turns true; then waits (up to [`CALL_TIMEOUT`]) for the calls in
/// flight.
pub async fn run(
    target: SocketAddr,
    rate: f64,
    calls: Vec<Call>,
    stats: Arc<Mutex<AppStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let calls = if calls.is_empty() {
        MIX.to_vec()
    } else {
        calls
    };
    let client = client();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let call = calls[n % calls.len()];
        n += 1;
        let (client, stats) = (client.clone(), stats.clone());
        in_flight.spawn(async move {
            let started = Instant::now();
            let result = get(&client, target, call.path, CALL_TIMEOUT).await;
            let latency = started.elapsed();
            stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(call, &result, latency);
        });
        // Reap finished calls so the set stays small.
        while in_flight.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(CALL_TIMEOUT, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_five_percent() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1e3;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1e3;
        assert!((50.0..=52.5).contains(&p50), "{p50}");
        assert!((99.0..=104.0).contains(&p99), "{p99}");
    }

    #[test]
    fn attribution_by_instance_then_path() {
        let mut s = AppStats::default();
        let call = MIX[3]; // /api/orders, payments by default
        let canary = Ok(Reply {
            status: 200,
            instance: Some("payments-canary-1".into()),
            body: Bytes::new(),
        });
        s.record(call, &canary, Duration::from_millis(1));
        let local = Ok(Reply {
            status: 503,
            instance: None,
            body: Bytes::from("no healthy upstream"),
        });
        s.record(call, &local, Duration::from_millis(1));
        assert_eq!(s.total["payments-canary"].ok, 1);
        assert_eq!(s.total["payments"].requests, 1);
        assert_eq!(s.total["payments"].ok, 0);
        assert_eq!(
            s.total["payments"].last_failure.as_deref(),
            Some("/api/orders → 503 no healthy upstream")
        );
        assert_eq!(s.take_window().len(), 2);
        assert!(s.window.is_empty());
    }
}
