//! TLS mode against a real rustls client: ALPN picks HTTP/1.1 or h2, client certificates are
//! required with a client CA (and their serial comes back in a header), a client without one
//! or with one from another CA fails the handshake, and `close_after_response` makes every
//! request a new connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use legate_test_upstream::{
    CLIENT_SERIAL_HEADER, TLS_ALPN_HEADER, TLS_VERSION_HEADER, TlsSettings, Upstream,
    certificate_serial, pem_file_serial,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;
use tokio::net::TcpStream;

/// A CA and leaves signed by it, written as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::with_prefix("upstream-tls-").expect("temp dir");
        let pki = Pki { dir };
        let ca = pki.ca("ca");
        let other = pki.ca("other-ca");
        for name in ["server", "client", "client2"] {
            pki.leaf(&ca, name);
        }
        pki.leaf(&other, "stranger");
        pki
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self, name: &str) -> Issuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write");
        Issuer::new(params, key)
    }

    fn leaf(&self, issuer: &Issuer<'static, KeyPair>, name: &str) {
        let params = CertificateParams::new(vec![name.to_string()]).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("leaf");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
    }

    fn settings(&self, mtls: bool) -> TlsSettings {
        let s = TlsSettings::new(self.path("server.pem"), self.path("server.key"));
        if mtls {
            s.client_ca(self.path("ca.pem"))
        } else {
            s
        }
    }

    /// A client trusting `ca.pem`, presenting `cert` if given, offering `alpn`.
    fn client(&self, cert: Option<&str>, alpn: &[&str]) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.path("ca.pem")).expect("ca"))
            .expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(name) => builder
                .with_client_auth_cert(
                    vec![
                        CertificateDer::from_pem_file(self.path(&format!("{name}.pem")))
                            .expect("cert"),
                    ],
                    PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).expect("key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

struct Reply {
    version: Version,
    status: u16,
    serial: Option<String>,
    tls_version: Option<String>,
    alpn: Option<String>,
    connection_close: bool,
    /// Whether the server closed the connection within a second of the response.
    closed: bool,
}

/// One GET over a new TLS connection; `Err` when the handshake or the request fails.
async fn get(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> Result<Reply, String> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("server").map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let req = Request::get("https://server/x")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        // The senders stay alive until the end, so a driver ends only when the server closes.
        let (resp, driver, _h1, _h2) = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            (resp, driver, None, Some(send))
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            (resp, driver, Some(send), None)
        };
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let version = resp.version();
        let status = resp.status().as_u16();
        let serial = header(CLIENT_SERIAL_HEADER);
        let tls_version = header(TLS_VERSION_HEADER);
        let alpn = header(TLS_ALPN_HEADER);
        let connection_close = header("connection").as_deref() == Some("close");
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let closed = tokio::time::timeout(Duration::from_secs(1), driver)
            .await
            .is_ok();
        Ok(Reply {
            version,
            status,
            serial,
            tls_version,
            alpn,
            connection_close,
            closed,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn serial_of(path: &Path) -> String {
    let pem = std::fs::read(path).expect("pem");
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(&pem).expect("der");
    certificate_serial(&der).expect("serial")
}

#[tokio::test]
async fn mtls_alpn_and_client_serial() {
    let pki = Pki::new();
    let up = Upstream::builder("secure")
        .tls(pki.settings(true))
        .start()
        .await
        .expect("start");
    assert!(up.is_tls());
    for (alpn, version) in [
        (&["http/1.1"][..], Version::HTTP_11),
        (&["h2", "http/1.1"][..], Version::HTTP_2),
    ] {
        let r = get(up.addr, &pki.client(Some("client"), alpn))
            .await
            .expect("mTLS request");
        assert_eq!(r.status, 200);
        assert_eq!(r.version, version, "{alpn:?}");
        let expected = if version == Version::HTTP_2 {
            "h2"
        } else {
            "http/1.1"
        };
        assert_eq!(r.alpn.as_deref(), Some(expected));
        assert_eq!(
            r.serial.as_deref(),
            Some(serial_of(&pki.path("client.pem")).as_str())
        );
        assert_eq!(r.tls_version.as_deref(), Some("TLSv1.3"));
        assert!(!r.connection_close && !r.closed, "kept alive");
    }
    let r = get(up.addr, &pki.client(Some("client2"), &[]))
        .await
        .expect("another client certificate");
    let serial2 = pem_file_serial(&pki.path("client2.pem")).expect("serial");
    assert_eq!(r.serial.as_deref(), Some(serial2.as_str()));
    assert_ne!(serial2, serial_of(&pki.path("client.pem")));

    // No client certificate, or one from another CA: the handshake fails.
    for cert in [None, Some("stranger")] {
        let err = get(up.addr, &pki.client(cert, &[]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{cert:?} must be refused"));
        assert!(!err.contains("timed out"), "{cert:?}: {err}");
    }
    let stats = up.stats();
    assert_eq!(stats.tls_handshakes, 3, "{stats:?}");
    // The server sees the failure only once the client's alert or close arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while up.stats().tls_handshake_errors < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.stats().tls_handshake_errors, 2, "{:?}", up.stats());
    assert_eq!(up.stats().requests, 3);
    let serials = up.client_serials();
    assert_eq!(serials[&serial_of(&pki.path("client.pem"))], 2);
    assert_eq!(serials[&serial2], 1);
}

#[tokio::test]
async fn tls_without_client_ca_needs_no_client_certificate() {
    let pki = Pki::new();
    let up = Upstream::builder("tls")
        .tls(pki.settings(false))
        .start()
        .await
        .expect("start");
    let r = get(up.addr, &pki.client(None, &["http/1.1"]))
        .await
        .expect("TLS without a client certificate");
    assert_eq!(r.status, 200);
    assert_eq!(r.serial, None);
    assert!(r.tls_version.is_some());
    let r = get(up.addr, &pki.client(None, &[]))
        .await
        .expect("TLS without ALPN");
    assert_eq!(r.alpn, None, "no ALPN offered, none chosen");
}

#[tokio::test]
async fn close_after_response_closes_every_connection() {
    let pki = Pki::new();
    let up = Upstream::builder("closing")
        .tls(pki.settings(true))
        .close_after_response(true)
        .start()
        .await
        .expect("start");
    let r = get(up.addr, &pki.client(Some("client"), &["http/1.1"]))
        .await
        .expect("HTTP/1.1");
    assert!(r.connection_close, "HTTP/1.1 gets connection: close");
    assert!(r.closed, "HTTP/1.1 connection closed");
    let r = get(up.addr, &pki.client(Some("client"), &["h2"]))
        .await
        .expect("h2");
    assert_eq!(r.version, Version::HTTP_2);
    assert!(r.closed, "h2 connection closed (GOAWAY)");
    assert_eq!(up.stats().tls_handshakes, 2);
}

#[tokio::test]
async fn unusable_files_fail_at_start_naming_the_file() {
    let pki = Pki::new();
    let missing = pki.path("missing.pem");
    let err = Upstream::builder("bad")
        .tls(TlsSettings::new(&missing, pki.path("server.key")))
        .start()
        .await
        .expect_err("missing certificate");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = Upstream::builder("bad")
        .tls(TlsSettings::new(
            pki.path("server.pem"),
            pki.path("client.key"),
        ))
        .start()
        .await
        .expect_err("key of another certificate");
    assert!(err.to_string().contains("client.key"), "{err}");
}

/// The flags the benchmark relies on: `--tls-cert`, `--tls-key`, `--client-ca`,
/// `--close-after-response`, documented in `--help`.
#[tokio::test]
async fn binary_serves_mtls_from_flags() {
    let bin = env!("CARGO_BIN_EXE_legate-upstream");
    let help = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--tls-cert",
        "--tls-key",
        "--client-ca",
        "--close-after-response",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }

    let pki = Pki::new();
    let mut child = tokio::process::Command::new(bin)
        .args(["--name", "bin-tls", "--close-after-response", "--tls-cert"])
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server.key"))
        .arg("--client-ca")
        .arg(pki.path("ca.pem"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("the address line in time")
        .expect("stdout")
        .expect("a line");
    let addr: SocketAddr = line
        .strip_prefix("legate-upstream bin-tls listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    let r = get(addr, &pki.client(Some("client"), &["http/1.1"]))
        .await
        .expect("mTLS request");
    assert_eq!(r.status, 200);
    assert!(r.serial.is_some() && r.connection_close && r.closed);
    assert!(get(addr, &pki.client(None, &["http/1.1"])).await.is_err());

    // --tls-key without --tls-cert is a usage error.
    let out = std::process::Command::new(bin)
        .args(["--name", "x", "--tls-key"])
        .arg(pki.path("server.key"))
        .output()
        .expect("run");
    assert!(!out.status.success());
}
