//! Outbound mTLS (issue 5), every scenario against stock Envoy and against legate-proxy with
//! identical assertions (`<scenario>_envoy`, `<scenario>_legate`).
//!
//! The fixture: `legate-cp certs init` makes a development CA and leaves; `legate-cp serve`
//! serves xDS over mTLS only (`--xds-tls-cert/--xds-tls-key/--xds-client-ca`); the data plane
//! is started from `legate-cp bootstrap envoy --xds-tls-ca/--xds-tls-cert/--xds-tls-key`, so
//! every scenario's configuration (SDS secrets included) came over an mTLS xDS channel; the
//! upstream is `legate_test_upstream` terminating TLS with the `payments` certificate and
//! requiring client certificates from the development CA. It answers with the serial of the
//! client certificate each connection presented (`x-legate-client-serial`) and the TLS
//! version (`x-legate-tls-version`).
//!
//! Envoy is the reference: an assertion that fails against Envoy is a wrong expectation; one
//! that fails only against legate-proxy is a difference to fix in legate-proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use legate_control_plane::certs::{InitOptions, init};
use legate_e2e::upstream::{
    CLIENT_SERIAL_HEADER, INSTANCE_HEADER, TLS_ALPN_HEADER, TLS_VERSION_HEADER, TlsSettings,
    Upstream, pem_file_serial,
};
use legate_e2e::{
    ControlPlane, Envoy, Flavor, HttpResponse, cargo_bin, free_port, http_get, run_with_deadline,
};
use tempfile::TempDir;

/// Upper bound of every wait for configuration or counters.
const DEADLINE: Duration = Duration::from_secs(20);

/// The ambassador (node.cluster) every fixture serves.
const AMBASSADOR: &str = "checkout";

/// The SPIFFE trust domain of the development certificates.
const TRUST_DOMAIN: &str = "example.org";

use legate_e2e::flavors;

/// A running scenario: certificates, the mTLS upstream, legate-cp (xDS over mTLS) and one
/// data plane. Dropping it stops everything.
struct Fixture {
    flavor: Flavor,
    proxy: Envoy,
    listener: SocketAddr,
    upstream: Upstream,
    cp: ControlPlane,
    dir: TempDir,
}

/// How the upstream behaves.
#[derive(Clone, Copy, Default)]
struct UpstreamOptions {
    /// One connection (and handshake) per request.
    close_after_response: bool,
}

impl Fixture {
    /// Generates the certificates (`certs/`: CA, `payments`, `checkout`, `legate-cp`;
    /// `other/`: another CA with its own `payments`), starts the mTLS upstream, then legate-cp
    /// with the YAML `services` (`{upstream}` stands for the upstream's address; paths are
    /// relative to the YAML file) and the data plane, and waits until the data plane is LIVE
    /// (every TLS cluster warmed with its SDS secrets) and routes to every service.
    async fn start(flavor: Flavor, services: &str, options: UpstreamOptions) -> Fixture {
        let dir = TempDir::with_prefix("legate-mtls-").expect("temp dir");
        let d = dir.path();
        let certs = d.join("certs");
        init(&InitOptions::new(
            &certs,
            TRUST_DOMAIN,
            &["payments", "checkout", "legate-cp"],
        ))
        .expect("certs init");
        init(&InitOptions::new(
            d.join("other"),
            TRUST_DOMAIN,
            &["payments"],
        ))
        .expect("other CA");

        let upstream = Upstream::builder("payments")
            .tls(
                TlsSettings::new(certs.join("payments.pem"), certs.join("payments.key"))
                    .client_ca(certs.join("ca.pem")),
            )
            .close_after_response(options.close_after_response)
            .start()
            .await
            .expect("mTLS upstream");
        let port = free_port();
        let listener = SocketAddr::from(([127, 0, 0, 1], port));
        let yaml = format!(
            "services:\n{}\nambassadors:\n  {AMBASSADOR}:\n    listen: {listener}\n",
            services.replace("{upstream}", &upstream.addr.to_string())
        );
        let config = d.join("legate.yaml");
        std::fs::write(&config, yaml).expect("writing legate.yaml");

        let cp = ControlPlane::start_with_args(
            &config,
            &[
                "--xds-tls-cert".into(),
                certs.join("legate-cp.pem").into(),
                "--xds-tls-key".into(),
                certs.join("legate-cp.key").into(),
                "--xds-client-ca".into(),
                certs.join("ca.pem").into(),
                // Key material must stay out of even a debug log.
                "--log-level".into(),
                "debug".into(),
            ],
        )
        .await;
        let bootstrap = bootstrap_over_mtls(&cp, &certs);
        let proxy = Envoy::start_flavor(flavor, &bootstrap, &[]).await;
        let fx = Fixture {
            flavor,
            proxy,
            listener,
            upstream,
            cp,
            dir,
        };
        // The listener arrives with the routes; wait until it answers at all.
        fx.proxy
            .process()
            .wait_until("the listener to answer", DEADLINE, || async {
                http_get(fx.listener, "/", Some("unknown")).await.ok()
            })
            .await;
        fx
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// `GET /` with `Host: <service>` over a new HTTP/1.1 connection; panics if the request
    /// fails at the transport level.
    async fn get(&self, service: &str) -> HttpResponse {
        http_get(self.listener, "/", Some(service))
            .await
            .unwrap_or_else(|e| {
                self.proxy.process().fail(&format!(
                    "{}: GET / (Host: {service}): {e}",
                    self.flavor.name()
                ))
            })
    }

    /// Every counter and gauge of `/stats` (histogram lines are left out).
    async fn stats(&self) -> BTreeMap<String, u64> {
        self.proxy.stats().await
    }

    /// Waits (up to [`DEADLINE`]) until `check` accepts the stats; panics with the `ssl`
    /// stats of the clusters otherwise.
    async fn wait_stats(&self, what: &str, check: impl Fn(&BTreeMap<String, u64>) -> bool) {
        let started = Instant::now();
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                if std::env::var_os("MTLS_DUMP_STATS").is_some() {
                    let (_, text) = self.proxy.admin_get("/stats").await;
                    let tls: Vec<&str> = text
                        .lines()
                        .filter(|l| ["ssl", "sds", "secret"].iter().any(|k| l.contains(k)))
                        .collect();
                    eprintln!("{}: {what}:\n{}", self.flavor.name(), tls.join("\n"));
                }
                return;
            }
            if started.elapsed() > DEADLINE {
                let ssl: Vec<String> = stats
                    .iter()
                    .filter(|(n, v)| {
                        **v != 0
                            && n.starts_with("cluster.")
                            && (n.contains(".ssl.") || n.contains("upstream_cx"))
                    })
                    .map(|(n, v)| format!("  {n}: {v}"))
                    .collect();
                panic!(
                    "{}: {what}: not within {DEADLINE:?}; non-zero ssl/cx stats:\n{}",
                    self.flavor.name(),
                    ssl.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// `legate-cp bootstrap envoy` for the checkout ambassador, reaching legate-cp over mTLS.
fn bootstrap_over_mtls(cp: &ControlPlane, certs: &Path) -> String {
    let mut cmd = Command::new(cargo_bin("legate-control-plane", "legate-cp"));
    cmd.args(["bootstrap", "envoy", "--node", AMBASSADOR])
        .args(["--xds", &cp.xds.to_string(), "--admin", "127.0.0.1:0"])
        .arg("--xds-tls-ca")
        .arg(certs.join("ca.pem"))
        .arg("--xds-tls-cert")
        .arg(certs.join("checkout.pem"))
        .arg("--xds-tls-key")
        .arg(certs.join("checkout.key"))
        .args(["--xds-sni", "legate-cp"]);
    let out = run_with_deadline(&mut cmd, DEADLINE).expect("running legate-cp bootstrap");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = String::from_utf8(out.stdout).expect("UTF-8 bootstrap");
    assert!(
        bootstrap.contains("envoy.transport_sockets.tls"),
        "{bootstrap}"
    );
    bootstrap
}

fn stat(stats: &BTreeMap<String, u64>, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or_default()
}

/// The payments service, verified by CA and SPIFFE ID, presenting the checkout certificate.
const PAYMENTS: &str = r#"
  payments:
    endpoints: [{upstream}]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      sni: payments
      verify_san: [spiffe://example.org/ns/default/sa/payments]
"#;

/// Both proxies reach the mTLS upstream with the checkout client certificate, after getting
/// their whole configuration (SDS secrets included) from an xDS server that requires client
/// certificates.
async fn reaches_an_mtls_upstream(flavor: Flavor) {
    let fx = Fixture::start(flavor, PAYMENTS, UpstreamOptions::default()).await;
    let r = fx.get("payments").await;
    assert_eq!(r.status, 200, "{}: {}", flavor.name(), r.body);
    assert_eq!(r.header(INSTANCE_HEADER), Some("payments"));
    let checkout = pem_file_serial(&fx.certs().join("checkout.pem")).expect("serial");
    assert_eq!(
        r.header(CLIENT_SERIAL_HEADER),
        Some(checkout.as_str()),
        "{}: the upstream saw the checkout certificate",
        flavor.name()
    );
    // The cluster offers TLS 1.3 (legate-cp sets the maximum), and both negotiate it.
    assert_eq!(r.header(TLS_VERSION_HEADER), Some("TLSv1.3"));
    fx.wait_stats("one handshake with payments, no failures", |s| {
        stat(s, "cluster.payments.ssl.handshake") >= 1
            && stat(s, "cluster.payments.ssl.versions.TLSv1.3") >= 1
            && stat(s, "cluster.payments.ssl.fail_verify_san") == 0
            && stat(s, "cluster.payments.ssl.fail_verify_error") == 0
            && stat(s, "cluster.payments.ssl.connection_error") == 0
            && stat(s, "cluster.payments.upstream_rq_200") >= 1
    })
    .await;
    assert_eq!(fx.upstream.stats().tls_handshake_errors, 0);

    // Certificate expiration gauges, named by SDS secret: the leaf (`certs init` makes it
    // for 365 days) and the CA (10 years).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let day = 86_400;
    let within = |v: u64, days: u64| (now + (days - 2) * day..=now + (days + 1) * day).contains(&v);
    fx.wait_stats("expiration gauges and SDS subscription stats", |s| {
        within(
            stat(
                s,
                "cluster.payments.ssl.certificate.payments/cert.expiration_unix_time_seconds",
            ),
            365,
        ) && within(
            stat(
                s,
                "cluster.payments.ssl.certificate.payments/ca.expiration_unix_time_seconds",
            ),
            3650,
        ) && stat(s, "sds.payments/cert.update_success") >= 1
            && stat(s, "sds.payments/ca.update_success") >= 1
            && stat(s, "sds.payments/cert.update_rejected") == 0
            && stat(s, "sds.payments/cert.init_fetch_timeout") == 0
    })
    .await;

    // The xDS channel: TLS towards legate-cp (the bootstrap's files are inline-less sources,
    // which Envoy names `unnamed_cert_<sha256 of nothing>`), and legate-cp saw this node.
    fx.wait_stats("a TLS handshake with legate-cp", |s| {
        stat(s, "cluster.legate_xds.ssl.handshake") >= 1
            && within(
                stat(
                    s,
                    "cluster.legate_xds.ssl.certificate.unnamed_cert_e3b0c442.expiration_unix_time_seconds",
                ),
                365,
            )
    })
    .await;
    let clients = fx.cp.clients().await;
    assert!(
        clients.to_string().contains(AMBASSADOR),
        "{}: legate-cp /clients does not list the node: {clients}",
        flavor.name()
    );

    // Private keys never show: not in legate-cp's admin output or its debug log, nor in the
    // data plane's /config_dump (Envoy redacts them).
    let key = std::fs::read_to_string(fx.certs().join("checkout.key")).expect("key");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let leaked = |text: &str| text.contains("PRIVATE KEY") || text.contains(&body[..32]);
    for path in ["/config", "/metrics", "/clients"] {
        let (status, text) = fx.cp.admin_get(path).await;
        assert_eq!(status, 200, "legate-cp {path}");
        assert!(!leaked(&text), "legate-cp {path} shows the key");
    }
    let log = fx.cp.logs();
    assert!(log.contains("DEBUG"), "legate-cp logs at debug");
    assert!(!leaked(&log), "legate-cp's log shows the key");
    let (status, dump) = fx.proxy.admin_get("/config_dump?include_eds").await;
    assert_eq!(status, 200);
    assert!(
        dump.contains("payments/cert"),
        "{}: secrets in /config_dump",
        flavor.name()
    );
    assert!(
        !leaked(&dump),
        "{}: /config_dump shows the key",
        flavor.name()
    );
}
flavors!(
    reaches_an_mtls_upstream,
    reaches_an_mtls_upstream_envoy,
    reaches_an_mtls_upstream_legate
);

/// A SAN that does not match, an upstream certificate from another CA and a missing client
/// certificate are all refused with 503 (never a plaintext fallback), and counted.
async fn refuses_bad_peers(flavor: Flavor) {
    let services = r#"
  wrong-san:
    endpoints: [{upstream}]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      verify_san: [spiffe://example.org/ns/default/sa/ledger]
  other-ca:
    endpoints: [{upstream}]
    tls: { ca: other/ca.pem, cert: certs/checkout.pem, key: certs/checkout.key }
  no-client-cert:
    endpoints: [{upstream}]
    tls: { ca: certs/ca.pem, verify_san: [payments] }
"#;
    let fx = Fixture::start(flavor, services, UpstreamOptions::default()).await;
    // A refused handshake is a connect failure; the upstream's TLS 1.3 alert after the
    // client's handshake (no client certificate) ends the connection. Envoy 1.40 does not put
    // the TLS error in the reply.
    const REPLY: &str = "upstream connect error or disconnect/reset before headers. ";
    for (service, why, reason) in [
        (
            "wrong-san",
            "a SAN that does not match",
            "reset reason: remote connection failure",
        ),
        (
            "other-ca",
            "an upstream certificate from another CA",
            "reset reason: remote connection failure",
        ),
        (
            "no-client-cert",
            "no client certificate",
            "reset reason: connection termination",
        ),
    ] {
        let r = fx.get(service).await;
        if std::env::var_os("MTLS_DUMP_STATS").is_some() {
            eprintln!("{}: {service}: {}", flavor.name(), r.body);
        }
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, format!("{REPLY}{reason}").as_str()),
            "{}: {why} must be refused",
            flavor.name(),
        );
    }
    assert_eq!(
        fx.upstream.requests(),
        0,
        "{}: no request may reach the upstream",
        flavor.name()
    );
    // The upstream refused the connection without a client certificate.
    assert!(fx.upstream.stats().tls_handshake_errors >= 1);
    // A failed verification is a connect failure.
    fx.wait_stats("every refusal counted by its cause", |s| {
        stat(s, "cluster.wrong-san.ssl.fail_verify_san") == 1
            && stat(s, "cluster.wrong-san.upstream_cx_connect_fail") == 1
            && stat(s, "cluster.wrong-san.ssl.handshake") == 0
            && stat(s, "cluster.other-ca.ssl.fail_verify_error") == 1
            && stat(s, "cluster.other-ca.upstream_cx_connect_fail") == 1
            && stat(s, "cluster.other-ca.ssl.handshake") == 0
            && stat(s, "cluster.no-client-cert.ssl.handshake") == 1
            && stat(s, "cluster.no-client-cert.ssl.connection_error") == 1
    })
    .await;
}
flavors!(
    refuses_bad_peers,
    refuses_bad_peers_envoy,
    refuses_bad_peers_legate
);

/// A failed verification is a connect failure for the retry policy too: retried on
/// `connect-failure`, and the reply says so.
async fn verification_failure_is_retried(flavor: Flavor) {
    let services = r#"
  wrong-san:
    endpoints: [{upstream}]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      verify_san: [spiffe://example.org/ns/default/sa/ledger]
    retries: { attempts: 1, on: [connect-failure] }
"#;
    let fx = Fixture::start(flavor, services, UpstreamOptions::default()).await;
    let r = fx.get("wrong-san").await;
    fx.wait_stats("two failed verifications, one retry", |s| {
        stat(s, "cluster.wrong-san.ssl.fail_verify_san") == 2
            && stat(s, "cluster.wrong-san.upstream_cx_connect_fail") == 2
            && stat(s, "cluster.wrong-san.upstream_rq_retry") == 1
            && stat(s, "cluster.wrong-san.ssl.handshake") == 0
    })
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            503,
            "upstream connect error or disconnect/reset before headers. retried and the latest \
             reset reason: remote connection failure"
        ),
        "{}",
        flavor.name()
    );
    assert_eq!(fx.upstream.requests(), 0);
}
flavors!(
    verification_failure_is_retried,
    verification_failure_is_retried_envoy,
    verification_failure_is_retried_legate
);

/// Requests of the rotation scenario, and how many of them go before the files change.
const ROTATION_REQUESTS: usize = 1000;
const ROTATE_AFTER: usize = 100;
/// Concurrent clients during the rotation (so requests are in flight when it lands).
const ROTATION_CLIENTS: usize = 4;

/// The client certificate files are replaced (same CA, new key and serial) while traffic
/// flows: none of 1000 requests fails, and the upstream sees the new serial on the new
/// connections (one connection per request here, so the switch shows as it happens).
async fn rotation_fails_no_request(flavor: Flavor) {
    let fx = Fixture::start(
        flavor,
        PAYMENTS,
        UpstreamOptions {
            close_after_response: true,
        },
    )
    .await;
    let certs = fx.certs();
    let old = pem_file_serial(&certs.join("checkout.pem")).expect("serial");
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..ROTATION_CLIENTS {
        let sent = sent.clone();
        let listener = fx.listener;
        workers.push(tokio::spawn(async move {
            let mut seen: Vec<(usize, u16, Option<String>)> = Vec::new();
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= ROTATION_REQUESTS {
                    return seen;
                }
                let r = http_get(listener, "/", Some("payments")).await;
                seen.push(match r {
                    Ok(r) => (
                        n,
                        r.status,
                        r.header(CLIENT_SERIAL_HEADER).map(str::to_owned),
                    ),
                    Err(e) => (n, 0, Some(format!("transport error: {e}"))),
                });
            }
        }));
    }
    // Rotate once ROTATE_AFTER requests have gone out.
    let started = Instant::now();
    while sent.load(Ordering::SeqCst) < ROTATE_AFTER {
        assert!(started.elapsed() < DEADLINE, "traffic did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut rotate = InitOptions::new(&certs, TRUST_DOMAIN, &["checkout"]);
    rotate.keep_ca = true;
    rotate.force = true;
    init(&rotate).expect("rotating the checkout certificate");
    let new = pem_file_serial(&certs.join("checkout.pem")).expect("serial");
    assert_ne!(old, new);

    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await.expect("worker"));
    }
    results.sort_by_key(|(n, _, _)| *n);
    assert_eq!(results.len(), ROTATION_REQUESTS);
    let failed: Vec<_> = results.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{}: {} of {ROTATION_REQUESTS} requests failed during the rotation, e.g. {:?}",
        flavor.name(),
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let serial_of = |i: usize| results[i].2.as_deref();
    let first_new = (0..results.len()).find(|&i| serial_of(i) == Some(new.as_str()));
    let Some(first_new) = first_new else {
        panic!(
            "{}: the upstream never saw the rotated certificate in {ROTATION_REQUESTS} requests",
            flavor.name()
        )
    };
    assert!(first_new >= ROTATE_AFTER.saturating_sub(ROTATION_CLIENTS));
    let unexpected: Vec<_> = results
        .iter()
        .filter(|(_, _, s)| s.as_deref() != Some(old.as_str()) && s.as_deref() != Some(&new))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // Once the new certificate is in force, new connections never go back to the old one
    // (requests already in flight at the switch may still finish on old ones).
    let late_old = results[first_new..]
        .iter()
        .skip(ROTATION_CLIENTS)
        .filter(|(_, _, s)| s.as_deref() == Some(old.as_str()))
        .count();
    assert_eq!(
        late_old,
        0,
        "{}: old serial after the switch at request {first_new}",
        flavor.name()
    );
    eprintln!(
        "{}: switched to the new certificate at request {first_new} of {ROTATION_REQUESTS}",
        flavor.name()
    );
    let serials = fx.upstream.client_serials();
    assert!(serials.get(&new).copied().unwrap_or(0) >= 1, "{serials:?}");
    fx.wait_stats("the rotation delivered over SDS", |s| {
        stat(
            s,
            "cluster.payments.client_ssl_socket_factory.ssl_context_update_by_sds",
        ) >= 2
            && stat(s, "sds.payments/cert.update_success") >= 2
            && stat(s, "sds.payments/cert.update_rejected") == 0
    })
    .await;
}
flavors!(
    rotation_fails_no_request,
    rotation_fails_no_request_envoy,
    rotation_fails_no_request_legate
);

/// ALPN follows the cluster's protocol (h2 for `protocol: http2`), `min_version: "1.3"`
/// negotiates TLS 1.3, and SAN matchers of every type pass on any match (a DNS and an IP
/// SAN of the payments certificate, next to a URI that does not match).
async fn alpn_versions_and_san_types(flavor: Flavor) {
    let services = r#"
  secure-h2:
    endpoints: [{upstream}]
    protocol: http2
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      min_version: "1.3"
      verify_san: [spiffe://example.org/ns/default/sa/nobody, { dns: payments.internal }]
  by-ip:
    endpoints: [{upstream}]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      verify_san: [{ ip: 127.0.0.1 }]
"#;
    let fx = Fixture::start(flavor, services, UpstreamOptions::default()).await;
    let r = fx.get("secure-h2").await;
    assert_eq!(r.status, 200, "{}: {}", flavor.name(), r.body);
    assert_eq!(r.header(TLS_VERSION_HEADER), Some("TLSv1.3"));
    assert_eq!(r.header(TLS_ALPN_HEADER), Some("h2"), "{}", flavor.name());
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "{}: h2 by ALPN",
        flavor.name()
    );
    let r = fx.get("by-ip").await;
    assert_eq!(r.status, 200, "{}: {}", flavor.name(), r.body);
    assert_eq!(
        r.header(TLS_ALPN_HEADER),
        Some("http/1.1"),
        "{}",
        flavor.name()
    );
    assert_eq!(
        r.json()["version"],
        "HTTP/1.1",
        "{}: http/1.1 by ALPN",
        flavor.name()
    );
    let stats = fx.upstream.stats();
    assert_eq!((stats.http2_connections, stats.http1_connections), (1, 1));
    fx.wait_stats("TLS 1.3 with both", |s| {
        stat(s, "cluster.secure-h2.ssl.versions.TLSv1.3") >= 1
            && stat(s, "cluster.by-ip.ssl.handshake") >= 1
    })
    .await;
}
flavors!(
    alpn_versions_and_san_types,
    alpn_versions_and_san_types_envoy,
    alpn_versions_and_san_types_legate
);
