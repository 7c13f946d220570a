//! Checks the harness itself: Envoy with a static bootstrap in front of an
//! in-process upstream, and a workspace binary built with `cargo_bin`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use legate_e2e::upstream::Upstream;
use legate_e2e::{Envoy, Process, cargo_bin, free_port, http_get, http_get_with_headers};

/// A static bootstrap: listener `ingress` on `listen_port` → cluster `backend`
/// → `upstream`; optionally speaking h2c to the upstream.
fn static_bootstrap(listen_port: u16, upstream: SocketAddr, h2: bool) -> String {
    let protocol_options = if h2 {
        r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"#
    } else {
        ""
    };
    format!(
        r#"
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen_port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s{protocol_options}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        ip = upstream.ip(),
        port = upstream.port(),
    )
}

#[tokio::test]
async fn envoy_static_bootstrap_reaches_upstream() {
    let upstream = Upstream::start("static-a").await.expect("upstream");
    let port = free_port();
    let envoy = Envoy::start(&static_bootstrap(port, upstream.addr, false)).await;

    let listener = envoy
        .listener_addr("ingress", Duration::from_secs(10))
        .await;
    assert_eq!(listener.port(), port);

    let resp = http_get(listener, "/hello?x=1", Some("svc.example"))
        .await
        .expect("request through Envoy");
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    assert_eq!(resp.header("x-upstream-instance"), Some("static-a"));
    let json = resp.json();
    assert_eq!(json["instance"], "static-a");
    assert_eq!(json["path"], "/hello?x=1");
    assert_eq!(json["host"], "svc.example");
    // Envoy added its request id on the way.
    assert!(json["headers"]["x-request-id"].is_string(), "{json}");
    assert_eq!(upstream.requests(), 1);

    // Faults pass through (no retry policy here).
    let resp = http_get_with_headers(listener, "/", None, &[("x-fault-status", "503")])
        .await
        .expect("request through Envoy");
    assert_eq!(resp.status, 503);
    assert_eq!(upstream.requests(), 2);

    assert_eq!(envoy.stat("cluster.backend.upstream_rq_200").await, Some(1));
    assert_eq!(envoy.stat("cluster.backend.upstream_rq_503").await, Some(1));
    assert!(
        envoy.logs().contains("starting main dispatch loop"),
        "{}",
        envoy.logs()
    );
}

#[tokio::test]
async fn envoy_speaks_h2c_to_upstream() {
    let upstream = Upstream::start("static-h2").await.expect("upstream");
    let envoy = Envoy::start(&static_bootstrap(0, upstream.addr, true)).await;
    let listener = envoy
        .listener_addr("ingress", Duration::from_secs(10))
        .await;

    let resp = http_get(listener, "/h2", Some("svc.example"))
        .await
        .expect("request through Envoy");
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    let json = resp.json();
    assert_eq!(json["instance"], "static-h2");
    assert_eq!(json["version"], "HTTP/2.0");
    assert_eq!(json["host"], "svc.example");
}

#[tokio::test]
async fn cargo_bin_builds_and_runs_legate_upstream() {
    let bin = tokio::task::spawn_blocking(|| cargo_bin("legate-test-upstream", "legate-upstream"))
        .await
        .expect("cargo_bin");
    let dir = tempfile::TempDir::with_prefix("legate-upstream-").expect("temp dir");
    let mut cmd = Command::new(bin);
    cmd.args(["--name", "bin-a", "--listen", "127.0.0.1:0"]);
    let process = Process::spawn("legate-upstream", cmd, dir);

    let addr: SocketAddr = process
        .wait_until("the listening line", Duration::from_secs(10), || {
            let addr = process
                .stdout()
                .lines()
                .find_map(|l| l.strip_prefix("legate-upstream bin-a listening on "))
                .and_then(|a| a.trim().parse().ok());
            async move { addr }
        })
        .await;
    let resp = http_get(addr, "/", None).await.expect("request");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["instance"], "bin-a");
}

#[tokio::test]
async fn failed_start_reports_exit_and_logs() {
    // Envoy rejects this bootstrap; the wait must fail fast (not time out) and
    // the panic message must carry Envoy's complaint.
    let started = std::time::Instant::now();
    let err = tokio::spawn(Envoy::start("this is: [not a bootstrap"))
        .await
        .expect_err("Envoy::start should panic");
    let msg = *err
        .into_panic()
        .downcast::<String>()
        .expect("panic message is a String");
    assert!(started.elapsed() < Duration::from_secs(20), "{msg}");
    assert!(msg.contains("the process exited"), "{msg}");
    assert!(msg.contains("yaml-cpp"), "{msg}");
    // The logs were kept for inspection; clean them up here.
    let kept = msg
        .split("(logs in ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("message names the log dir");
    assert!(kept.contains("legate-envoy-"), "{kept}");
    std::fs::remove_dir_all(kept).expect("removing kept logs");
}
