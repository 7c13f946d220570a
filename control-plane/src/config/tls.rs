//! `services.<name>.tls` → [`Tls`]: the keys, and the files they name.
//!
//! The loader reads the certificate and key files here (I/O belongs to loading; translation only
//! copies bytes), and checks them: every certificate parses, the key parses, and the key belongs
//! to the leaf certificate. A problem is reported at the key that names the file. Key bytes never
//! appear in a message.

use super::node::{Kind, Node};
use super::reader::{Diag, MapReader, describe, did_you_mean, list, non_empty_string, string};
use crate::model::{Identity, PemFile, PrivateKeyPem, Protocol, SanMatcher, Tls, TlsVersion};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &str = "h2";
/// The ALPN protocol id of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &str = "http/1.1";

/// Reads a `tls` mapping. `base_dir` resolves relative paths; `protocol` gives the ALPN default.
pub(crate) fn build(
    node: &Node,
    what: &str,
    base_dir: &Path,
    protocol: Protocol,
    diag: &mut Diag,
) -> Option<Tls> {
    let errors_before = diag.count();
    let mut m = MapReader::new(node, what, diag)?;
    let ca_node = m.get("ca");
    let cert_node = m.get("cert");
    let key_node = m.get("key");
    let sni = m.get("sni").and_then(|n| sni(n, diag));
    let verify_san_node = m.get("verify_san");
    let verify_san: Vec<SanMatcher> = verify_san_node
        .and_then(|n| list(n, "`verify_san`", diag))
        .map(|items| items.iter().filter_map(|i| san(i, diag)).collect())
        .unwrap_or_default();
    let min_version = m.get("min_version").and_then(|n| min_version(n, diag));
    let alpn = m.get("alpn").and_then(|n| alpn(n, protocol, diag));
    m.finish(diag);

    let ca = ca_node.and_then(|n| ca_file(n, base_dir, diag));
    let identity = match (cert_node, key_node) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            let (given, missing) = if cert_node.is_some() {
                ("cert", "key")
            } else {
                ("key", "cert")
            };
            diag.at(
                &node.loc,
                format!("{what} has `{given}` but no `{missing}`; give both for mTLS, or neither"),
            );
            // Still check the file that is there, so that all problems show at once.
            if let Some(n) = cert_node {
                cert_file(n, base_dir, diag);
            }
            if let Some(n) = key_node {
                key_file(n, base_dir, diag);
            }
            None
        }
        (Some(cert_node), Some(key_node)) => identity(cert_node, key_node, base_dir, diag),
    };
    if let Some(n) = verify_san_node
        && ca_node.is_none()
        && !verify_san.is_empty()
    {
        diag.at(
            &n.loc,
            "`verify_san` needs `ca`: subject alternative names are checked only on a certificate verified against a trusted CA (Envoy rejects SAN checks without one)",
        );
    }
    if diag.count() > errors_before {
        return None;
    }
    Some(Tls {
        ca,
        identity,
        sni,
        verify_san,
        min_version,
        alpn: alpn.unwrap_or_else(|| vec![default_alpn(protocol).to_string()]),
    })
}

/// The ALPN protocol a service's own protocol needs.
fn default_alpn(protocol: Protocol) -> &'static str {
    if protocol.is_http2() {
        ALPN_H2
    } else {
        ALPN_HTTP1
    }
}

/// `sni`: a DNS name (RFC 6066 forbids IP literals in SNI).
fn sni(node: &Node, diag: &mut Diag) -> Option<String> {
    let text = non_empty_string(node, "`sni`", diag)?;
    if text.parse::<IpAddr>().is_ok() {
        diag.at(
            &node.loc,
            format!(
                "`sni` must be a DNS name, not an IP address (`{text}`): TLS sends no SNI for IP addresses; leave `sni` out"
            ),
        );
        return None;
    }
    if rustls_pki_types::DnsName::try_from(text.as_str()).is_err() {
        diag.at(
            &node.loc,
            format!("`sni` must be a DNS name, e.g. `payments.internal`, found `{text}`"),
        );
        return None;
    }
    Some(text)
}

/// One `verify_san` entry: text typed by its form, or `{ uri | dns | ip: value }`.
fn san(node: &Node, diag: &mut Diag) -> Option<SanMatcher> {
    match &node.kind {
        Kind::Scalar { .. } => {
            let text = non_empty_string(node, "a `verify_san` entry", diag)?;
            if text.contains("://") {
                uri_san(node, text, diag)
            } else if let Ok(ip) = text.parse::<IpAddr>() {
                Some(SanMatcher::Ip(ip))
            } else {
                dns_san(node, text, diag)
            }
        }
        Kind::Map(entries) if entries.len() == 1 => {
            let (key, value) = &entries[0];
            let kind = string(key, "a `verify_san` type", diag)?;
            match kind.as_str() {
                "uri" => {
                    let text = non_empty_string(value, "a `uri` SAN", diag)?;
                    uri_san(value, text, diag)
                }
                "dns" => {
                    let text = non_empty_string(value, "a `dns` SAN", diag)?;
                    dns_san(value, text, diag)
                }
                "ip" => {
                    let text = non_empty_string(value, "an `ip` SAN", diag)?;
                    match text.parse::<IpAddr>() {
                        Ok(ip) => Some(SanMatcher::Ip(ip)),
                        Err(_) => {
                            diag.at(
                                &value.loc,
                                format!("`{text}` is not an IP address (e.g. `10.0.0.1`, `::1`)"),
                            );
                            None
                        }
                    }
                }
                other => {
                    let hint = did_you_mean(other, ["uri", "dns", "ip"]);
                    diag.at(
                        &key.loc,
                        format!("unknown SAN type `{other}`{hint} (expected one of: uri, dns, ip)"),
                    );
                    None
                }
            }
        }
        _ => {
            diag.at(
                &node.loc,
                format!(
                    "a `verify_san` entry is a name (`spiffe://…`, an IP or a DNS name) or `{{ uri | dns | ip: value }}`, found {}",
                    describe(node)
                ),
            );
            None
        }
    }
}

fn uri_san(node: &Node, text: String, diag: &mut Diag) -> Option<SanMatcher> {
    let scheme_ok = text.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if !scheme_ok || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        diag.at(
            &node.loc,
            format!("`{text}` is not a URI, e.g. `spiffe://example.org/ns/default/sa/payments`"),
        );
        return None;
    }
    Some(SanMatcher::Uri(text))
}

fn dns_san(node: &Node, text: String, diag: &mut Diag) -> Option<SanMatcher> {
    // A wildcard certificate SAN matches an exact name; the matcher itself is exact.
    if rustls_pki_types::DnsName::try_from(text.as_str()).is_err() {
        diag.at(
            &node.loc,
            format!(
                "`{text}` is not a DNS name; a SAN is a DNS name, an IP address, or a URI such as `spiffe://example.org/ns/default/sa/payments`"
            ),
        );
        return None;
    }
    Some(SanMatcher::Dns(text.to_ascii_lowercase()))
}

fn min_version(node: &Node, diag: &mut Diag) -> Option<TlsVersion> {
    let text = string(node, "`min_version`", diag)?;
    match text.as_str() {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        "1.0" | "1.1" => {
            diag.at(
                &node.loc,
                format!(
                    "`min_version` `{text}` is not supported: TLS 1.0 and 1.1 are obsolete (RFC 8996); use `\"1.2\"` or `\"1.3\"`"
                ),
            );
            None
        }
        _ => {
            diag.at(
                &node.loc,
                format!("unknown `min_version` `{text}` (expected one of: \"1.2\", \"1.3\")"),
            );
            None
        }
    }
}

/// `alpn`: the protocols offered. It must offer the one the service speaks: the cluster's codec
/// does not follow ALPN, so a negotiated protocol other than the service's would break requests.
fn alpn(node: &Node, protocol: Protocol, diag: &mut Diag) -> Option<Vec<String>> {
    let items = list(node, "`alpn`", diag)?;
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(id) = non_empty_string(item, "an `alpn` entry", diag) else {
            ok = false;
            continue;
        };
        if id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            diag.at(
                &item.loc,
                format!("`{id}` is not an ALPN protocol id (e.g. `h2`, `http/1.1`)"),
            );
            ok = false;
            continue;
        }
        if out.contains(&id) {
            diag.at(&item.loc, format!("`{id}` is listed twice in `alpn`"));
            ok = false;
            continue;
        }
        out.push(id);
    }
    if !ok {
        return None;
    }
    let needed = default_alpn(protocol);
    if !out.iter().any(|id| id == needed) {
        diag.at(
            &node.loc,
            format!(
                "`alpn` must offer `{needed}`, the protocol this service speaks; an upstream that picked another protocol would not be understood"
            ),
        );
        return None;
    }
    Some(out)
}

/// Reads the file named by `node` (a path relative to `base_dir`).
fn read(node: &Node, key: &str, base_dir: &Path, diag: &mut Diag) -> Option<(PathBuf, Vec<u8>)> {
    let written = non_empty_string(node, &format!("`{key}`"), diag)?;
    let path = base_dir.join(&written);
    let result = match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => Err("not a file".to_string()),
        Ok(_) => std::fs::read(&path).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(bytes) => Some((path, bytes)),
        Err(problem) => {
            diag.at(
                &node.loc,
                format!("cannot read `{key}` file `{}`: {problem}", path.display()),
            );
            None
        }
    }
}

/// A PEM error in words, without any of the file's content.
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block has no `-----END {}-----` line",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed".to_string(),
        pem::Error::Base64Decode(_) => "a PEM block's base64 does not decode".to_string(),
        pem::Error::SectionTooLarge => "a PEM block is too large".to_string(),
        _ => "it is not PEM".to_string(),
    }
}

/// The certificates of a PEM file; an error (at `node`) when there are none, when one does not
/// parse, or when the file also holds a private key (it would be served as public data).
fn certificates(
    node: &Node,
    key: &str,
    path: &Path,
    bytes: &[u8],
    diag: &mut Diag,
) -> Option<Vec<CertificateDer<'static>>> {
    let file = format!("`{key}` file `{}`", path.display());
    let mut certs = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match section {
            Ok((SectionKind::Certificate, der)) => certs.push(CertificateDer::from(der)),
            Ok((
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey,
                _,
            )) => {
                diag.at(
                    &node.loc,
                    format!(
                        "{file} contains a private key; keep keys in the `key` file only (this file is served to data planes as public data)"
                    ),
                );
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                diag.at(
                    &node.loc,
                    format!("{file} is not valid PEM: {}", pem_problem(&e)),
                );
                return None;
            }
        }
    }
    if certs.is_empty() {
        diag.at(
            &node.loc,
            format!("{file} has no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks"),
        );
        return None;
    }
    for (i, der) in certs.iter().enumerate() {
        if let Err(e) = rustls::server::ParsedCertificate::try_from(der) {
            diag.at(
                &node.loc,
                format!(
                    "{file}: certificate {} of {} does not parse: {e}",
                    i + 1,
                    certs.len()
                ),
            );
            return None;
        }
    }
    Some(certs)
}

/// `ca`: trust anchors.
fn ca_file(node: &Node, base_dir: &Path, diag: &mut Diag) -> Option<PemFile> {
    let (path, pem) = read(node, "ca", base_dir, diag)?;
    let certs = certificates(node, "ca", &path, &pem, diag)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(der) {
            diag.at(
                &node.loc,
                format!(
                    "`ca` file `{}`: certificate {} cannot be a trust anchor: {e}",
                    path.display(),
                    i + 1
                ),
            );
            return None;
        }
    }
    Some(PemFile { path, pem })
}

/// `cert` alone (reported only; used when `key` is missing).
fn cert_file(node: &Node, base_dir: &Path, diag: &mut Diag) {
    if let Some((path, pem)) = read(node, "cert", base_dir, diag) {
        certificates(node, "cert", &path, &pem, diag);
    }
}

/// `key` alone: read and parsed into a signing key.
fn key_file(
    node: &Node,
    base_dir: &Path,
    diag: &mut Diag,
) -> Option<(PrivateKeyPem, std::sync::Arc<dyn rustls::sign::SigningKey>)> {
    let (path, pem) = read(node, "key", base_dir, diag)?;
    let file = format!("`key` file `{}`", path.display());
    let der = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(der) => der,
        Err(pem::Error::NoItemsFound) => {
            diag.at(
                &node.loc,
                format!(
                    "{file} has no private key: expected a PEM `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block (encrypted keys are not supported)"
                ),
            );
            return None;
        }
        Err(e) => {
            diag.at(
                &node.loc,
                format!("{file} is not valid PEM: {}", pem_problem(&e)),
            );
            return None;
        }
    };
    match rustls::crypto::ring::sign::any_supported_type(&der) {
        Ok(signer) => Some((PrivateKeyPem::new(path, pem), signer)),
        Err(_) => {
            diag.at(
                &node.loc,
                format!(
                    "{file}: the private key does not parse or is of an unsupported type (supported: ECDSA P-256/P-384, Ed25519, RSA)"
                ),
            );
            None
        }
    }
}

/// `cert` + `key`: both read, and the key checked against the leaf certificate.
fn identity(
    cert_node: &Node,
    key_node: &Node,
    base_dir: &Path,
    diag: &mut Diag,
) -> Option<Identity> {
    let cert = read(cert_node, "cert", base_dir, diag).and_then(|(path, pem)| {
        let chain = certificates(cert_node, "cert", &path, &pem, diag)?;
        Some((PemFile { path, pem }, chain))
    });
    let key = key_file(key_node, base_dir, diag);
    let ((cert, chain), (key, signer)) = (cert?, key?);
    let certified = rustls::sign::CertifiedKey::new(chain, signer);
    if let Err(e) = certified.keys_match() {
        let why = match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "its public key differs from the certificate's".to_string()
            }
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown) => {
                "its public key cannot be derived to compare".to_string()
            }
            other => other.to_string(),
        };
        diag.at(
            &key_node.loc,
            format!(
                "`key` file `{}` does not match the first certificate of `cert` file `{}`: {why}",
                key.path().display(),
                cert.path.display()
            ),
        );
        return None;
    }
    Some(Identity { cert, key })
}

#[cfg(test)]
mod tests {
    use super::super::load_str;
    use crate::certs::{InitOptions, init};
    use crate::model::{Config, Protocol, SanMatcher, TlsVersion};
    use std::net::IpAddr;
    use std::path::PathBuf;

    /// A temporary directory with `certs/` from `certs init` (payments, checkout) and a second,
    /// unrelated CA in `other/`.
    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().unwrap();
            init(&InitOptions::new(
                dir.path().join("certs"),
                "example.org",
                &["payments", "checkout"],
            ))
            .unwrap();
            init(&InitOptions::new(
                dir.path().join("other"),
                "example.org",
                &["payments"],
            ))
            .unwrap();
            Dir { dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn yaml(&self) -> PathBuf {
            self.path("svc.yaml")
        }

        fn load(&self, text: &str) -> Result<Config, Vec<String>> {
            load_str(&self.yaml(), text)
                .map_err(|errors| errors.iter().map(ToString::to_string).collect())
        }

        fn errors(&self, text: &str) -> Vec<String> {
            let f = self.yaml().display().to_string();
            let d = self.dir.path().display().to_string();
            match self.load(text) {
                Ok(c) => panic!("expected errors, loaded {c:#?}"),
                Err(errors) => errors
                    .into_iter()
                    .map(|e| e.replace(&f, "svc.yaml").replace(&d, "DIR"))
                    .collect(),
            }
        }
    }

    #[test]
    fn a_full_tls_block_is_read_with_its_files() {
        let d = Dir::new();
        let config = d
            .load(
                r#"
services:
  payments:
    endpoints: [127.0.0.1:9001]
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      sni: payments.internal
      verify_san:
        - spiffe://example.org/ns/default/sa/payments
        - payments.internal
        - 127.0.0.1
        - "::0:1"
        - { dns: Payments }
        - { uri: "https://payments.example/x" }
        - { ip: 10.0.0.1 }
      min_version: "1.3"
      alpn: [h2, http/1.1]
"#,
            )
            .unwrap();
        let tls = config.services["payments"].tls.as_ref().unwrap();
        let ca = tls.ca.as_ref().unwrap();
        assert_eq!(ca.path, d.path("certs/ca.pem"));
        assert_eq!(ca.pem, std::fs::read(d.path("certs/ca.pem")).unwrap());
        let id = tls.identity.as_ref().unwrap();
        assert_eq!(id.cert.path, d.path("certs/checkout.pem"));
        assert_eq!(id.key.path(), d.path("certs/checkout.key"));
        assert_eq!(
            id.key.expose(),
            std::fs::read(d.path("certs/checkout.key")).unwrap()
        );
        assert_eq!(tls.sni.as_deref(), Some("payments.internal"));
        let ip = |s: &str| SanMatcher::Ip(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            tls.verify_san,
            vec![
                SanMatcher::Uri("spiffe://example.org/ns/default/sa/payments".into()),
                SanMatcher::Dns("payments.internal".into()),
                ip("127.0.0.1"),
                ip("::1"),
                SanMatcher::Dns("payments".into()),
                SanMatcher::Uri("https://payments.example/x".into()),
                ip("10.0.0.1"),
            ]
        );
        assert_eq!(tls.min_version, Some(TlsVersion::Tls13));
        assert_eq!(tls.alpn, vec!["h2", "http/1.1"]);
    }

    #[test]
    fn alpn_defaults_to_the_service_protocol() {
        let d = Dir::new();
        let config = d
            .load(
                "
services:
  a: { endpoints: [127.0.0.1:1], tls: {} }
  b: { endpoints: [127.0.0.1:1], protocol: http2, tls: { ca: certs/ca.pem } }
  c: { endpoints: [127.0.0.1:1], protocol: grpc, tls: { min_version: 1.2 } }
",
            )
            .unwrap();
        let tls = |name: &str| config.services[name].tls.clone().unwrap();
        assert_eq!(tls("a").alpn, vec!["http/1.1"]);
        assert_eq!(tls("b").alpn, vec!["h2"]);
        assert_eq!(tls("c").alpn, vec!["h2"]);
        assert_eq!(tls("c").min_version, Some(TlsVersion::Tls12));
        assert!(tls("a").ca.is_none() && tls("a").identity.is_none());
        assert_eq!(config.services["b"].protocol, Protocol::Http2);
    }

    #[test]
    fn unreadable_and_mismatched_files_are_reported_at_their_key() {
        let d = Dir::new();
        std::fs::write(d.path("empty.pem"), "nothing here\n").unwrap();
        std::fs::write(d.path("broken.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        std::fs::write(
            d.path("garbage.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut bundle = std::fs::read(d.path("certs/checkout.pem")).unwrap();
        bundle.extend(std::fs::read(d.path("certs/checkout.key")).unwrap());
        std::fs::write(d.path("bundle.pem"), bundle).unwrap();
        let text = "\
services:
  a:
    endpoints: [127.0.0.1:1]
    tls: { ca: missing.pem, cert: certs/checkout.pem, key: certs/payments.key }
  b:
    endpoints: [127.0.0.1:1]
    tls: { ca: empty.pem, cert: broken.pem, key: certs/checkout.pem }
  c:
    endpoints: [127.0.0.1:1]
    tls: { ca: garbage.pem, cert: bundle.pem, key: certs/checkout.key }
  d:
    endpoints: [127.0.0.1:1]
    tls: { ca: certs, cert: certs/checkout.pem, key: other/payments.key }
  e:
    endpoints: [127.0.0.1:1]
    tls: { cert: certs/checkout.key }
";
        assert_eq!(
            d.errors(text),
            vec![
                "svc.yaml:4:16: cannot read `ca` file `DIR/missing.pem`: No such file or directory (os error 2)",
                "svc.yaml:4:60: `key` file `DIR/certs/payments.key` does not match the first certificate of `cert` file `DIR/certs/checkout.pem`: its public key differs from the certificate's",
                "svc.yaml:7:16: `ca` file `DIR/empty.pem` has no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks",
                "svc.yaml:7:33: `cert` file `DIR/broken.pem` is not valid PEM: a PEM block has no `-----END CERTIFICATE-----` line",
                "svc.yaml:7:50: `key` file `DIR/certs/checkout.pem` has no private key: expected a PEM `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block (encrypted keys are not supported)",
                "svc.yaml:10:16: `ca` file `DIR/garbage.pem`: certificate 1 of 1 does not parse: invalid peer certificate: BadEncoding",
                "svc.yaml:10:35: `cert` file `DIR/bundle.pem` contains a private key; keep keys in the `key` file only (this file is served to data planes as public data)",
                "svc.yaml:13:16: cannot read `ca` file `DIR/certs`: not a file",
                "svc.yaml:13:54: `key` file `DIR/other/payments.key` does not match the first certificate of `cert` file `DIR/certs/checkout.pem`: its public key differs from the certificate's",
                "svc.yaml:16:10: `tls` of service `e` has `cert` but no `key`; give both for mTLS, or neither",
                "svc.yaml:16:18: `cert` file `DIR/certs/checkout.key` contains a private key; keep keys in the `key` file only (this file is served to data planes as public data)",
            ]
        );
    }

    #[test]
    fn settings_are_checked_at_their_node() {
        let d = Dir::new();
        let text = r#"
services:
  a:
    endpoints: [127.0.0.1:1]
    tls: { verify_san: [payments], sni: 10.0.0.1 }
  b:
    endpoints: [127.0.0.1:1]
    protocol: http2
    tls:
      ca: certs/ca.pem
      sni: "bad name"
      verify_san: ["spiffe:/x", "bad name", { ip: nope }, { email: a@b }, [x]]
      min_version: "1.1"
      alpn: [http/1.1]
  c:
    endpoints: [127.0.0.1:1]
    tls: { min_version: 2, alpn: [http/1.1, http/1.1], cipher: x }
"#;
        assert_eq!(
            d.errors(text),
            vec![
                "svc.yaml:5:24: `verify_san` needs `ca`: subject alternative names are checked only on a certificate verified against a trusted CA (Envoy rejects SAN checks without one)",
                "svc.yaml:5:41: `sni` must be a DNS name, not an IP address (`10.0.0.1`): TLS sends no SNI for IP addresses; leave `sni` out",
                "svc.yaml:11:12: `sni` must be a DNS name, e.g. `payments.internal`, found `bad name`",
                "svc.yaml:12:20: `spiffe:/x` is not a DNS name; a SAN is a DNS name, an IP address, or a URI such as `spiffe://example.org/ns/default/sa/payments`",
                "svc.yaml:12:33: `bad name` is not a DNS name; a SAN is a DNS name, an IP address, or a URI such as `spiffe://example.org/ns/default/sa/payments`",
                "svc.yaml:12:51: `nope` is not an IP address (e.g. `10.0.0.1`, `::1`)",
                "svc.yaml:12:61: unknown SAN type `email` (expected one of: uri, dns, ip)",
                "svc.yaml:12:75: a `verify_san` entry is a name (`spiffe://…`, an IP or a DNS name) or `{ uri | dns | ip: value }`, found a list",
                "svc.yaml:13:20: `min_version` `1.1` is not supported: TLS 1.0 and 1.1 are obsolete (RFC 8996); use `\"1.2\"` or `\"1.3\"`",
                "svc.yaml:14:13: `alpn` must offer `h2`, the protocol this service speaks; an upstream that picked another protocol would not be understood",
                "svc.yaml:17:25: unknown `min_version` `2` (expected one of: \"1.2\", \"1.3\")",
                "svc.yaml:17:45: `http/1.1` is listed twice in `alpn`",
                "svc.yaml:17:56: unknown key `cipher` in `tls` of service `c`",
            ]
        );
    }

    #[test]
    fn key_bytes_never_show_in_debug_or_serialized_config() {
        let d = Dir::new();
        let config = d
            .load(
                "
services:
  payments:
    endpoints: [127.0.0.1:9001]
    tls: { ca: certs/ca.pem, cert: certs/checkout.pem, key: certs/checkout.key }
",
            )
            .unwrap();
        let key = std::fs::read_to_string(d.path("certs/checkout.key")).unwrap();
        let body: String = key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        let debug = format!("{config:?}");
        let json = serde_json::to_string(&config).unwrap();
        for shown in [&debug, &json] {
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            assert!(!shown.contains(&body[..40]), "{shown}");
        }
        assert!(debug.contains("[redacted]"));
        let tls = &serde_json::to_value(&config).unwrap()["services"]["payments"]["tls"];
        assert_eq!(
            tls["identity"]["key"],
            serde_json::json!({ "path": d.path("certs/checkout.key") })
        );
        assert_eq!(tls["ca"]["path"], serde_json::json!(d.path("certs/ca.pem")));
        assert_eq!(tls["ca"]["version"].as_str().map(str::len), Some(16));
    }
}
