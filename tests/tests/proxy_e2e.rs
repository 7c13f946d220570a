//! End to end, about legate-proxy itself: bootstrap errors and `--mode validate`
//! (checked against real Envoy on the same files), NACK of an unsupported
//! resource as seen by the control plane, surviving a control-plane restart
//! (SotW and delta), and the admin endpoints (side by side with real Envoy).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::envoy::config::core::v3::HealthCheck;
use envoy_types::pb::envoy::config::core::v3::health_check::{HealthChecker, HttpHealthCheck};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use legate_control_plane::bootstrap::EnvoyBootstrap;
use legate_control_plane::cache::SnapshotCache;
use legate_control_plane::server::XdsServer;
use legate_control_plane::server::registry::Registry;
use legate_control_plane::translate::{self, Resources};
use legate_e2e::upstream::Upstream;
use legate_e2e::{
    ConfigFile, ControlPlane, Envoy, Flavor, HttpResponse, Yaml, cargo_bin, envoy_bin, free_port,
    http_get, http_send, run_with_deadline, wait_until,
};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;

/// Upper bound of every wait in this file.
const DEADLINE: Duration = Duration::from_secs(20);

/// How long a valid configuration change may take to show in the proxy's
/// routing while it is connected.
const PROPAGATION: Duration = Duration::from_secs(10);

/// How long the proxy may take, after the control plane is back, to reconnect
/// and route by the new configuration (its reconnect back-off starts at
/// 500 ms with full jitter, doubling up to 30 s).
const RECONNECT: Duration = Duration::from_secs(20);

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// The four types an ambassador's data plane subscribes to.
const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// The `@type`s of Envoy's `/config_dump` for an ADS-only bootstrap, in order.
const CONFIG_DUMP_TYPES: [&str; 6] = [
    "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
    "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
    "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
];

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

/// The resources legate-cp would serve to ambassador `amb` of `yaml`.
trait Translate {
    fn translate(&self, amb: &str) -> Resources;
}

impl Translate for Yaml {
    fn translate(&self, amb: &str) -> Resources {
        let config =
            legate_control_plane::config::load_str(Path::new("inline.yaml"), &self.render())
                .unwrap_or_else(|errors| {
                    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    panic!("invalid test config:\n{}", errors.join("\n"))
                });
        let ambassador = config
            .ambassadors
            .get(amb)
            .unwrap_or_else(|| panic!("no ambassador {amb} in the test config"));
        translate::ambassador(&config, ambassador)
    }
}

// ---------------------------------------------------------------------------
// Requests and stats
// ---------------------------------------------------------------------------

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET path` on `listener`; panics if the request fails at the transport level.
async fn get(listener: SocketAddr, path: &str) -> HttpResponse {
    http_get(listener, path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {listener}: {e}"))
}

/// The upstream instance that answered (checked against the JSON body).
fn instance(resp: &HttpResponse) -> Option<String> {
    let header = resp.header("x-upstream-instance")?.to_owned();
    assert_eq!(resp.json()["instance"], header.as_str(), "{}", resp.body);
    Some(header)
}

/// Asserts `GET path` answers 200 from `upstream`.
async fn assert_routed(listener: SocketAddr, path: &str, upstream: &str) {
    let resp = get(listener, path).await;
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.body);
    assert_eq!(
        instance(&resp).as_deref(),
        Some(upstream),
        "GET {path}: {}",
        resp.body
    );
}

/// Polls (within `deadline`) until `GET path` answers 200 from `upstream`.
async fn wait_for_upstream(
    proxy: &Envoy,
    listener: SocketAddr,
    path: &str,
    upstream: &str,
    deadline: Duration,
) {
    let what = format!("GET {path} on {listener} to reach upstream {upstream}");
    proxy
        .process()
        .wait_until(&what, deadline, || async {
            let resp = http_get(listener, path, None).await.ok()?;
            (resp.status == 200 && instance(&resp).as_deref() == Some(upstream)).then_some(())
        })
        .await;
}

/// Polls (within [`DEADLINE`]) until the counter or gauge `name` is `value`.
async fn wait_stat(proxy: &Envoy, name: &str, value: u64) {
    let what = format!("{name} to be {value}");
    proxy
        .process()
        .wait_until(&what, DEADLINE, || async {
            (proxy.stat(name).await == Some(value)).then_some(())
        })
        .await;
}

/// `name: value` lines of a `/stats` text body.
fn stats_lines(body: &str) -> BTreeMap<&str, &str> {
    body.lines().filter_map(|l| l.split_once(": ")).collect()
}

/// Runs `bin args…` to completion → (exit code, stdout, stderr).
fn run<S: AsRef<OsStr>>(bin: &Path, args: &[S]) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let out = run_with_deadline(&mut cmd, DEADLINE).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status
            .code()
            .unwrap_or_else(|| panic!("{cmd:?} was killed by a signal ({})", out.status)),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn legate_proxy_bin() -> PathBuf {
    cargo_bin("legate-proxy", "legate-proxy")
}

// ---------------------------------------------------------------------------
// 1. Bootstrap errors and --mode validate
// ---------------------------------------------------------------------------

/// `bin --mode <mode> -c <path>` → (exit code, stdout, stderr).
fn run_mode(bin: &Path, mode: &str, path: &Path) -> (i32, String, String) {
    run(
        bin,
        &[
            OsStr::new("--mode"),
            mode.as_ref(),
            "-c".as_ref(),
            path.as_os_str(),
        ],
    )
}

#[test]
fn bootstrap_errors_and_validate() {
    let proxy = legate_proxy_bin();
    let envoy = envoy_bin();
    let cp = cargo_bin("legate-control-plane", "legate-cp");
    let dir = TempDir::with_prefix("legate-proxy-e2e-bootstrap-").expect("temp dir");
    let xds = localhost(free_port()).to_string();
    let args = ["bootstrap", "envoy", "--node", "x", "--xds", &xds];
    let (code, good_text, stderr) = run(&cp, &[&args[..], &["--admin", "127.0.0.1:0"]].concat());
    assert_eq!(code, 0, "legate-cp bootstrap envoy: {stderr}");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, &good_text).expect("writing good.yaml");

    // The bootstrap legate-cp prints is valid for both.
    let ok_line = format!("configuration '{}' OK", good.display());
    for (name, bin) in [("legate-proxy", &proxy), ("envoy", &envoy)] {
        let (code, stdout, stderr) = run_mode(bin, "validate", &good);
        assert_eq!(
            code, 0,
            "{name} --mode validate on legate-cp's bootstrap\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stdout.lines().any(|l| l == ok_line),
            "{name}: no line {ok_line:?} in stdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }

    // The good bootstrap with `from` (which occurs once) replaced by `to`, in `name`.
    let variant = |name: &str, from: &str, to: &str| {
        let count = good_text.matches(from).count();
        assert_eq!(count, 1, "{from:?} in:\n{good_text}");
        let path = dir.path().join(name);
        std::fs::write(&path, good_text.replace(from, to)).expect("writing bootstrap variant");
        path
    };

    // An unknown field: the file, the field path and a suggestion, in
    // validate and serve mode.
    let typo = variant("typo.yaml", "connect_timeout: 1s", "conect_timeout: 1s");
    let expected = format!(
        "{}: static_resources.clusters[0]: unknown field `conect_timeout` \
         (did you mean `connect_timeout`?)",
        typo.display()
    );
    for mode in ["validate", "serve"] {
        let (code, stdout, stderr) = run_mode(&proxy, mode, &typo);
        assert_eq!(
            code, 1,
            "--mode {mode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stderr.contains(&expected),
            "--mode {mode}: {expected:?} not in stderr:\n{stderr}"
        );
        assert!(!stdout.contains("OK"), "--mode {mode}: {stdout}");
    }
    // Envoy rejects the same file, naming the same path.
    let (code, stdout, stderr) = run_mode(&envoy, "validate", &typo);
    let envoy_out = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "envoy on typo.yaml:\n{envoy_out}");
    assert!(
        envoy_out.contains("static_resources.clusters[0]") && envoy_out.contains("conect_timeout"),
        "envoy on typo.yaml:\n{envoy_out}"
    );

    // ADS over REST is not supported.
    let rest = variant("rest.yaml", "api_type: GRPC", "api_type: REST");
    let (code, stdout, stderr) = run_mode(&proxy, "validate", &rest);
    assert_eq!(code, 1, "rest.yaml\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let expected = format!(
        "{}: dynamic_resources.ads_config.api_type: REST",
        rest.display()
    );
    assert!(
        stderr.contains(&expected),
        "rest.yaml: {expected:?} not in stderr:\n{stderr}"
    );
    // Envoy rejects it too (for its own reason: REST with gRPC services).
    let (code, stdout, stderr) = run_mode(&envoy, "validate", &rest);
    assert_eq!(
        code, 1,
        "envoy on rest.yaml\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // No -c (nor --config-yaml): exit 1, naming both flags.
    for args in [&[][..], &["--mode", "validate"][..]] {
        for (name, bin) in [("legate-proxy", &proxy), ("envoy", &envoy)] {
            let (code, stdout, stderr) = run(bin, args);
            assert_eq!(
                code, 1,
                "{name} {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
            assert!(
                stderr.contains("--config-path") && stderr.contains("--config-yaml"),
                "{name} {args:?}: stderr:\n{stderr}"
            );
        }
    }

    // An unknown flag: exit 1 with usage, for both.
    let args = [
        OsStr::new("--no-such-flag"),
        "-c".as_ref(),
        good.as_os_str(),
    ];
    let (code, stdout, stderr) = run(&proxy, &args);
    assert_eq!(
        code, 1,
        "unknown flag\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("--no-such-flag"), "stderr:\n{stderr}");
    assert!(stderr.contains("Usage: legate-proxy"), "stderr:\n{stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");
    let (code, stdout, stderr) = run(&envoy, &args);
    let envoy_out = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "envoy, unknown flag:\n{envoy_out}");
    assert!(
        envoy_out.contains("--no-such-flag") && envoy_out.contains("USAGE"),
        "envoy, unknown flag:\n{envoy_out}"
    );
}

// ---------------------------------------------------------------------------
// 2. NACK of an unsupported cluster, seen in the control plane's registry
// ---------------------------------------------------------------------------

/// legate-cp's xDS server running in this process, on 127.0.0.1:<port 0>.
struct InProcessCp {
    cache: Arc<SnapshotCache>,
    registry: Arc<Registry>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessCp {
    async fn start() -> InProcessCp {
        let cache = Arc::new(SnapshotCache::new());
        let registry = Arc::new(Registry::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding xDS");
        let addr = listener.local_addr().expect("xDS address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = XdsServer::new(cache.clone(), registry.clone());
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        InProcessCp {
            cache,
            registry,
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// Publishes `resources` for `amb` as `generation`.
    fn publish(&self, amb: &str, resources: Resources, generation: u64) {
        self.cache
            .publish_resources(BTreeMap::from([(amb.to_owned(), resources)]), generation);
    }

    /// `/clients`, as legate-cp's admin renders it.
    fn clients(&self) -> Value {
        serde_json::to_value(self.registry.snapshot()).expect("registry serializes")
    }

    /// The only client of `node_cluster`, if connected.
    fn client(&self, node_cluster: &str) -> Option<Value> {
        let clients = self.clients();
        let matching: Vec<&Value> = clients
            .as_array()
            .expect("/clients is an array")
            .iter()
            .filter(|c| c["node_cluster"] == node_cluster)
            .collect();
        assert!(
            matching.len() <= 1,
            "more than one client of {node_cluster}: {clients:#}"
        );
        matching.first().map(|c| (*c).clone())
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(result) => result
                .expect("xDS server task")
                .expect("xDS server stopped cleanly"),
            Err(_) => self.task.abort(),
        }
    }
}

/// True when the client was sent every one of [`TYPES`] and ACKed what it was
/// sent last.
fn synced(client: &Value) -> bool {
    TYPES.iter().all(|t| {
        let status = &client["types"][t];
        let sent = status["sent_version"].as_str().unwrap_or_default();
        !sent.is_empty() && status["acked_version"].as_str() == Some(sent)
    })
}

/// The entry of dynamic cluster `name` in a `/config_dump`.
fn dumped_cluster<'a>(dump: &'a Value, name: &str) -> Option<&'a Value> {
    dump["configs"]
        .as_array()?
        .iter()
        .find(|c| c["@type"] == CONFIG_DUMP_TYPES[1])?["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .find(|c| c["cluster"]["name"] == name)
}

/// `res` with the cluster `name` changed by `f`.
fn with_cluster(mut res: Resources, name: &str, f: impl FnOnce(&mut ClusterProto)) -> Resources {
    let cluster = res
        .clusters
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name} in the translated resources"));
    f(cluster);
    res
}

/// A change to a cluster proto.
type ClusterChange = fn(&mut ClusterProto);

/// An unsupported cluster setting: `lb_policy: CLUSTER_PROVIDED`.
fn set_cluster_provided_lb(c: &mut ClusterProto) {
    c.lb_policy = LbPolicy::ClusterProvided as i32;
}

/// An unsupported cluster setting: an HTTP health check.
fn add_health_check(c: &mut ClusterProto) {
    let seconds = |seconds| Some(PbDuration { seconds, nanos: 0 });
    c.health_checks = vec![HealthCheck {
        timeout: seconds(1),
        interval: seconds(5),
        health_checker: Some(HealthChecker::HttpHealthCheck(HttpHealthCheck {
            path: "/healthz".into(),
            ..Default::default()
        })),
        ..Default::default()
    }];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_unsupported_cluster_sotw() {
    nack_unsupported_cluster(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_unsupported_cluster_delta() {
    nack_unsupported_cluster(true).await;
}

async fn nack_unsupported_cluster(delta: bool) {
    let kind = if delta { "ads-delta" } else { "ads-sotw" };
    let amb = "checkout";
    let p1 = Upstream::start("nack-p1").await.expect("upstream");
    let orders = Upstream::start("nack-orders").await.expect("upstream");
    let port = free_port();
    let listener = localhost(port);
    let config = Yaml::default()
        .service("payments", &[p1.addr])
        .ambassador(amb, port);
    let good = config.translate(amb);

    let cp = InProcessCp::start().await;
    cp.publish(amb, good.clone(), 1);
    let bootstrap = EnvoyBootstrap {
        node: amb.into(),
        id_suffix: format!("nack-{kind}"),
        xds_host: "127.0.0.1".into(),
        xds_port: cp.addr.port(),
        admin_host: "127.0.0.1".into(),
        admin_port: 0,
        delta,
        xds_tls: None,
    }
    .to_yaml()
    .expect("bootstrap YAML");
    let proxy = Envoy::start_flavor(Flavor::Legate, &bootstrap, &[]).await;
    assert_routed(listener, "/payments/a", "nack-p1").await;

    let client = proxy
        .process()
        .wait_until("the proxy to ACK every type", DEADLINE, || async {
            let c = cp.client(amb)?;
            (c["kind"] == kind && c["ambassador"] == amb && synced(&c)).then_some(c)
        })
        .await;
    let acked = client["types"][CLUSTER]["acked_version"].clone();
    let dump = proxy.config_dump().await;
    let before = dumped_cluster(&dump, "payments")
        .unwrap_or_else(|| panic!("no dynamic cluster payments: {dump:#}"))
        .clone();
    assert_eq!(
        proxy.stat("cluster_manager.cds.update_rejected").await,
        Some(0)
    );
    let successes = proxy
        .stat("cluster_manager.cds.update_success")
        .await
        .expect("cluster_manager.cds.update_success");

    // Two unsupported settings, one generation each: each is NACKed with the
    // cluster and the field named, and the proxy keeps its previous cluster.
    let bad: [(&str, ClusterChange); 2] = [
        ("lb_policy", set_cluster_provided_lb),
        ("health_checks", add_health_check),
    ];
    for (i, (field, change)) in bad.into_iter().enumerate() {
        let nacks = i as u64 + 1;
        cp.publish(
            amb,
            with_cluster(good.clone(), "payments", change),
            2 + i as u64,
        );
        let what = format!("the proxy to NACK the cluster with an unsupported {field}");
        let client = proxy
            .process()
            .wait_until(&what, DEADLINE, || async {
                let c = cp.client(amb)?;
                (c["types"][CLUSTER]["nacks"] == nacks).then_some(c)
            })
            .await;
        let cds = &client["types"][CLUSTER];
        let message = cds["last_nack"].as_str().unwrap_or_default();
        assert!(message.contains("payments"), "{client:#}");
        assert!(
            message.contains(field),
            "{field} not in the NACK: {client:#}"
        );
        assert_eq!(cds["nacked_version"], cds["sent_version"], "{client:#}");
        assert_eq!(cds["acked_version"], acked, "{client:#}");
        eprintln!("{kind}: the proxy NACKed with {message:?}");
        wait_stat(&proxy, "cluster_manager.cds.update_rejected", nacks).await;
        let (_, stats) = proxy.admin_get("/stats").await;
        let line = format!("cluster_manager.cds.update_rejected: {nacks}");
        assert!(
            stats.lines().any(|l| l == line),
            "no {line:?} in /stats:\n{stats}"
        );

        // Traffic keeps flowing, by the previous cluster.
        for n in 0..20 {
            assert_routed(
                listener,
                &format!("/payments/after-nack-{i}-{n}"),
                "nack-p1",
            )
            .await;
        }
        let dump = proxy.config_dump().await;
        let now = dumped_cluster(&dump, "payments")
            .unwrap_or_else(|| panic!("no dynamic cluster payments: {dump:#}"));
        // The whole entry: the cluster as first received (a rejected
        // `lb_policy`/`health_checks` would show in it) and its `last_updated`.
        assert_eq!(now, &before, "the NACKed cluster replaced the active one");
        assert!(now["cluster"].get(field).is_none(), "{now:#}");
    }
    assert_eq!(
        proxy.stat("cluster_manager.cds.update_success").await,
        Some(successes),
        "a NACKed update counted as a success"
    );

    // The stream is not wedged: a valid change (a new service) is applied.
    let fixed = config.clone().service("orders", &[orders.addr]);
    cp.publish(amb, fixed.translate(amb), 4);
    wait_for_upstream(&proxy, listener, "/orders/b", "nack-orders", PROPAGATION).await;
    assert_routed(listener, "/payments/c", "nack-p1").await;
    let client = proxy
        .process()
        .wait_until(
            "the proxy to ACK the fixed configuration",
            DEADLINE,
            || async {
                let c = cp.client(amb)?;
                synced(&c).then_some(c)
            },
        )
        .await;
    assert_eq!(client["types"][CLUSTER]["nacks"], 2, "{client:#}");
    assert_ne!(
        client["types"][CLUSTER]["acked_version"], acked,
        "{client:#}"
    );
    assert_eq!(
        proxy.stat("cluster_manager.cds.update_rejected").await,
        Some(2)
    );
    assert!(
        proxy
            .stat("cluster_manager.cds.update_success")
            .await
            .is_some_and(|n| n > successes)
    );

    drop(proxy);
    cp.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Control-plane restart
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_sotw() {
    control_plane_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_delta() {
    control_plane_restart(true).await;
}

async fn control_plane_restart(delta: bool) {
    let tag = if delta { "delta" } else { "sotw" };
    let p1 = Upstream::start(&format!("restart-{tag}-p1"))
        .await
        .expect("upstream");
    let p2 = Upstream::start(&format!("restart-{tag}-p2"))
        .await
        .expect("upstream");
    let orders = Upstream::start(&format!("restart-{tag}-orders"))
        .await
        .expect("upstream");
    let port = free_port();
    let listener = localhost(port);
    let xds = localhost(free_port());
    let config = Yaml::default()
        .service("payments", &[p1.addr])
        .ambassador("checkout", port);
    let file = ConfigFile::new(&config.render());

    let cp = ControlPlane::start_on(&file.path, xds).await;
    let proxy =
        Envoy::start_flavor(Flavor::Legate, &cp.bootstrap_envoy("checkout", delta), &[]).await;
    assert_routed(listener, "/payments/a", &p1.name).await;
    wait_stat(&proxy, "control_plane.connected_state", 1).await;

    // The control plane goes away: the proxy notices and keeps serving.
    drop(cp);
    wait_stat(&proxy, "control_plane.connected_state", 0).await;
    for n in 0..20 {
        assert_routed(listener, &format!("/payments/outage-{n}"), &p1.name).await;
    }

    let (status, body) = proxy.admin_get("/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "LIVE\n"),
        "/ready during the outage"
    );

    // Meanwhile the configuration changes: a second payments endpoint and a
    // new service.
    let changed = Yaml::default()
        .service("payments", &[p1.addr, p2.addr])
        .service("orders", &[orders.addr])
        .ambassador("checkout", port);
    file.replace(&changed.render());

    let restarted = Instant::now();
    let cp = ControlPlane::start_on(&file.path, xds).await;
    let what = "the proxy to reconnect and route to the new service and endpoint";
    proxy
        .process()
        .wait_until(
            what,
            RECONNECT.saturating_sub(restarted.elapsed()),
            || async {
                if proxy.stat("control_plane.connected_state").await != Some(1) {
                    return None;
                }
                let resp = http_get(listener, "/orders/b", None).await.ok()?;
                if resp.status != 200 || instance(&resp).as_deref() != Some(orders.name.as_str()) {
                    return None;
                }
                // Round robin over p1 and p2: p2 answers within a few requests.
                for _ in 0..4 {
                    let resp = http_get(listener, "/payments/c", None).await.ok()?;
                    if resp.status == 200 && instance(&resp).as_deref() == Some(p2.name.as_str()) {
                        return Some(());
                    }
                }
                None
            },
        )
        .await;
    eprintln!(
        "legate-proxy ({tag}) reconnected and applied the change {:?} after the control plane restarted",
        restarted.elapsed()
    );
    assert_eq!(proxy.stat("control_plane.connected_state").await, Some(1));
    let kind = if delta { "ads-delta" } else { "ads-sotw" };
    let client = cp
        .process()
        .wait_until(
            "the proxy to ACK every type on the new control plane",
            DEADLINE,
            || async {
                let clients = cp.clients().await;
                let c = clients
                    .as_array()?
                    .iter()
                    .find(|c| c["node_cluster"] == "checkout")?
                    .clone();
                (c["kind"] == kind && synced(&c)).then_some(c)
            },
        )
        .await;
    assert_eq!(client["ambassador"], "checkout", "{client:#}");
    let mut seen = BTreeSet::new();
    for n in 0..10 {
        let resp = get(listener, &format!("/payments/d-{n}")).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        seen.insert(instance(&resp).expect("an upstream answered"));
    }
    assert_eq!(seen, BTreeSet::from([p1.name.clone(), p2.name.clone()]));
}

// ---------------------------------------------------------------------------
// 4. Admin endpoints, side by side with Envoy
// ---------------------------------------------------------------------------

/// Requests sent through each data plane in the admin tests.
const ADMIN_REQUESTS: u64 = 7;

/// legate-cp with two ambassadors calling `payments` (one upstream), legate-proxy
/// serving `checkout` and Envoy serving `mirror`, each after the same
/// [`ADMIN_REQUESTS`] requests to payments (all checked to be 200 from the
/// upstream, the first one right after the data plane reported LIVE).
struct SideBySide {
    p1: Upstream,
    legate: Envoy,
    envoy: Envoy,
    _cp: ControlPlane,
    _file: ConfigFile,
}

/// The ambassador each flavour serves in [`SideBySide`].
fn ambassador_of(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Legate => "checkout",
        Flavor::Envoy => "mirror",
    }
}

impl SideBySide {
    async fn start(tag: &str) -> SideBySide {
        let p1 = Upstream::start(&format!("{tag}-p1"))
            .await
            .expect("upstream");
        let legate_port = free_port();
        let envoy_port = free_port();
        let config = Yaml::default()
            .service("payments", &[p1.addr])
            .ambassador(ambassador_of(Flavor::Legate), legate_port)
            .ambassador(ambassador_of(Flavor::Envoy), envoy_port);
        let file = ConfigFile::new(&config.render());
        let cp = ControlPlane::start(&file.path).await;
        let mut started = Vec::new();
        for (flavor, port) in [(Flavor::Legate, legate_port), (Flavor::Envoy, envoy_port)] {
            let bootstrap = cp.bootstrap_envoy(ambassador_of(flavor), false);
            let dp = Envoy::start_flavor(flavor, &bootstrap, &[]).await;
            for n in 0..ADMIN_REQUESTS {
                assert_routed(localhost(port), &format!("/payments/admin-{n}"), &p1.name).await;
            }
            settle(flavor, &dp).await;
            started.push(dp);
        }
        assert_eq!(p1.requests(), 2 * ADMIN_REQUESTS);
        let envoy = started.pop().expect("envoy");
        let legate = started.pop().expect("legate-proxy");
        SideBySide {
            p1,
            legate,
            envoy,
            _cp: cp,
            _file: file,
        }
    }
}

/// Waits until the counters of the requests sent are final: downstream
/// counters settle when the stream completes, which may be just after the
/// client has the response.
async fn settle(flavor: Flavor, dp: &Envoy) {
    let amb = ambassador_of(flavor);
    let wanted = ADMIN_REQUESTS.to_string();
    let what = format!(
        "{} /stats to count {ADMIN_REQUESTS} requests with no connection left open",
        flavor.name()
    );
    let expected = [
        (
            "cluster.payments.upstream_rq_total".to_owned(),
            wanted.as_str(),
        ),
        (format!("http.{amb}.downstream_rq_2xx"), wanted.as_str()),
        (
            format!("http.{amb}.downstream_rq_completed"),
            wanted.as_str(),
        ),
        (format!("http.{amb}.downstream_cx_active"), "0"),
    ];
    dp.process()
        .wait_until(&what, DEADLINE, || async {
            let (status, body) = dp.admin_get("/stats").await;
            let lines = stats_lines(&body);
            (status == 200
                && expected
                    .iter()
                    .all(|(name, value)| lines.get(name.as_str()) == Some(value)))
            .then_some(())
        })
        .await;
}

/// Checks one data plane's admin API after [`SideBySide::start`]; returns
/// what is compared with the other flavour.
async fn check_admin(flavor: Flavor, dp: &Envoy, upstream: &Upstream) -> Observed {
    let name = flavor.name();
    let amb = ambassador_of(flavor);
    let n = ADMIN_REQUESTS;

    // /ready
    let (status, body) = dp.admin_get("/ready").await;
    assert_eq!((status, body.as_str()), (200, "LIVE\n"), "{name} /ready");

    // /server_info
    let info = dp.admin_json("/server_info").await;
    assert_eq!(info["state"], "LIVE", "{name} /server_info: {info:#}");
    assert_eq!(
        info["command_line_options"]["concurrency"], 1,
        "{name} /server_info: {info:#}"
    );

    // /stats
    let (status, body) = dp.admin_get("/stats").await;
    assert_eq!(status, 200, "{name} /stats");
    let lines = stats_lines(&body);
    let wanted = n.to_string();
    assert_eq!(
        lines.get("cluster.payments.upstream_rq_total"),
        Some(&wanted.as_str()),
        "{name} /stats:\n{body}"
    );
    assert_eq!(
        lines.get(format!("http.{amb}.downstream_rq_2xx").as_str()),
        Some(&wanted.as_str()),
        "{name} /stats:\n{body}"
    );
    assert!(
        lines
            .get("cluster_manager.cds.update_success")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n >= 1),
        "{name} /stats:\n{body}"
    );
    assert_eq!(
        lines.get("control_plane.connected_state"),
        Some(&"1"),
        "{name} /stats:\n{body}"
    );

    // /stats?format=json
    let json = dp.admin_json("/stats?format=json").await;
    let counter = json["stats"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} /stats?format=json has no stats array: {json:#}"))
        .iter()
        .find(|s| s["name"] == "cluster.payments.upstream_rq_total")
        .unwrap_or_else(|| panic!("{name} /stats?format=json has no upstream_rq_total"));
    assert_eq!(counter["value"], n, "{name}: {counter:#}");

    // /stats/prometheus
    let (status, prom) = dp.admin_get("/stats/prometheus").await;
    assert_eq!(status, 200, "{name} /stats/prometheus");
    let line = format!("envoy_cluster_upstream_rq_total{{envoy_cluster_name=\"payments\"}} {n}");
    assert!(
        prom.lines().any(|l| l == line),
        "{name}: no line {line:?} in /stats/prometheus:\n{prom}"
    );

    // /clusters
    let (status, clusters) = dp.admin_get("/clusters").await;
    assert_eq!(status, 200, "{name} /clusters");
    let host = format!("payments::{}::", upstream.addr);
    for want in [
        format!("{host}rq_total::{n}"),
        format!("{host}health_flags::healthy"),
    ] {
        assert!(
            clusters.lines().any(|l| l == want),
            "{name}: no line {want:?} in /clusters:\n{clusters}"
        );
    }
    let clusters_json = dp.admin_json("/clusters?format=json").await;
    let payments_json = clusters_json["cluster_statuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "payments"))
        .unwrap_or_else(|| panic!("{name} /clusters?format=json: {clusters_json:#}"))
        .clone();

    // /config_dump
    let dump = dp.config_dump().await;
    assert_eq!(
        config_dump_types(&dump),
        CONFIG_DUMP_TYPES,
        "{name} /config_dump"
    );
    assert!(
        dumped_cluster(&dump, "payments").is_some(),
        "{name}: no dynamic cluster payments in /config_dump: {dump:#}"
    );
    // /config_dump?resource=: the elements of one list, each typed by its own message.
    let only = dp
        .admin_json("/config_dump?resource=dynamic_active_clusters")
        .await;
    let types: Vec<&str> = only["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["@type"].as_str().unwrap_or_default())
        .collect();
    assert!(
        !types.is_empty()
            && types
                .iter()
                .all(|t| *t
                    == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"),
        "{name} /config_dump?resource=dynamic_active_clusters: {only:#}"
    );
    assert!(
        only["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["cluster"]["name"] == "payments"),
        "{name}: no payments in {only:#}"
    );
    let (status, body) = dp.admin_get("/config_dump?resource=bogus").await;
    assert_eq!(
        (status, body.as_str()),
        (404, "bogus not found in config dump"),
        "{name} /config_dump?resource=bogus"
    );

    // /listeners
    let (status, listeners) = dp.admin_get("/listeners").await;
    assert_eq!(status, 200, "{name} /listeners");
    let prefix = format!("{amb}::127.0.0.1:");
    assert!(
        listeners.lines().count() == 1 && listeners.starts_with(&prefix),
        "{name} /listeners: {listeners:?}"
    );
    let listeners_json = dp.admin_json("/listeners?format=json").await;
    let status = &listeners_json["listener_statuses"][0];
    assert_eq!(status["name"], amb, "{name}: {listeners_json:#}");
    assert_eq!(
        status["local_address"]["socket_address"]["address"], "127.0.0.1",
        "{name}: {listeners_json:#}"
    );
    assert_eq!(
        format!(
            "{prefix}{}\n",
            status["local_address"]["socket_address"]["port_value"]
        ),
        listeners,
        "{name}: /listeners and ?format=json agree"
    );

    // Usage errors and the command list.
    let (status, body) = dp.admin_get("/stats?format=bogus").await;
    assert_eq!(status, 400, "{name} /stats?format=bogus: {body}");
    assert!(body.starts_with("usage: /stats?format="), "{name}: {body}");
    let (status, body) = dp.admin_get("/help").await;
    assert_eq!(status, 200, "{name} /help: {body}");
    assert!(body.starts_with("admin commands are:"), "{name}: {body}");

    Observed {
        stats: lines
            .iter()
            .map(|(k, v)| (k.replace(amb, "AMB"), (*v).to_owned()))
            .collect(),
        clusters_text: clusters
            .lines()
            .filter(|l| l.starts_with("payments::"))
            .map(str::to_owned)
            .collect(),
        payments_json,
        config_dump: dump,
        server_info: info,
    }
}

/// What one data plane's admin API said, to compare the two flavours.
#[derive(Debug)]
struct Observed {
    /// `/stats` (text) as name → value, the ambassador's name replaced by `AMB`.
    stats: BTreeMap<String, String>,
    /// The `payments::…` lines of `/clusters`.
    clusters_text: Vec<String>,
    /// The payments entry of `/clusters?format=json`.
    payments_json: Value,
    config_dump: Value,
    server_info: Value,
}

/// The `@type`s of a `/config_dump`, in order.
fn config_dump_types(dump: &Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["@type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `GET /quitquitquit` is refused with 405; `POST /quitquitquit` answers 200
/// and the process exits 0.
async fn quit(flavor: Flavor, dp: &Envoy) {
    let name = flavor.name();
    let (status, body) = dp.admin_get("/quitquitquit").await;
    assert_eq!(status, 405, "{name} GET /quitquitquit: {body}");
    let (status, body) = dp.admin_get("/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "LIVE\n"),
        "{name} after GET /quitquitquit"
    );
    let req = http::Request::post("/quitquitquit")
        .body(Bytes::new())
        .expect("request");
    let resp = http_send(dp.admin, req)
        .await
        .unwrap_or_else(|e| dp.process().fail(&format!("POST /quitquitquit: {e}")));
    assert_eq!(resp.status, 200, "{name} POST /quitquitquit: {}", resp.body);
    let exit = wait_until(
        &format!("{name} to exit after POST /quitquitquit"),
        DEADLINE,
        || async { dp.process().try_exit_status() },
    )
    .await;
    assert_eq!(
        exit.code(),
        Some(0),
        "{name} exit status: {exit}\n{}",
        dp.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let sbs = SideBySide::start("admin").await;
    let ours = check_admin(Flavor::Legate, &sbs.legate, &sbs.p1).await;
    let theirs = check_admin(Flavor::Envoy, &sbs.envoy, &sbs.p1).await;

    // Side by side: same config dump sections, the same /clusters block for
    // payments (every per-host stat and value, after the same requests), the
    // same request counters, and /server_info agreeing where legate-proxy
    // reports a field.
    assert_eq!(
        config_dump_types(&ours.config_dump),
        config_dump_types(&theirs.config_dump)
    );
    assert_eq!(
        ours.clusters_text, theirs.clusters_text,
        "/clusters payments block: legate-proxy (left) vs Envoy (right)"
    );
    for name in [
        "cluster.payments.upstream_rq_total",
        "cluster.payments.upstream_rq_completed",
        "cluster.payments.upstream_rq_2xx",
        "cluster.payments.upstream_rq_200",
        "cluster.payments.upstream_cx_total",
        "cluster.payments.upstream_cx_http1_total",
        "cluster.payments.membership_healthy",
        "cluster.payments.membership_total",
        "http.AMB.downstream_rq_total",
        "http.AMB.downstream_rq_completed",
        "http.AMB.downstream_rq_2xx",
        "http.AMB.downstream_rq_http1_total",
        "http.AMB.downstream_cx_total",
        "cluster_manager.active_clusters",
        "cluster_manager.warming_clusters",
        "cluster_manager.cds.update_success",
        "listener_manager.total_listeners_active",
        "listener_manager.lds.update_success",
        "control_plane.connected_state",
    ] {
        let ours = ours.stats.get(name);
        assert!(ours.is_some(), "legate-proxy has no stat {name}");
        assert_eq!(
            ours,
            theirs.stats.get(name),
            "{name}: legate-proxy vs Envoy"
        );
    }
    for key in ["state", "hot_restart_version"] {
        assert_eq!(
            ours.server_info[key], theirs.server_info[key],
            "/server_info {key}"
        );
    }
    let our_options = ours.server_info["command_line_options"]
        .as_object()
        .expect("legate-proxy /server_info command_line_options");
    let their_options = &theirs.server_info["command_line_options"];
    for (key, value) in our_options {
        if key == "config_path" || key == "admin_address_path" {
            continue; // each data plane has its own files
        }
        assert_eq!(
            Some(value),
            their_options.get(key),
            "/server_info command_line_options.{key}: legate-proxy vs Envoy"
        );
    }

    quit(Flavor::Legate, &sbs.legate).await;
    quit(Flavor::Envoy, &sbs.envoy).await;
}

/// Keys of a JSON object whose values are not empty (`[]`, `{}`, `""`,
/// `null`): Envoy leaves empty fields out of its JSON, legate-proxy sometimes
/// prints them, and no consumer can tell the difference.
fn non_empty_keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Per-host stats of a `/clusters?format=json` cluster entry as name → value
/// (Envoy leaves out zero values).
fn host_stats(cluster: &Value) -> BTreeMap<String, String> {
    cluster["host_statuses"][0]["stats"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default().to_owned();
            let value = s["value"].as_str().unwrap_or("0").to_owned();
            (name, value)
        })
        .collect()
}

/// The same comparison as [`admin_endpoints`], field by field over everything
/// both flavours print for the same state: every counter and gauge of the
/// payments cluster, the ambassador's HTTP connection manager, the cluster and
/// listener managers and the control-plane connection that both report; the
/// fields of each `/config_dump` entry; `/server_info`'s fields; the per-host
/// stats of `/clusters?format=json`. Lists every difference found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_output_agrees_with_envoy() {
    let sbs = SideBySide::start("agree").await;
    let ours = check_admin(Flavor::Legate, &sbs.legate, &sbs.p1).await;
    let theirs = check_admin(Flavor::Envoy, &sbs.envoy, &sbs.p1).await;
    let mut differences = Vec::new();

    // Stats both print, with a plain number as value (no histograms).
    let prefixes = [
        "cluster.payments.",
        "http.AMB.",
        "cluster_manager.",
        "listener_manager.",
        "control_plane.",
    ];
    for (name, ours_value) in &ours.stats {
        if !prefixes.iter().any(|p| name.starts_with(p)) || ours_value.parse::<u64>().is_err() {
            continue;
        }
        if let Some(theirs_value) = theirs.stats.get(name)
            && theirs_value != ours_value
        {
            differences.push(format!(
                "/stats {name}: legate-proxy {ours_value}, Envoy {theirs_value}"
            ));
        }
    }

    // /config_dump: the fields of each section and of its entries.
    let sections =
        |dump: &Value| -> Vec<Value> { dump["configs"].as_array().cloned().unwrap_or_default() };
    for (a, b) in sections(&ours.config_dump)
        .iter()
        .zip(sections(&theirs.config_dump).iter())
    {
        let t = a["@type"].as_str().unwrap_or_default();
        let t = t.rsplit('.').next().unwrap_or(t);
        let mut compare = |what: String, a: &Value, b: &Value| {
            let (ka, kb) = (non_empty_keys(a), non_empty_keys(b));
            if ka != kb {
                differences.push(format!(
                    "/config_dump {what}: legate-proxy has {ka:?}, Envoy has {kb:?}"
                ));
            }
        };
        compare(t.to_owned(), a, b);
        for list in [
            "static_clusters",
            "dynamic_active_clusters",
            "dynamic_listeners",
            "dynamic_route_configs",
        ] {
            if let (Some(x), Some(y)) = (a[list].get(0), b[list].get(0)) {
                compare(format!("{t}.{list}[]"), x, y);
                if list == "dynamic_listeners" {
                    compare(
                        format!("{t}.{list}[].active_state"),
                        &x["active_state"],
                        &y["active_state"],
                    );
                }
            }
        }
    }

    // /server_info
    let (a, b) = (&ours.server_info, &theirs.server_info);
    for (what, a, b) in [
        ("/server_info", a, b),
        (
            "/server_info command_line_options",
            &a["command_line_options"],
            &b["command_line_options"],
        ),
    ] {
        let ka: BTreeSet<String> = a
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        let kb: BTreeSet<String> = b
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        let missing: Vec<&String> = kb.difference(&ka).collect();
        let extra: Vec<&String> = ka.difference(&kb).collect();
        if !missing.is_empty() || !extra.is_empty() {
            differences.push(format!(
                "{what}: legate-proxy lacks {missing:?}, has extra {extra:?}"
            ));
        }
    }

    // /clusters?format=json per-host stats.
    let (a, b) = (
        host_stats(&ours.payments_json),
        host_stats(&theirs.payments_json),
    );
    if a != b {
        differences.push(format!(
            "/clusters?format=json payments host stats: legate-proxy {a:?}, Envoy {b:?}"
        ));
    }

    assert!(
        differences.is_empty(),
        "legate-proxy's admin output differs from Envoy's in {} place(s):\n  {}",
        differences.len(),
        differences.join("\n  ")
    );
}
