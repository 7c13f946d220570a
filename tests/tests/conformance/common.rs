//! The fixture every scenario runs in: a legate-cp YAML file, `legate-cp serve`, one data
//! plane (Envoy or legate-proxy) started from `legate-cp bootstrap envoy`, and helpers to
//! send requests and read `/stats` and `/clusters` by Envoy's names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use legate_e2e::upstream::{Attempt, Outcome, Upstream};
use legate_e2e::{ControlPlane, Envoy, Flavor, HttpResponse, http_get_with_headers};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound of every wait for configuration to arrive.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How long counters may take to reach their final values after the client has its
/// response (stats are updated when the upstream stream completes, which may be just after).
pub const STATS_SETTLE: Duration = Duration::from_secs(3);

/// The ambassador every fixture serves; Envoy's stats read `http.app.*`.
pub const AMBASSADOR: &str = "app";

/// How long a scenario waits for attempts that may still be on their way.
pub const SETTLE: Duration = Duration::from_secs(3);

/// The path the scenarios request through the `payments` service (the upstream sees `/x`).
pub const PAYMENTS_PATH: &str = "/payments/x";

/// How long a scenario waits for a (wrong) retry to show up before it counts attempts.
pub const NO_RETRY_WAIT: Duration = Duration::from_millis(300);

pub(crate) use legate_e2e::flavors;

/// One service of the YAML file: its endpoints and any further keys (YAML written at
/// column 0, indented into place).
#[derive(Clone, Debug)]
pub struct Svc {
    name: String,
    endpoints: Vec<SocketAddr>,
    keys: String,
}

/// A service `name` with `endpoints` and the extra YAML `keys` (e.g. a `retries:` block).
pub fn svc(name: &str, endpoints: &[SocketAddr], keys: &str) -> Svc {
    Svc {
        name: name.to_owned(),
        endpoints: endpoints.to_vec(),
        keys: keys.to_owned(),
    }
}

/// Renders the legate-cp YAML: the scenario's services, a `probe` service and the
/// ambassador `app` on `port` (with `attempt_count_header`).
fn render(services: &[Svc], probe: SocketAddr, port: u16) -> String {
    let mut out = String::from("services:\n");
    let _ = writeln!(out, "  probe:\n    endpoints: [{probe}]");
    for s in services {
        let list: Vec<String> = s.endpoints.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  {}:\n    endpoints: [{}]", s.name, list.join(", "));
        for line in s.keys.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(out, "    {line}");
        }
    }
    let _ = writeln!(
        out,
        "ambassadors:\n  {AMBASSADOR}:\n    listen: 127.0.0.1:{port}\n    attempt_count_header: true"
    );
    out
}

/// A running scenario. Dropping it stops the data plane, legate-cp and the probe upstream.
pub struct Fixture {
    /// Which data plane runs.
    pub flavor: Flavor,
    /// The data plane.
    pub proxy: Envoy,
    /// Its listener (the ambassador's `listen`).
    pub listener: SocketAddr,
    _probe: Option<Upstream>,
    _cp: Option<ControlPlane>,
    _dir: TempDir,
}

impl Fixture {
    /// Starts legate-cp with `services` (plus a `probe` service), then the data plane
    /// `flavor` from `legate-cp bootstrap envoy --node app`, and waits until the listener
    /// routes to the probe service and every endpoint of every service shows in
    /// `/clusters`. Nothing is sent to the scenario's own services, so their counters,
    /// load balancers and outlier detectors start untouched.
    pub async fn start(flavor: Flavor, services: &[Svc]) -> Fixture {
        let probe = Upstream::start("probe").await.expect("probe upstream");
        let port = listener_port();
        let dir = TempDir::with_prefix("legate-conformance-").expect("temp dir");
        let path = dir.path().join("legate.yaml");
        std::fs::write(&path, render(services, probe.addr, port)).expect("writing config");
        let cp = ControlPlane::start(&path).await;
        let bootstrap = cp.bootstrap_envoy(AMBASSADOR, false);
        let proxy = Envoy::start_flavor(flavor, &bootstrap, &[]).await;
        let listener = SocketAddr::from(([127, 0, 0, 1], port));
        proxy
            .process()
            .wait_until(
                "the listener to route /probe/ to the probe upstream",
                DEADLINE,
                || async {
                    let r = http_get_with_headers(listener, "/probe/", None, &[])
                        .await
                        .ok()?;
                    (r.status == 200 && r.header("x-upstream-instance") == Some("probe"))
                        .then_some(())
                },
            )
            .await;
        let fx = Fixture {
            flavor,
            proxy,
            listener,
            _probe: Some(probe),
            _cp: Some(cp),
            _dir: dir,
        };
        for s in services {
            let what = format!("all endpoints of {} in /clusters", s.name);
            fx.proxy
                .process()
                .wait_until(&what, DEADLINE, || async {
                    let hosts = fx.health_flags(&s.name).await;
                    s.endpoints
                        .iter()
                        .all(|e| hosts.contains_key(e))
                        .then_some(())
                })
                .await;
        }
        fx
    }

    /// Starts the data plane `flavor` from a static bootstrap (no legate-cp), for connection
    /// manager settings legate-cp does not generate: a listener whose HTTP connection manager
    /// is `hcm` merged over a minimal one routing `/payments/` (rewritten to `/`) to cluster
    /// `payments` with `endpoints`. Waits until the listener answers.
    pub async fn start_static(
        flavor: Flavor,
        endpoints: &[SocketAddr],
        hcm: serde_json::Value,
    ) -> Fixture {
        Fixture::start_static_with(flavor, endpoints, hcm, serde_json::json!({})).await
    }

    /// Like [`Fixture::start_static`], with `cluster` merged over the `payments` cluster.
    pub async fn start_static_with(
        flavor: Flavor,
        endpoints: &[SocketAddr],
        hcm: serde_json::Value,
        cluster: serde_json::Value,
    ) -> Fixture {
        let port = listener_port();
        let dir = TempDir::with_prefix("legate-conformance-").expect("temp dir");
        let bootstrap = static_bootstrap(port, endpoints, hcm, cluster);
        let proxy = Envoy::start_flavor(flavor, &bootstrap, &[]).await;
        let listener = SocketAddr::from(([127, 0, 0, 1], port));
        proxy
            .process()
            .wait_until("the static listener to answer", DEADLINE, || async {
                http_get_with_headers(listener, "/ready-probe", None, &[])
                    .await
                    .ok()
                    .map(|_| ())
            })
            .await;
        Fixture {
            flavor,
            proxy,
            listener,
            _probe: None,
            _cp: None,
            _dir: dir,
        }
    }

    /// Starts the upstream `p1` and a fixture whose one service, `payments`, routes to it
    /// with the extra YAML `keys`; returns both.
    pub async fn payments(flavor: Flavor, keys: &str) -> (Upstream, Fixture) {
        let up = Upstream::start("p1").await.expect("upstream");
        let fx = Fixture::start(flavor, &[svc("payments", &[up.addr], keys)]).await;
        (up, fx)
    }

    /// `GET` [`PAYMENTS_PATH`] tagged `x-test-id: id`, followed by the `faults` headers.
    pub async fn get_payments(&self, id: &str, faults: &[(&str, &str)]) -> HttpResponse {
        let mut headers = vec![("x-test-id", id)];
        headers.extend_from_slice(faults);
        self.get(PAYMENTS_PATH, &headers).await
    }

    /// Like [`Fixture::get_payments`], also returning how long the response took.
    pub async fn timed_get_payments(
        &self,
        id: &str,
        faults: &[(&str, &str)],
    ) -> (HttpResponse, Duration) {
        let started = std::time::Instant::now();
        let r = self.get_payments(id, faults).await;
        (r, started.elapsed())
    }

    /// Waits (up to 5 s) until the request `id` has reached `up`.
    pub async fn wait_arrived(&self, up: &Upstream, id: &str) {
        let log = up.log().clone();
        self.proxy
            .process()
            .wait_until(
                &format!("request {id} to reach the upstream"),
                Duration::from_secs(5),
                || {
                    let n = log.count(id);
                    async move { (n == 1).then_some(()) }
                },
            )
            .await;
    }

    /// `GET path` with `headers` over a new HTTP/1.1 connection; panics if the request
    /// fails at the transport level.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get_with_headers(self.listener, path, None, headers)
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.flavor.name()))
    }

    /// `GET path` with `host` as its `Host` header.
    pub async fn get_with_host(&self, path: &str, host: &str) -> HttpResponse {
        http_get_with_headers(self.listener, path, Some(host), &[])
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path} (host {host}): {e}", self.flavor.name()))
    }

    /// Every counter and gauge of `/stats` (histogram lines are left out).
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        self.proxy.stats().await
    }

    /// Waits (up to [`STATS_SETTLE`]) until every stat has its expected value, then
    /// asserts they all do, listing every mismatch (a missing stat shows as `None` and
    /// passes for 0).
    pub async fn expect_stats(&self, expected: &[(&str, u64)]) {
        let ranges: Vec<(&str, RangeInclusive<u64>)> =
            expected.iter().map(|(n, v)| (*n, *v..=*v)).collect();
        self.expect_stat_ranges(&ranges).await;
    }

    /// Like [`Fixture::expect_stats`], with a range of acceptable values per stat.
    /// Asserts that each stat grew by its count since `before` (a [`Fixture::stats`]
    /// snapshot, which holds the fixture's own readiness requests).
    pub async fn expect_growth(&self, before: &BTreeMap<String, u64>, growth: &[(&str, u64)]) {
        let expected: Vec<(&str, u64)> = growth
            .iter()
            .map(|(k, n)| (*k, before.get(*k).copied().unwrap_or(0) + n))
            .collect();
        self.expect_stats(&expected).await;
    }

    pub async fn expect_stat_ranges(&self, expected: &[(&str, RangeInclusive<u64>)]) {
        let started = tokio::time::Instant::now();
        loop {
            let stats = self.stats().await;
            let wrong = mismatches(&stats, expected);
            if wrong.is_empty() {
                if std::env::var_os("CONFORMANCE_DUMP_STATS").is_some() {
                    eprintln!(
                        "{}: non-zero stats:\n{}",
                        self.flavor.name(),
                        nonzero(&stats, expected).join("\n")
                    );
                }
                return;
            }
            if started.elapsed() >= STATS_SETTLE {
                self.stats_differ("stats", &stats, expected, &wrong);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Asserts a snapshot taken earlier with [`Fixture::stats`] (`when` says when).
    pub fn assert_snapshot(
        &self,
        when: &str,
        stats: &BTreeMap<String, u64>,
        expected: &[(&str, u64)],
    ) {
        let ranges: Vec<(&str, RangeInclusive<u64>)> =
            expected.iter().map(|(n, v)| (*n, *v..=*v)).collect();
        let wrong = mismatches(stats, &ranges);
        if !wrong.is_empty() {
            self.stats_differ(&format!("stats {when}"), stats, &ranges, &wrong);
        }
    }

    fn stats_differ(
        &self,
        what: &str,
        stats: &BTreeMap<String, u64>,
        expected: &[(&str, RangeInclusive<u64>)],
        wrong: &[String],
    ) -> ! {
        panic!(
            "{}: {what} differ from Envoy's expected values:\n{}\nnon-zero stats of these clusters:\n{}",
            self.flavor.name(),
            wrong.join("\n"),
            nonzero(stats, expected).join("\n")
        )
    }

    /// Polls (up to `deadline`) until the stat `name` is in `range`; returns how long that
    /// took. Panics with the last value otherwise.
    pub async fn wait_stat(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
        deadline: Duration,
    ) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let value = self.stats().await.get(name).copied();
            if value.is_some_and(|v| range.contains(&v)) {
                return started.elapsed();
            }
            if started.elapsed() >= deadline {
                panic!(
                    "{}: {name} did not reach {} within {deadline:?} (last value {value:?})",
                    self.flavor.name(),
                    show_range(&range)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `health_flags` of every host of `cluster` in `/clusters`
    /// (`<cluster>::<ip:port>::health_flags::<flags>`).
    pub async fn health_flags(&self, cluster: &str) -> BTreeMap<SocketAddr, String> {
        let (status, body) = self.proxy.admin_get("/clusters").await;
        assert_eq!(status, 200, "{}: GET /clusters: {body}", self.flavor.name());
        let prefix = format!("{cluster}::");
        body.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (addr, flags) = rest.split_once("::health_flags::")?;
                Some((addr.parse().ok()?, flags.trim().to_owned()))
            })
            .collect()
    }
}

/// The stats not in their expected range, one line each. Envoy creates some stats
/// (per-code counters) only when first charged, so a missing stat counts as 0.
fn mismatches(
    stats: &BTreeMap<String, u64>,
    expected: &[(&str, RangeInclusive<u64>)],
) -> Vec<String> {
    expected
        .iter()
        .filter(|(name, range)| !range.contains(stats.get(*name).unwrap_or(&0)))
        .map(|(name, range)| {
            format!(
                "  {name}: expected {}, got {:?}",
                show_range(range),
                stats.get(*name)
            )
        })
        .collect()
}

/// Evidence for a report: every non-zero stat of the clusters named in `expected`.
fn nonzero(stats: &BTreeMap<String, u64>, expected: &[(&str, RangeInclusive<u64>)]) -> Vec<String> {
    let prefixes: Vec<&str> = expected
        .iter()
        .filter_map(|(n, _)| {
            let rest = n.strip_prefix("cluster.")?;
            let end = "cluster.".len() + rest.find('.')? + 1;
            Some(&n[..end])
        })
        .collect();
    stats
        .iter()
        .filter(|(n, v)| **v != 0 && prefixes.iter().any(|p| n.starts_with(p)))
        .filter(|(n, _)| !n.ends_with(".version") && !n.ends_with(".update_time"))
        .map(|(n, v)| format!("  {n}: {v}"))
        .collect()
}

fn show_range(r: &RangeInclusive<u64>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else if *r.end() == u64::MAX {
        format!(">= {}", r.start())
    } else {
        format!("{}..={}", r.start(), r.end())
    }
}

/// A free port for the data plane's listener, below the kernel's ephemeral port range.
///
/// `free_port()` hands out an ephemeral port and releases it at once; legate-cp or an upstream
/// binding port 0 before the data plane binds the listener can be given the same port (seen:
/// legate-proxy NACKed the listener with "address already in use", legate-cp's xDS port). The
/// kernel never hands out a port below the ephemeral range for port 0, so here only another
/// explicit choice could collide, and a random one among thousands is checked bindable.
fn listener_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u16, low.saturating_sub(10_000).max(1));
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        let port = first + (h.finish() % u64::from(span)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {first}..{}", first + span)
}

/// The bootstrap of [`Fixture::start_static`] (JSON, which Envoy reads as YAML).
fn static_bootstrap(
    port: u16,
    endpoints: &[SocketAddr],
    hcm: serde_json::Value,
    cluster: serde_json::Value,
) -> String {
    use serde_json::json;
    let manager = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": AMBASSADOR,
        "route_config": {"name": AMBASSADOR, "virtual_hosts": [{
            "name": AMBASSADOR, "domains": ["*"],
            "routes": [{"match": {"prefix": "/payments/"},
                        "route": {"cluster": "payments", "prefix_rewrite": "/"}}]
        }]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    });
    let manager = merged(manager, &hcm);
    let lb_endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|e| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": e.ip().to_string(), "port_value": e.port()}}}})
        })
        .collect();
    let payments = json!({
        "name": "payments", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "payments",
                            "endpoints": [{"lb_endpoints": lb_endpoints}]}
    });
    let payments = merged(payments, &cluster);
    json!({
        "node": {"id": STATIC_NODE_ID, "cluster": STATIC_NODE_CLUSTER},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": AMBASSADOR,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager
                }]}]
            }],
            "clusters": [payments]
        }
    })
    .to_string()
}

/// Gives a (wrong) retry of the request `id` [`NO_RETRY_WAIT`] to show up, then asserts
/// `up` saw exactly one attempt of it.
pub async fn assert_not_retried(up: &Upstream, id: &str) {
    tokio::time::sleep(NO_RETRY_WAIT).await;
    assert_eq!(up.log().count(id), 1, "{:?}", up.log().attempts(id));
}

/// What each of `attempts` ended with, in order.
pub fn outcomes(attempts: &[Attempt]) -> Vec<Outcome> {
    attempts.iter().map(|a| a.outcome).collect()
}

/// `health_flags` value of a host ejected by outlier detection.
pub const FAILED_OUTLIER_CHECK: &str = "/failed_outlier_check";

/// The x-test-id of one request of a scenario, unique per flavour.
pub fn test_id(flavor: Flavor, what: &str) -> String {
    format!("{}-{what}", flavor.name())
}

/// Upper bound of a [`raw_exchange`].
const RAW_EXCHANGE_DEADLINE: Duration = Duration::from_secs(15);

/// One step of a raw exchange.
pub enum Step<'a> {
    /// Write these bytes.
    Send(&'a [u8]),
    /// Wait this long.
    Wait(Duration),
}

/// Runs `steps` on a new connection, then reads until the proxy closes it. Returns what was
/// read. A write the proxy refuses (it closed the connection) ends the steps.
pub async fn raw_exchange(fx: &Fixture, steps: &[Step<'_>]) -> String {
    raw_exchange_timed(fx, steps).await.0
}

/// Like [`raw_exchange`], also returning how long after connecting the proxy closed.
pub async fn raw_exchange_timed(fx: &Fixture, steps: &[Step<'_>]) -> (String, Duration) {
    let exchange = async {
        let start = tokio::time::Instant::now();
        let mut s = TcpStream::connect(fx.listener).await?;
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if s.write_all(bytes).await.is_err() {
                        break;
                    }
                }
                Step::Wait(d) => tokio::time::sleep(*d).await,
            }
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        Ok::<_, std::io::Error>((text, start.elapsed()))
    };
    tokio::time::timeout(RAW_EXCHANGE_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{}: the proxy never closed", fx.flavor.name()))
        .expect("raw exchange")
}

/// A raw upstream: answers each request with the bytes `respond(path)` gives, then closes.
pub async fn raw_upstream(
    respond: fn(&str) -> Vec<u8>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw upstream");
    let addr = listener.local_addr().expect("raw upstream address");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                let _ = s.write_all(&respond(&path)).await;
            });
        }
    });
    (addr, task)
}

/// `base` with the keys of the object `extra` set over its own (a JSON merge one level deep).
pub fn merged(mut base: serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

/// A connection manager (for [`Fixture::start_static`]) whose one virtual host serves
/// `domains` with `routes`, with `settings` set over it.
pub fn manager(
    domains: &[&str],
    routes: &[serde_json::Value],
    settings: &serde_json::Value,
) -> serde_json::Value {
    let hcm = serde_json::json!({"route_config": {"name": "app", "virtual_hosts": [{
        "name": "app", "domains": domains, "routes": routes}]}});
    merged(hcm, settings)
}

/// The `node.id` of [`Fixture::start_static`]'s bootstrap.
pub const STATIC_NODE_ID: &str = "conformance-node";
/// The `node.cluster` of [`Fixture::start_static`]'s bootstrap.
pub const STATIC_NODE_CLUSTER: &str = "conformance";
