//! End to end: `legate-cp` serving real Envoy over ADS (SotW and delta), hot
//! reload from the file watcher and SIGHUP, NACK handling on a raw ADS stream,
//! and the `validate` / `render` commands.
//!
//! The routing scenarios go through [`start_data_plane`], so the same scenario
//! and the same assertions can later run against legate-proxy: they look only
//! at status codes, bodies and which upstream answered, plus legate-cp's own
//! admin API.

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use legate_e2e::upstream::Upstream;
use legate_e2e::{
    ConfigFile, ControlPlane, Envoy, Flavor, HttpResponse, Yaml, cargo_bin, free_port, http_get,
    run_with_deadline,
};
use prost::Message;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Upper bound of every wait in this file.
const DEADLINE: Duration = Duration::from_secs(20);

/// How long a valid configuration change may take to show in the data
/// plane's routing. Deliberately below Envoy's 15 s `initial_fetch_timeout`:
/// when the control plane withholds a resource Envoy waits for, Envoy gives up
/// after 15 s and carries on, which must not let such a stall pass as success.
const PROPAGATION: Duration = Duration::from_secs(10);

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// The four types an ambassador's data plane subscribes to.
const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

// ---------------------------------------------------------------------------
// Data planes
// ---------------------------------------------------------------------------

/// A data plane that takes its configuration from legate-cp through a
/// `legate-cp bootstrap envoy` bootstrap: stock Envoy or legate-proxy, same file and flags.
#[derive(Clone, Copy, Debug)]
enum DataPlane {
    Envoy,
    Legate,
}

/// A running data plane; killed on drop (its logs are printed if the test
/// panics).
#[derive(Debug)]
enum RunningDataPlane {
    Envoy(Envoy),
}

impl RunningDataPlane {
    /// Panics (with its logs) if the data plane has exited.
    fn assert_running(&self) {
        match self {
            RunningDataPlane::Envoy(envoy) => {
                if let Some(status) = envoy.process().try_exit_status() {
                    envoy.process().fail(&format!("Envoy exited ({status})"));
                }
            }
        }
    }
}

/// Starts a data plane of `kind` from `bootstrap_yaml` and waits until it
/// reports ready (Envoy: admin `/ready` is `LIVE`).
async fn start_data_plane(kind: DataPlane, bootstrap_yaml: String) -> RunningDataPlane {
    match kind {
        DataPlane::Envoy => RunningDataPlane::Envoy(Envoy::start(&bootstrap_yaml).await),
        DataPlane::Legate => {
            RunningDataPlane::Envoy(Envoy::start_flavor(Flavor::Legate, &bootstrap_yaml, &[]).await)
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

/// 1-based (line, column) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// 1-based (line, column) of the character right after `needle`, which must
/// occur exactly once in `text`.
fn position_after(text: &str, needle: &str) -> (usize, usize) {
    assert_eq!(text.matches(needle).count(), 1, "{needle:?} in:\n{text}");
    let start = text.find(needle).expect("needle present");
    line_col(text, start + needle.len())
}

// ---------------------------------------------------------------------------
// legate-cp admin API
// ---------------------------------------------------------------------------

/// `GET <path>` on the admin port as JSON.
async fn admin_json(cp: &ControlPlane, path: &str) -> Value {
    let (status, body) = cp.admin_get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
}

/// `GET /config`.
async fn config_status(cp: &ControlPlane) -> Value {
    admin_json(cp, "/config").await
}

/// The generation in force, from `/config`.
async fn generation(cp: &ControlPlane) -> u64 {
    config_status(cp).await["generation"]
        .as_u64()
        .expect("/config has a numeric generation")
}

/// The value of the unlabelled metric `name` in `/metrics`.
async fn metric(cp: &ControlPlane, name: &str) -> u64 {
    let (status, body) = cp.admin_get("/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no metric {name} in /metrics:\n{body}"))
}

/// The `/clients` entry whose `node_cluster` is `cluster` (there must be at
/// most one).
async fn client_by_cluster(cp: &ControlPlane, cluster: &str) -> Option<Value> {
    let clients = cp.clients().await;
    let matching: Vec<&Value> = clients
        .as_array()
        .expect("/clients is an array")
        .iter()
        .filter(|c| c["node_cluster"] == cluster)
        .collect();
    assert!(
        matching.len() <= 1,
        "more than one client of {cluster}: {clients:#}"
    );
    matching.first().map(|c| (*c).clone())
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

/// Waits until the client of `cluster` is on stream `kind`, mapped to
/// `ambassador`, and [`synced`]; returns its `/clients` entry.
async fn wait_synced(cp: &ControlPlane, cluster: &str, ambassador: &str, kind: &str) -> Value {
    let what = format!("a {kind} client of {cluster} (ambassador {ambassador}) to ACK every type");
    cp.process()
        .wait_until(&what, DEADLINE, || async {
            let client = client_by_cluster(cp, cluster).await?;
            (client["kind"] == kind && client["ambassador"] == ambassador && synced(&client))
                .then_some(client)
        })
        .await
}

/// `pushes` per type URL of a `/clients` entry.
fn pushes(client: &Value, type_url: &str) -> u64 {
    client["types"][type_url]["pushes"].as_u64().unwrap_or(0)
}

/// Waits until `/config` reports a reload outcome accepted by `done`.
async fn wait_reload(cp: &ControlPlane, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    cp.process()
        .wait_until(what, DEADLINE, || async {
            let config = config_status(cp).await;
            done(&config).then_some(config)
        })
        .await
}

// ---------------------------------------------------------------------------
// Requests through the data plane
// ---------------------------------------------------------------------------

/// `GET path` on the data plane's listener with an optional `Host`; panics
/// if the request fails at the transport level.
async fn get(listener: SocketAddr, path: &str, host: Option<&str>) -> HttpResponse {
    http_get(listener, path, host)
        .await
        .unwrap_or_else(|e| panic!("GET {path} (Host {host:?}) on {listener}: {e}"))
}

/// The upstream instance that answered (checked against the JSON body).
fn instance(resp: &HttpResponse) -> Option<String> {
    let header = resp.header("x-upstream-instance")?.to_owned();
    assert_eq!(resp.json()["instance"], header.as_str(), "{}", resp.body);
    Some(header)
}

/// Polls `f` until it yields a value, for at most [`PROPAGATION`]; on timeout
/// fails with legate-cp's `/clients` and logs (the data plane's logs are
/// printed when it is dropped).
async fn wait_propagated<T, F, Fut>(cp: &ControlPlane, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let remaining = PROPAGATION.saturating_sub(start.elapsed());
        if let Ok(Some(v)) = tokio::time::timeout(remaining, f()).await {
            return v;
        }
        if start.elapsed() >= PROPAGATION {
            let clients = cp.clients().await;
            cp.process().fail(&format!(
                "timed out after {PROPAGATION:?} waiting for {what}\n/clients: {clients:#}"
            ));
        }
        if let Some(status) = cp.process().try_exit_status() {
            cp.process().fail(&format!(
                "legate-cp exited ({status}) while waiting for {what}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until `GET path` (with `host`) answers 200 from `upstream`.
async fn wait_for_upstream(
    cp: &ControlPlane,
    listener: SocketAddr,
    path: &str,
    host: Option<&str>,
    upstream: &str,
) -> HttpResponse {
    let what = format!("GET {path} (Host {host:?}) to reach upstream {upstream}");
    wait_propagated(cp, &what, || async {
        let resp = http_get(listener, path, host).await.ok()?;
        (resp.status == 200 && instance(&resp).as_deref() == Some(upstream)).then_some(resp)
    })
    .await
}

/// Polls until `GET path` (with `host`) answers `status` without reaching
/// any upstream.
async fn wait_for_local_status(
    cp: &ControlPlane,
    listener: SocketAddr,
    path: &str,
    host: Option<&str>,
    status: u16,
) {
    let what = format!("GET {path} (Host {host:?}) to answer {status} from the data plane");
    wait_propagated(cp, &what, || async {
        let resp = http_get(listener, path, host).await.ok()?;
        (resp.status == status && resp.header("x-upstream-instance").is_none()).then_some(())
    })
    .await
}

/// Asserts `GET path` (with `host`) answers 200 from `upstream` and the
/// upstream saw `upstream_path`.
async fn assert_routed(
    listener: SocketAddr,
    path: &str,
    host: Option<&str>,
    upstream: &str,
    upstream_path: &str,
) {
    let resp = get(listener, path, host).await;
    assert_eq!(
        resp.status, 200,
        "GET {path} (Host {host:?}): {}",
        resp.body
    );
    assert_eq!(
        instance(&resp).as_deref(),
        Some(upstream),
        "GET {path} (Host {host:?}): {}",
        resp.body
    );
    assert_eq!(
        resp.json()["path"],
        upstream_path,
        "GET {path} (Host {host:?})"
    );
}

/// Asserts `GET path` (with `host`) is a 404 that reached no upstream.
async fn assert_not_found(listener: SocketAddr, path: &str, host: Option<&str>) {
    let resp = get(listener, path, host).await;
    assert_eq!(
        resp.status, 404,
        "GET {path} (Host {host:?}): {}",
        resp.body
    );
    assert_eq!(resp.header("x-upstream-instance"), None, "{}", resp.body);
}

// ---------------------------------------------------------------------------
// 1. The full scenario, SotW and delta
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sotw() {
    scenario(DataPlane::Envoy, false).await;
}

#[tokio::test]
async fn delta() {
    scenario(DataPlane::Envoy, true).await;
}

#[tokio::test]
async fn legate_proxy_sotw() {
    scenario(DataPlane::Legate, false).await;
}

#[tokio::test]
async fn legate_proxy_delta() {
    scenario(DataPlane::Legate, true).await;
}

async fn scenario(kind: DataPlane, delta: bool) {
    let stream_kind = if delta { "ads-delta" } else { "ads-sotw" };
    // a. Upstreams, config, control plane, data plane.
    let p1 = Upstream::start("p1").await.expect("upstream p1");
    let p2 = Upstream::start("p2").await.expect("upstream p2");
    let inv = Upstream::start("inv").await.expect("upstream inv");
    let orders = Upstream::start("orders").await.expect("upstream orders");
    let port = free_port();
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let config = Yaml::default()
        .service("payments", &[p1.addr])
        .service("inventory", &[inv.addr])
        .ambassador("checkout", port);
    let file = ConfigFile::new(&config.render());
    let cp = ControlPlane::start(&file.path).await;
    let data_plane = start_data_plane(kind, cp.bootstrap_envoy("checkout", delta)).await;

    // b. The data plane ACKed every type.
    wait_synced(&cp, "checkout", "checkout", stream_kind).await;

    // c. Routing by path prefix, exact path and Host.
    assert_routed(listener, "/payments/charge?x=1", None, "p1", "/charge?x=1").await;
    assert_routed(listener, "/inventory", None, "inv", "/").await;
    assert_routed(listener, "/any/path", Some("payments"), "p1", "/any/path").await;
    assert_not_found(listener, "/nope", None).await;

    // d. A new endpoint reaches the data plane through EDS alone.
    let before = wait_synced(&cp, "checkout", "checkout", stream_kind).await;
    file.replace(
        &Yaml::default()
            .service("payments", &[p1.addr, p2.addr])
            .service("inventory", &[inv.addr])
            .ambassador("checkout", port)
            .render(),
    );
    wait_for_upstream(&cp, listener, "/payments/x", None, "p2").await;
    let after = wait_synced(&cp, "checkout", "checkout", stream_kind).await;
    for t in [CLUSTER, LISTENER, ROUTE] {
        assert_eq!(
            pushes(&after, t),
            pushes(&before, t),
            "{t} was re-sent for an endpoint change:\nbefore {before:#}\nafter {after:#}"
        );
    }
    assert!(
        pushes(&after, ENDPOINT) > pushes(&before, ENDPOINT),
        "EDS was not re-sent:\nbefore {before:#}\nafter {after:#}"
    );
    assert_ne!(
        after["types"][ENDPOINT]["acked_version"], before["types"][ENDPOINT]["acked_version"],
        "the EDS version did not change"
    );

    // e. A new service becomes routable.
    let with_orders = Yaml::default()
        .service("payments", &[p1.addr, p2.addr])
        .service("inventory", &[inv.addr])
        .service("orders", &[orders.addr])
        .ambassador("checkout", port);
    file.replace(&with_orders.render());
    let resp = wait_for_upstream(&cp, listener, "/orders/x", None, "orders").await;
    assert_eq!(resp.json()["path"], "/x");

    // f. A removed service is no longer routable, by path or by Host.
    let without_inventory = Yaml::default()
        .service("payments", &[p1.addr, p2.addr])
        .service("orders", &[orders.addr])
        .ambassador("checkout", port);
    let good = without_inventory.render();
    file.replace(&good);
    wait_for_local_status(&cp, listener, "/inventory/x", None, 404).await;
    assert_not_found(listener, "/any/path", Some("inventory")).await;
    assert_not_found(listener, "/inventory", None).await;
    // Everything else still routes.
    assert_routed(listener, "/orders/y", None, "orders", "/y").await;

    // g. A broken edit is rejected with a precise error; the data plane keeps
    //    routing with the last good configuration.
    let generation_before = generation(&cp).await;
    let broken = good.replace("  orders:\n    endpoints:", "  orders:\n    endpoint:");
    assert_ne!(broken, good);
    let (line, col) = position_after(&broken, "  orders:\n    ");
    file.replace(&broken);
    let status = wait_reload(&cp, "/config to report the rejected reload", |c| {
        c["last_reload"]["ok"] == false
    })
    .await;
    let prefix = format!("{}:{line}:{col}: ", file.path.display());
    let errors = status["last_reload"]["errors"]
        .as_array()
        .expect("last_reload.errors is an array");
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with(&prefix) && e.contains("did you mean"))),
        "no error starting with {prefix:?} and suggesting a fix: {status:#}"
    );
    assert_eq!(status["generation"], generation_before, "{status:#}");
    assert_eq!(metric(&cp, "legate_cp_reload_errors_total").await, 1);
    assert_eq!(
        metric(&cp, "legate_cp_config_version").await,
        generation_before
    );
    let payments = get(listener, "/payments/x", None).await;
    assert_eq!(payments.status, 200, "{}", payments.body);
    assert!(
        matches!(instance(&payments).as_deref(), Some("p1" | "p2")),
        "{}",
        payments.body
    );
    assert_routed(listener, "/orders/x", None, "orders", "/x").await;
    assert_eq!(generation(&cp).await, generation_before);

    // h. Fixing the file is accepted; a further change is applied.
    file.replace(&good);
    let status = wait_reload(&cp, "/config to report an accepted reload", |c| {
        c["last_reload"]["ok"] == true
    })
    .await;
    assert_eq!(status["last_reload"]["errors"], serde_json::json!([]));
    file.replace(
        &Yaml::default()
            .service("payments", &[p2.addr])
            .service("orders", &[orders.addr])
            .ambassador("checkout", port)
            .render(),
    );
    wait_propagated(
        &cp,
        "20 consecutive GET /payments/x to reach p2 only",
        || async {
            for _ in 0..20 {
                let resp = http_get(listener, "/payments/x", None).await.ok()?;
                if resp.status != 200 || instance(&resp).as_deref() != Some("p2") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert!(generation(&cp).await > generation_before);
    assert_eq!(metric(&cp, "legate_cp_reload_errors_total").await, 1);
    data_plane.assert_running();
}

// ---------------------------------------------------------------------------
// 2. SIGHUP
// ---------------------------------------------------------------------------

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn sighup_reloads() {
    // legate-cp watches the directory of the path it is given; that path is a
    // symlink to a file in another directory, so edits to the target are
    // invisible to the watcher and only SIGHUP can pick them up.
    let p1 = Upstream::start("hup-p1").await.expect("upstream");
    let port = free_port();
    let base = Yaml::default()
        .service("payments", &[p1.addr])
        .ambassador("checkout", port);
    let real = ConfigFile::new(&base.render());
    let watched = TempDir::with_prefix("legate-e2e-watched-").expect("temp dir");
    let link = watched.path().join("legate.yaml");
    std::os::unix::fs::symlink(&real.path, &link).expect("symlink");
    let cp = ControlPlane::start(&link).await;
    let first = generation(&cp).await;
    assert!(first > 0);

    // A real change: not picked up by the watcher…
    real.replace(&base.clone().service("inventory", &[p1.addr]).render());
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            generation(&cp).await,
            first,
            "the change was picked up without SIGHUP; this test cannot tell SIGHUP works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …but by SIGHUP.
    cp.sighup();
    let status = wait_reload(&cp, "SIGHUP to publish a new generation", |c| {
        c["generation"].as_u64().is_some_and(|g| g > first)
    })
    .await;
    let second = status["generation"].as_u64().expect("generation");
    assert_eq!(second, first + 1, "{status:#}");
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
    assert!(
        status["config"]["services"]["inventory"].is_object(),
        "{status:#}"
    );
    assert_eq!(metric(&cp, "legate_cp_config_version").await, second);

    // SIGHUP with the file unchanged: a reload attempt happens (its timestamp
    // moves on) but no new generation is published.
    let last_at = status["last_reload"]["at_unix"]
        .as_u64()
        .expect("last_reload.at_unix");
    cp.process()
        .wait_until(
            "the wall clock to pass the last reload's second",
            Duration::from_secs(3),
            || async { (unix_now() > last_at).then_some(()) },
        )
        .await;
    let signalled_at = unix_now();
    let reloads_before = metric(&cp, "legate_cp_reloads_total").await;
    cp.sighup();
    let status = wait_reload(&cp, "the SIGHUP reload attempt to be reported", |c| {
        c["last_reload"]["at_unix"]
            .as_u64()
            .is_some_and(|at| at >= signalled_at)
    })
    .await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
    assert_eq!(status["generation"], second, "{status:#}");
    assert_eq!(metric(&cp, "legate_cp_config_version").await, second);
    assert_eq!(metric(&cp, "legate_cp_reloads_total").await, reloads_before);
    assert_eq!(metric(&cp, "legate_cp_reload_errors_total").await, 0);
}

// ---------------------------------------------------------------------------
// 3. A node that matches no ambassador
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_node_gets_nothing_then_default() {
    let p1 = Upstream::start("default-p1").await.expect("upstream");
    let checkout_port = free_port();
    let default_port = free_port();
    let config = Yaml::default()
        .service("payments", &[p1.addr])
        .ambassador("checkout", checkout_port);
    let file = ConfigFile::new(&config.render());
    let cp = ControlPlane::start(&file.path).await;

    // The data plane cannot become ready without configuration; start it in
    // the background and watch legate-cp meanwhile.
    let starting = tokio::spawn(start_data_plane(
        DataPlane::Envoy,
        cp.bootstrap_envoy("ghost", false),
    ));
    let client = cp
        .process()
        .wait_until(
            "the ghost node to subscribe to clusters",
            DEADLINE,
            || async {
                let client = client_by_cluster(&cp, "ghost").await?;
                let subscribed = client["types"][CLUSTER]["subscribed"].as_array()?;
                (!subscribed.is_empty()).then_some(client)
            },
        )
        .await;
    assert_eq!(client["ambassador"], Value::Null, "{client:#}");
    assert_eq!(client["kind"], "ads-sotw", "{client:#}");
    // Nothing is sent to it: observed over a bounded window.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(1) {
        let client = client_by_cluster(&cp, "ghost")
            .await
            .expect("the ghost client stays connected");
        assert_eq!(client["ambassador"], Value::Null, "{client:#}");
        let types = client["types"].as_object().expect("types is an object");
        for (t, status) in types {
            assert_eq!(status["pushes"], 0, "{t} was pushed: {client:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !starting.is_finished(),
        "the data plane became ready without any configuration"
    );

    // A `default` ambassador catches every unmatched node.
    file.replace(&config.ambassador("default", default_port).render());
    let client = wait_synced(&cp, "ghost", "default", "ads-sotw").await;
    for t in TYPES {
        assert!(
            client["types"][t]["acks"].as_u64().is_some_and(|n| n >= 1),
            "{client:#}"
        );
    }
    let data_plane = starting.await.expect("data plane start");
    let listener = SocketAddr::from(([127, 0, 0, 1], default_port));
    assert_routed(listener, "/payments/z", None, "default-p1", "/z").await;
    data_plane.assert_running();
}

// ---------------------------------------------------------------------------
// 4. NACK on a raw ADS stream
// ---------------------------------------------------------------------------

/// The cluster names in a CDS response.
fn cluster_names(resp: &DiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = resp
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, CLUSTER);
            Cluster::decode(any.value.as_slice())
                .expect("a Cluster")
                .name
        })
        .collect();
    names.sort();
    names
}

/// The next response on the stream, within [`DEADLINE`].
async fn next_response(
    responses: &mut tonic::Streaming<DiscoveryResponse>,
    cp: &ControlPlane,
) -> DiscoveryResponse {
    match tokio::time::timeout(DEADLINE, responses.message()).await {
        Ok(Ok(Some(resp))) => resp,
        Ok(Ok(None)) => cp.process().fail("the ADS stream ended"),
        Ok(Err(status)) => cp
            .process()
            .fail(&format!("the ADS stream failed: {status}")),
        Err(_) => cp
            .process()
            .fail(&format!("no ADS response within {DEADLINE:?}")),
    }
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent() {
    let p1 = Upstream::start("nack-p1").await.expect("upstream");
    let inv = Upstream::start("nack-inv").await.expect("upstream");
    let port = free_port();
    let config = Yaml::default()
        .service("payments", &[p1.addr])
        .service("inventory", &[inv.addr])
        .ambassador("checkout", port);
    let file = ConfigFile::new(&config.render());
    let cp = ControlPlane::start(&file.path).await;

    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", cp.xds))
        .await
        .expect("connecting to legate-cp xDS");
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    let node_id = "raw-nack-client";
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: node_id.into(),
            cluster: "checkout".into(),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .expect("queueing the CDS request");
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("opening the ADS stream")
        .into_inner();

    let first = next_response(&mut responses, &cp).await;
    assert_eq!(first.type_url, CLUSTER);
    assert!(!first.version_info.is_empty());
    assert!(!first.nonce.is_empty());
    assert_eq!(cluster_names(&first), ["inventory", "payments"]);

    let message = "test rejects cluster payments";
    tx.send(DiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: first.nonce.clone(),
        version_info: String::new(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: message.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("sending the NACK");

    let status = cp
        .process()
        .wait_until("/clients to record the NACK", DEADLINE, || async {
            let client = client_by_cluster(&cp, "checkout").await?;
            (client["types"][CLUSTER]["nacks"] == 1).then_some(client)
        })
        .await;
    assert_eq!(status["node_id"], node_id, "{status:#}");
    assert_eq!(status["kind"], "ads-sotw", "{status:#}");
    let cds = &status["types"][CLUSTER];
    assert_eq!(cds["last_nack"], message, "{status:#}");
    assert_eq!(
        cds["nacked_version"],
        first.version_info.as_str(),
        "{status:#}"
    );
    assert_eq!(
        cds["sent_version"],
        first.version_info.as_str(),
        "{status:#}"
    );
    assert_eq!(cds["acked_version"], "", "{status:#}");
    assert_eq!(cds["acks"], 0, "{status:#}");
    assert_eq!(cds["pushes"], 1, "{status:#}");
    assert_eq!(metric(&cp, "legate_cp_nacks_total").await, 1);

    // The rejected version is not sent again: nothing arrives in a bounded window.
    match tokio::time::timeout(Duration::from_secs(2), responses.message()).await {
        Err(_elapsed) => {}
        Ok(other) => panic!("expected no response after the NACK, got {other:?}"),
    }

    // A real change is sent, on the same stream.
    let orders = Upstream::start("nack-orders").await.expect("upstream");
    file.replace(&config.clone().service("orders", &[orders.addr]).render());
    let second = next_response(&mut responses, &cp).await;
    assert_eq!(second.type_url, CLUSTER);
    assert_ne!(second.version_info, first.version_info);
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(cluster_names(&second), ["inventory", "orders", "payments"]);
    let status = client_by_cluster(&cp, "checkout")
        .await
        .expect("the raw client is still connected");
    assert_eq!(status["types"][CLUSTER]["pushes"], 2, "{status:#}");
    assert_eq!(status["types"][CLUSTER]["nacks"], 1, "{status:#}");
    drop(tx);
}

// ---------------------------------------------------------------------------
// 5. validate and render
// ---------------------------------------------------------------------------

/// Runs `legate-cp <args>` to completion → (exit code, stdout, stderr).
fn legate_cp<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, String) {
    let bin = cargo_bin("legate-control-plane", "legate-cp");
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let out = run_with_deadline(&mut cmd, DEADLINE).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.code().expect("legate-cp exited normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A valid file with an explicit route, for `render`.
const GOOD_WITH_ROUTE: &str = "\
services:
  payments:
    endpoints: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }]
  inventory:
    endpoints: [127.0.0.1:9003]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
    routes:
      - prefix: /pay/
        service: payments
        rewrite: /
";

#[test]
fn validate_and_render_cli() {
    let dir = TempDir::with_prefix("legate-e2e-cli-").expect("temp dir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD_WITH_ROUTE).expect("writing good.yaml");
    let broken_text = GOOD_WITH_ROUTE.replace("service: payments", "service: paymnts");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, &broken_text).expect("writing broken.yaml");
    let (line, col) = position_after(&broken_text, "        service: ");

    // validate: a route naming an unknown service.
    let (code, stdout, stderr) = legate_cp(&[OsStr::new("validate"), broken.as_os_str()]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let expected = format!("{}:{line}:{col}: ", broken.display());
    let error = stderr
        .lines()
        .find(|l| l.starts_with(&expected))
        .unwrap_or_else(|| panic!("no line starting with {expected:?} in stderr:\n{stderr}"));
    assert!(error.contains("unknown service `paymnts`"), "{error}");
    assert!(error.contains("did you mean `payments`"), "{error}");
    // Every error line is `path:line:col: message`.
    for l in stderr
        .lines()
        .filter(|l| l.starts_with(&*broken.to_string_lossy()))
    {
        let rest = &l[broken.to_string_lossy().len()..];
        let mut parts = rest.splitn(4, ':');
        assert_eq!(parts.next(), Some(""), "{l}");
        assert!(
            parts.next().is_some_and(|n| n.parse::<usize>().is_ok()),
            "{l}"
        );
        assert!(
            parts.next().is_some_and(|n| n.parse::<usize>().is_ok()),
            "{l}"
        );
        assert!(parts.next().is_some_and(|m| m.starts_with(' ')), "{l}");
    }

    // validate: a good file.
    let (code, stdout, stderr) = legate_cp(&[OsStr::new("validate"), good.as_os_str()]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // render (JSON).
    let render = |format: &str| {
        let args = ["render", &good.to_string_lossy(), "--node", "checkout"];
        let (code, stdout, stderr) = legate_cp(&[&args[..], &["--format", format]].concat());
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        stdout
    };
    let json: Value = serde_json::from_str(&render("json")).expect("render prints JSON");
    check_rendered(&json);

    // render (YAML): the same document.
    let yaml: Value =
        serde_yaml::from_str(&render("yaml")).expect("render --format yaml prints YAML");
    check_rendered(&yaml);
    assert_eq!(yaml, json);
}

/// Checks `render --node checkout` output of [`GOOD_WITH_ROUTE`].
fn check_rendered(doc: &Value) {
    let types = [
        ("clusters", CLUSTER),
        ("endpoints", ENDPOINT),
        ("listeners", LISTENER),
        ("routes", ROUTE),
    ];
    for (key, type_url) in types {
        let items = doc[key]
            .as_array()
            .unwrap_or_else(|| panic!("no `{key}` array in {doc:#}"));
        assert!(!items.is_empty(), "`{key}` is empty: {doc:#}");
        for item in items {
            assert_eq!(item["@type"], type_url, "{item:#}");
        }
    }
    let mut clusters: Vec<&str> = doc["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    clusters.sort_unstable();
    assert_eq!(clusters, ["inventory", "payments"], "{doc:#}");

    let routes: Vec<&Value> = doc["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rc| rc["virtual_hosts"].as_array().into_iter().flatten())
        .flat_map(|vh| vh["routes"].as_array().into_iter().flatten())
        .collect();
    let find = |prefix: &str| {
        routes
            .iter()
            .find(|r| r["match"]["prefix"] == prefix)
            .unwrap_or_else(|| panic!("no route with prefix {prefix}: {doc:#}"))
    };
    let payments = find("/payments/");
    assert_eq!(payments["route"]["cluster"], "payments", "{payments:#}");
    assert_eq!(payments["route"]["prefix_rewrite"], "/", "{payments:#}");
    let explicit = find("/pay/");
    assert_eq!(explicit["route"]["cluster"], "payments", "{explicit:#}");
    assert_eq!(explicit["route"]["prefix_rewrite"], "/", "{explicit:#}");
}
