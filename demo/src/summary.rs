//! The live summary: one row per upstream cluster, from two sources.
//!
//! - The app's own view of its calls: requests, success %, p50/p99, which instance answered.
//! - The ambassador's admin `/stats`, by Envoy's stat names only, so Envoy and legate-proxy are
//!   read the same way: `cluster.<name>.upstream_rq_total` (attempts),
//!   `upstream_rq_retry` (retries), `outlier_detection.ejections_active` (ejected hosts, a
//!   gauge), `outlier_detection.ejections_enforced_total`, and the circuit-breaker overflows
//!   `upstream_rq_pending_overflow` + `upstream_rq_retry_overflow`.
//!
//! Plus the control plane's admin `/config` (the generation in force, the last reload's
//! errors) and `/clients` (a NACK of the version in force).

use crate::app::{self, AppStats, Counts, HttpClient};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// How long an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The data plane's static cluster to the control plane: not a service, not shown.
const XDS_CLUSTER: &str = legate_control_plane::bootstrap::XDS_CLUSTER;

/// Where the summary reads from, and what to call things.
#[derive(Clone, Debug)]
pub struct Sources {
    /// `legate-proxy` or `envoy` (or `ambassador` when the app runs on its own).
    pub ambassador: String,
    /// The ambassador's admin address.
    pub admin: SocketAddr,
    /// The control plane's admin address.
    pub cp_admin: SocketAddr,
    /// The ambassador listener the app calls.
    pub target: SocketAddr,
    /// The app's rate, requests per second.
    pub rate: f64,
    /// The YAML file to edit, if the demo knows it.
    pub config_file: Option<String>,
    /// The file legate-cp serves and the file it copies (errors name the latter).
    pub served_as: Option<(String, String)>,
    /// Whether the app calls the mTLS service.
    pub mtls: bool,
}

/// The ambassador's counters and gauges (`name: value` lines of `/stats`).
pub type StatMap = HashMap<String, u64>;

/// Fetches `/stats` (cluster stats only) and parses its integer lines.
pub async fn fetch_stats(client: &HttpClient, admin: SocketAddr) -> Result<StatMap, String> {
    // filter=^cluster\.
    let reply = app::get(client, admin, "/stats?filter=%5Ecluster%5C.", ADMIN_TIMEOUT).await?;
    if reply.status != 200 {
        return Err(format!("/stats answered {}", reply.status));
    }
    Ok(parse_stats(&String::from_utf8_lossy(&reply.body)))
}

/// The `name: integer` lines of Envoy's text `/stats` (histogram lines are skipped).
pub fn parse_stats(text: &str) -> StatMap {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((name.to_owned(), value.trim().parse::<u64>().ok()?))
        })
        .collect()
}

fn stat(map: &StatMap, cluster: &str, name: &str) -> u64 {
    map.get(&format!("cluster.{cluster}.{name}"))
        .copied()
        .unwrap_or(0)
}

/// Cluster names present in `/stats` (a cluster name may contain dots).
fn clusters_in(map: &StatMap) -> BTreeSet<String> {
    map.keys()
        .filter_map(|k| {
            k.strip_prefix("cluster.")?
                .strip_suffix(".upstream_rq_total")
        })
        .filter(|c| *c != XDS_CLUSTER)
        .map(str::to_owned)
        .collect()
}

/// Whether the ambassador talks TLS to `cluster` (it has Envoy's `ssl.*` stats).
fn is_tls(map: &StatMap, cluster: &str) -> bool {
    map.contains_key(&format!("cluster.{cluster}.ssl.handshake"))
}

/// A cluster's name as the tables show it: `ledger (mTLS)` for a TLS cluster.
fn shown(map: &StatMap, cluster: &str) -> String {
    if is_tls(map, cluster) {
        format!("{cluster} (mTLS)")
    } else {
        cluster.to_owned()
    }
}

/// Envoy's TLS counters of one cluster over a span: completed handshakes, and failures
/// (`connection_error` and the `fail_verify_*` counters).
fn tls_counts(now: &StatMap, before: &StatMap, cluster: &str) -> (u64, u64) {
    let delta = |name: &str| stat(now, cluster, name).saturating_sub(stat(before, cluster, name));
    let failures = [
        "ssl.connection_error",
        "ssl.fail_verify_error",
        "ssl.fail_verify_san",
        "ssl.fail_verify_no_cert",
    ]
    .iter()
    .map(|n| delta(n))
    .sum();
    (delta("ssl.handshake"), failures)
}

/// The ambassador's numbers for one cluster over a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// `upstream_rq_total`: attempts, retries included.
    pub attempts: u64,
    /// `upstream_rq_retry`.
    pub retries: u64,
    /// `upstream_rq_pending_overflow` + `upstream_rq_retry_overflow`.
    pub overflows: u64,
    /// `outlier_detection.ejections_enforced_total`.
    pub ejections: u64,
    /// `outlier_detection.ejections_active` at the end of the span.
    pub ejected_now: u64,
}

fn proxy_counts(now: &StatMap, before: &StatMap, cluster: &str) -> ProxyCounts {
    let delta = |name: &str| stat(now, cluster, name).saturating_sub(stat(before, cluster, name));
    ProxyCounts {
        attempts: delta("upstream_rq_total"),
        retries: delta("upstream_rq_retry"),
        overflows: delta("upstream_rq_pending_overflow") + delta("upstream_rq_retry_overflow"),
        ejections: delta("outlier_detection.ejections_enforced_total"),
        ejected_now: stat(now, cluster, "outlier_detection.ejections_active"),
    }
}

/// The control plane's view: what is in force, and whether the last edit was accepted.
#[derive(Clone, Debug, Default)]
pub struct CpStatus {
    /// The file or directory served.
    pub source: String,
    /// Generation in force.
    pub generation: u64,
    /// Whether the last reload was accepted.
    pub ok: bool,
    /// The last reload's errors (`file:line:col: message`).
    pub errors: Vec<String>,
    /// NACKs of the version in force by our ambassador, as `type: message`.
    pub nacks: Vec<String>,
    /// Set when the control plane's admin could not be read.
    pub unreachable: Option<String>,
}

/// Reads `/config` and `/clients` of the control plane.
pub async fn fetch_cp(client: &HttpClient, cp_admin: SocketAddr) -> CpStatus {
    let json = |path: &'static str| async move {
        let r = app::get(client, cp_admin, path, ADMIN_TIMEOUT).await?;
        serde_json::from_slice::<Value>(&r.body).map_err(|e| format!("{path}: {e}"))
    };
    let config = match json("/config").await {
        Ok(v) => v,
        Err(e) => {
            return CpStatus {
                unreachable: Some(e),
                ..CpStatus::default()
            };
        }
    };
    let mut status = CpStatus {
        source: config["source"].as_str().unwrap_or_default().to_owned(),
        generation: config["generation"].as_u64().unwrap_or(0),
        ok: config["last_reload"]["ok"].as_bool().unwrap_or(false),
        errors: config["last_reload"]["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        ..CpStatus::default()
    };
    if let Ok(Value::Array(clients)) = json("/clients").await {
        for c in clients
            .iter()
            .filter(|c| c["ambassador"] == crate::topology::AMBASSADOR)
        {
            for (type_url, t) in c["types"].as_object().into_iter().flatten() {
                if let Some(msg) = t["last_nack"].as_str()
                    && t["nacked_version"] == t["sent_version"]
                {
                    let kind = type_url.rsplit('.').next().unwrap_or(type_url);
                    status.nacks.push(format!("{kind}: {msg}"));
                }
            }
        }
    }
    status
}

/// Accumulates samples and renders them.
pub struct Summary {
    sources: Sources,
    client: HttpClient,
    baseline: Option<StatMap>,
    previous: StatMap,
    latest: StatMap,
    ejected_max: BTreeMap<String, u64>,
    admin_error: Option<String>,
    cp: CpStatus,
    elapsed: Duration,
}

impl Summary {
    /// A summary reading `sources`.
    pub fn new(sources: Sources) -> Summary {
        Summary {
            sources,
            client: app::client(),
            baseline: None,
            previous: StatMap::new(),
            latest: StatMap::new(),
            ejected_max: BTreeMap::new(),
            admin_error: None,
            cp: CpStatus::default(),
            elapsed: Duration::ZERO,
        }
    }

    /// Takes a sample of both admins; the first one is the baseline of the totals.
    pub async fn sample(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        match fetch_stats(&self.client, self.sources.admin).await {
            Ok(now) => {
                self.admin_error = None;
                if self.baseline.is_none() {
                    self.baseline = Some(now.clone());
                    self.previous = now.clone();
                } else {
                    self.previous = std::mem::take(&mut self.latest);
                }
                for c in clusters_in(&now) {
                    let active = stat(&now, &c, "outlier_detection.ejections_active");
                    let max = self.ejected_max.entry(c).or_default();
                    *max = (*max).max(active);
                }
                self.latest = now;
            }
            Err(e) => self.admin_error = Some(e),
        }
        self.cp = fetch_cp(&self.client, self.sources.cp_admin).await;
        // An error in the served copy is at the same line of the file the user edits.
        if let Some((served, source)) = &self.sources.served_as {
            for e in &mut self.cp.errors {
                if let Some(rest) = e.strip_prefix(served.as_str()) {
                    *e = format!("{source}{rest}");
                }
            }
        }
    }

    fn clusters(&self, app: &BTreeMap<String, Counts>) -> BTreeSet<String> {
        let mut all = clusters_in(&self.latest);
        all.extend(app.keys().cloned());
        all
    }

    fn header(&self, out: &mut String) {
        let s = &self.sources;
        let _ = writeln!(
            out,
            "legate demo · {:.0} s · ambassador {} (admin http://{}) · app → http://{} at {} req/s · Ctrl-C stops",
            self.elapsed.as_secs_f64(),
            s.ambassador,
            s.admin,
            s.target,
            s.rate
        );
        if let Some(file) = &s.config_file {
            let _ = writeln!(
                out,
                "edit {file}: a saved change applies within a second (walkthrough: README.md)"
            );
        }
        let cp = &self.cp;
        if let Some(e) = &cp.unreachable {
            let _ = writeln!(out, "config: control plane admin unreachable: {e}");
        } else if cp.ok {
            let _ = writeln!(
                out,
                "config: generation {} in force · last edit OK",
                cp.generation
            );
        } else {
            let _ = writeln!(
                out,
                "config: generation {} in force · last edit REJECTED (traffic keeps the last good configuration):",
                cp.generation
            );
            for e in cp.errors.iter().take(5) {
                let _ = writeln!(out, "  {e}");
            }
        }
        for n in &cp.nacks {
            let _ = writeln!(out, "  the ambassador NACKed {n}");
        }
        if let Some(e) = &self.admin_error {
            let _ = writeln!(out, "ambassador admin unreachable: {e}");
        }
    }

    /// The live view: the last window, and totals since traffic started.
    pub fn render_live(&self, window: &BTreeMap<String, Counts>, total: &AppStats) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let _ = writeln!(
            out,
            "requests, ok %, p50/p99, served by: the app's own calls · retries, ejected, overflows: the ambassador's /stats\n"
        );
        let _ = writeln!(
            out,
            "{:<16} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9} │ {:>7} {:>6} {:>7} │ served by (last second)",
            "last second:",
            "req",
            "ok %",
            "p50",
            "p99",
            "retries",
            "ejected",
            "overflows",
            "total",
            "ok %",
            "retries"
        );
        let baseline = self.baseline.clone().unwrap_or_default();
        let mut failures = Vec::new();
        for c in self.clusters(&total.total) {
            let w = window.get(&c).cloned().unwrap_or_default();
            let t = total.total.get(&c).cloned().unwrap_or_default();
            let pw = proxy_counts(&self.latest, &self.previous, &c);
            let pt = proxy_counts(&self.latest, &baseline, &c);
            let _ = writeln!(
                out,
                "{:<16} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9} │ {:>7} {:>6} {:>7} │ {}",
                truncate(&shown(&self.latest, &c), 16),
                w.requests,
                pct(w.ok, w.requests),
                ms(w.latency.quantile(0.5)),
                ms(w.latency.quantile(0.99)),
                pw.retries,
                pw.ejected_now,
                pw.overflows,
                t.requests,
                pct(t.ok, t.requests),
                pt.retries,
                served_by(&w.instances, false),
            );
            if let Some(f) = &t.last_failure {
                failures.push(format!("{c}: {f}"));
            }
        }
        let tls: Vec<String> = self
            .clusters(&total.total)
            .into_iter()
            .filter(|c| is_tls(&self.latest, c))
            .map(|c| {
                let (handshakes, failures) = tls_counts(&self.latest, &baseline, &c);
                format!("{c}: {handshakes} TLS handshakes, {failures} failed")
            })
            .collect();
        if !tls.is_empty() {
            let _ = writeln!(
                out,
                "\nmTLS (the ambassador's ssl.* stats, since traffic started): {}",
                tls.join(" · ")
            );
        }
        if !failures.is_empty() {
            let _ = writeln!(out, "\nlast failure seen by the app:");
            for f in failures {
                let _ = writeln!(out, "  {f}");
            }
        }
        out
    }

    /// The final summary as text.
    pub fn render_final(&self, total: &AppStats) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "legate demo: final summary after {:.1} s of traffic through {} (requests, success, p50/p99: the app's own calls; retries, ejections, overflows: the ambassador's /stats)",
            self.elapsed.as_secs_f64(),
            self.sources.ambassador
        );
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}  served by",
            "cluster", "requests", "success", "p50", "p99", "retries", "ejections", "overflows"
        );
        let baseline = self.baseline.clone().unwrap_or_default();
        let (mut req, mut ok) = (0, 0);
        for c in self.clusters(&total.total) {
            let t = total.total.get(&c).cloned().unwrap_or_default();
            let p = proxy_counts(&self.latest, &baseline, &c);
            req += t.requests;
            ok += t.ok;
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}  {}",
                truncate(&shown(&self.latest, &c), 16),
                t.requests,
                pct_sign(t.ok, t.requests),
                ms(t.latency.quantile(0.5)),
                ms(t.latency.quantile(0.99)),
                p.retries,
                p.ejections
                    .max(self.ejected_max.get(&c).copied().unwrap_or(0)),
                p.overflows,
                served_by(&t.instances, true),
            );
        }
        let _ = writeln!(out, "{:<16} {:>8} {:>8}", "all", req, pct_sign(ok, req));
        out
    }

    /// The final summary as JSON (`--json`).
    pub fn to_json(&self, total: &AppStats, ambassador_pid: Option<u32>) -> Value {
        let baseline = self.baseline.clone().unwrap_or_default();
        let (mut req, mut ok, mut retries) = (0, 0, 0);
        let mut clusters = serde_json::Map::new();
        for c in self.clusters(&total.total) {
            let t = total.total.get(&c).cloned().unwrap_or_default();
            let p = proxy_counts(&self.latest, &baseline, &c);
            req += t.requests;
            ok += t.ok;
            retries += p.retries;
            let q = |x| t.latency.quantile(x).map(|d| d.as_secs_f64() * 1e3);
            clusters.insert(
                c.clone(),
                json!({
                    "requests": t.requests,
                    "successes": t.ok,
                    "success_pct": pct_value(t.ok, t.requests),
                    "p50_ms": q(0.5),
                    "p99_ms": q(0.99),
                    "attempts": p.attempts,
                    "retries": p.retries,
                    "overflows": p.overflows,
                    "ejections": p.ejections,
                    "ejected_max": self.ejected_max.get(&c).copied().unwrap_or(0),
                    "ejected_now": p.ejected_now,
                    "instances": t.instances,
                    "last_failure": t.last_failure,
                }),
            );
            if is_tls(&self.latest, &c) {
                let (handshakes, failures) = tls_counts(&self.latest, &baseline, &c);
                clusters[&c]["tls"] = json!({
                    "handshakes": handshakes,
                    "failures": failures,
                });
            }
        }
        json!({
            "ambassador": {
                "kind": self.sources.ambassador,
                "admin": self.sources.admin.to_string(),
                "pid": ambassador_pid,
            },
            "target": self.sources.target.to_string(),
            "duration_s": self.elapsed.as_secs_f64(),
            "config": {
                "source": self.cp.source,
                "generation": self.cp.generation,
                "ok": self.cp.ok,
                "errors": self.cp.errors,
                "nacks": self.cp.nacks,
            },
            "requests": req,
            "successes": ok,
            "success_pct": pct_value(ok, req),
            "retries": retries,
            "clusters": clusters,
        })
    }
}

fn pct_value(ok: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| 100.0 * ok as f64 / n as f64)
}

fn pct(ok: u64, n: u64) -> String {
    match pct_value(ok, n) {
        Some(p) if ok == n => format!("{p:.0}"),
        Some(p) => format!("{p:.1}"),
        None => "-".into(),
    }
}

fn pct_sign(ok: u64, n: u64) -> String {
    match n {
        0 => "-".into(),
        _ => format!("{}%", pct(ok, n)),
    }
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1e3;
            if ms < 10.0 {
                format!("{ms:.1}ms")
            } else if ms < 1000.0 {
                format!("{ms:.0}ms")
            } else {
                format!("{:.1}s", ms / 1e3)
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn served_by(instances: &BTreeMap<String, u64>, percent: bool) -> String {
    let sum: u64 = instances.values().sum();
    instances
        .iter()
        .map(|(i, n)| {
            if percent && sum > 0 {
                format!("{i} {:.0}%", 100.0 * *n as f64 / sum as f64)
            } else {
                format!("{i} {n}")
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_stats_text() {
        let text = "cluster.payments.upstream_rq_total: 12\n\
                    cluster.a.b.upstream_rq_total: 3\n\
                    cluster.legate_xds.upstream_rq_total: 1\n\
                    cluster.payments.upstream_rq_time: P0(nan,1) P25(nan,2)\n\
                    cluster.payments.outlier_detection.ejections_active: 1\n";
        let map = parse_stats(text);
        assert_eq!(map.len(), 4);
        assert_eq!(
            clusters_in(&map).into_iter().collect::<Vec<_>>(),
            ["a.b", "payments"]
        );
        let p = proxy_counts(&map, &StatMap::new(), "payments");
        assert_eq!((p.attempts, p.ejected_now), (12, 1));
    }

    #[test]
    fn formats() {
        assert_eq!(pct(1, 2), "50.0");
        assert_eq!(pct(2, 2), "100");
        assert_eq!(pct(0, 0), "-");
        assert_eq!(ms(Some(Duration::from_micros(2340))), "2.3ms");
        assert_eq!(ms(Some(Duration::from_millis(1500))), "1.5s");
        assert_eq!(truncate("payments-canary-x", 16), "payments-canary…");
    }
}
