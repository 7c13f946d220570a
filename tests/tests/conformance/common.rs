//! The fixture every scenario runs in: a legate-cp YAML file, `legate-cp serve`, one data
//! plane (Envoy or legate-proxy) started from `legate-cp bootstrap envoy`, and helpers to
//! send requests and read `/stats` and `/clusters` by Envoy's names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use legate_e2e::upstream::Upstream;
use legate_e2e::{ControlPlane, Envoy, Flavor, HttpResponse, free_port, http_get_with_headers};
use tempfile::TempDir;

/// Upper bound of every wait for configuration to arrive.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How long counters may take to reach their final values after the client has its
/// response (stats are updated when the upstream stream completes, which may be just after).
pub const STATS_SETTLE: Duration = Duration::from_secs(3);

/// The ambassador every fixture serves; Envoy's stats read `http.app.*`.
pub const AMBASSADOR: &str = "app";

/// Runs one scenario fn as two tests, `<name>_envoy` and `<name>_legate`, so a failure
/// names the proxy. Assertions are identical: the scenario only gets the flavour.
macro_rules! flavors {
    ($scenario:ident, $envoy:ident, $legate:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $envoy() {
            $scenario(legate_e2e::Flavor::Envoy).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $legate() {
            $scenario(legate_e2e::Flavor::Legate).await
        }
    };
    ($scenario:ident, $envoy:ident, $legate:ident, ignore_legate = $why:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $envoy() {
            $scenario(legate_e2e::Flavor::Envoy).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = $why]
        async fn $legate() {
            $scenario(legate_e2e::Flavor::Legate).await
        }
    };
}
pub(crate) use flavors;

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
    _probe: Upstream,
    _cp: ControlPlane,
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
        let port = free_port();
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
            _probe: probe,
            _cp: cp,
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

    /// `GET path` with `headers` over a new HTTP/1.1 connection; panics if the request
    /// fails at the transport level.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get_with_headers(self.listener, path, None, headers)
            .await
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.flavor.name()))
    }

    /// Every counter and gauge of `/stats` (histogram lines are left out).
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        let (status, body) = self.proxy.admin_get("/stats").await;
        assert_eq!(status, 200, "{}: GET /stats: {body}", self.flavor.name());
        body.lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
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

/// `health_flags` value of a host ejected by outlier detection.
pub const FAILED_OUTLIER_CHECK: &str = "/failed_outlier_check";

/// The x-test-id of one request of a scenario, unique per flavour.
pub fn test_id(flavor: Flavor, what: &str) -> String {
    format!("{}-{what}", flavor.name())
}
