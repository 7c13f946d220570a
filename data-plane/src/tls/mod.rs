//! Upstream TLS: rustls client configurations built from a cluster's `UpstreamTlsContext` and
//! its SDS secrets, the handshake the connection pools run, Envoy's `ssl.*` stats, the secret
//! store the manager keeps, and the key redaction of `/config_dump`.
//!
//! Layout:
//! - `material.rs`: data sources read, PEM parsed, keys checked against certificates;
//!   [`Secret`] (a validated SDS secret);
//! - `verifier.rs`: [`UpstreamVerifier`] (trusted CA + SAN matchers, Envoy's semantics);
//! - `san.rs`: the SANs of a certificate (a minimal DER walker);
//! - `validity.rs`: a certificate's `notAfter` (for the expiration gauges);
//! - `store.rs`: [`SecretStore`], the SDS secrets in force, and how an update reaches the
//!   clusters that reference them;
//! - `stats.rs`: [`SslStats`], Envoy's `ssl.*` stats and certificate expiration gauges;
//! - `stream.rs`: [`TlsStream`], an established connection counting TLS errors;
//! - `connector.rs`: a tonic connector for the xDS channel over TLS;
//! - `redact.rs`: private keys out of `/config_dump` (as Envoy redacts `sensitive` fields).
//!
//! Behaviour, as Envoy's:
//! - SNI is `sni` (none when empty); ALPN is `alpn_protocols`, else by the cluster's protocol
//!   (`h2` or `http/1.1`), as Envoy's connection pools set it;
//! - versions: `tls_minimum_protocol_version` to `tls_maximum_protocol_version`, both TLS 1.2
//!   by default for a client (so TLS 1.3 needs the maximum raised). A minimum above the maximum
//!   is accepted and every handshake fails, as with Envoy;
//! - the server certificate: see [`verifier`]; without a trusted CA it is not verified;
//! - a client certificate is presented when configured;
//! - a handshake or verification failure is a connect failure (`upstream_cx_connect_fail`,
//!   local origin for outlier detection), never a fallback to plaintext. `connect_timeout`
//!   covers the TCP connect and the handshake;
//! - rotation: a new secret builds a new client configuration with a new generation; new
//!   connections use it, pooled connections of an older generation are not reused (they close
//!   when idle; requests in flight on them finish);
//! - stats: `ssl.handshake`, `ssl.connection_error` (also for a TLS error after the handshake,
//!   such as TLS 1.3's `certificate_required` alert), `ssl.fail_verify_*`, `versions.*`,
//!   `ciphers.*`, `curves.*`, and `ssl.certificate.<name>.expiration_unix_time_seconds` for the
//!   client certificate and the trusted CA in force (named by SDS secret, or
//!   `unnamed_cert_<hash>` / `unnamed_ca_cert_<hash>` for inline material, as Envoy names them);
//! - a cluster whose SDS secrets have not arrived warms until they do, or until the initial
//!   fetch timeout (see `runtime::manager`); then its connections fail with
//!   `client_ssl_socket_factory.upstream_context_secrets_not_ready`, as Envoy's.
//!
//! Crypto: rustls with the `ring` provider, TLS 1.2 and 1.3, no session tickets across
//! configurations (each configuration has its own resumption cache, so a rotated client
//! certificate is presented on the next connection).

mod connector;
mod material;
pub mod redact;
mod san;
mod stats;
mod store;
mod stream;
#[cfg(test)]
pub(crate) mod tests;
mod validity;
mod verifier;

pub use connector::TlsConnector;
pub use material::{Secret, Validation, parse_secret};
pub use redact::redact_json;
pub use san::subject_alt_names;
pub use stats::SslStats;
pub use store::{SecretEntry, SecretStore};
pub use stream::TlsStream;
pub use validity::not_after;
pub use verifier::UpstreamVerifier;

use crate::config::{
    CertificateSource, DataSource, TlsVersion, UpstreamProtocol, UpstreamTls, ValidationSource,
};
use crate::stats::Store;
use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// The process's crypto provider: rustls' `ring` provider, whatever else the dependency graph
/// enables.
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A client configuration built from one `UpstreamTlsContext` and the secrets it references.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// False when the version range is empty (every handshake fails, as in Envoy).
    usable: bool,
    /// The certificates in use, by Envoy's certificate name, with their `notAfter` (Unix
    /// seconds): the client certificate and the first trusted CA.
    certificates: Vec<(String, u64)>,
    /// Where [`TlsClient::connect`] counts (the xDS channel's cluster stats).
    stats: Option<Arc<SslStats>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .field("usable", &self.usable)
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// Envoy's name for inline certificate material: `<prefix><first 8 hex digits of the SHA-256
/// of the inline bytes>` (of nothing for a file, so `unnamed_cert_e3b0c442`).
fn unnamed(prefix: &str, source: Option<&DataSource>) -> String {
    let bytes: &[u8] = match source {
        Some(DataSource::Inline(b)) => b,
        _ => &[],
    };
    let digest = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|suite| suite.common.hash_provider.hash(bytes));
    let hex: String = digest
        .as_ref()
        .map(|d| {
            d.as_ref()
                .iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default();
    format!("{prefix}{hex}")
}

/// The secrets a configuration is built from, by name.
pub trait SecretLookup {
    /// The validated secret named `name`, if it has arrived.
    fn secret(&self, name: &str) -> Option<Arc<Secret>>;
}

impl<F: Fn(&str) -> Option<Arc<Secret>>> SecretLookup for F {
    fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self(name)
    }
}

/// No secrets (for contexts that must not use SDS, such as the xDS cluster's).
pub fn no_secrets(_: &str) -> Option<Arc<Secret>> {
    None
}

/// The ALPN protocols a cluster offers: `alpn_protocols`, else by its protocol.
fn alpn(tls: &UpstreamTls, protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    if tls.alpn.is_empty() {
        vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }]
    } else {
        tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    }
}

/// Builds the client configuration of `tls`.
///
/// `Ok(None)`: an SDS secret it references has not arrived yet (the cluster keeps warming).
/// `Err`: ``field: message`` relative to the cluster (e.g.
/// `transport_socket.typed_config.common_tls_context.tls_certificates[0].private_key: cannot
/// read …`), or naming the secret that does not fit.
pub fn build_client(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
    secrets: &dyn SecretLookup,
) -> Result<Option<TlsClient>, String> {
    const COMMON: &str = "transport_socket.typed_config.common_tls_context";
    let mut certificates = Vec::new();
    let certificate: Option<Arc<CertifiedKey>> = match &tls.certificate {
        None => None,
        Some(CertificateSource::Inline(c)) => {
            let key = material::certified_key(c)
                .map_err(|e| format!("{COMMON}.tls_certificates[0].{e}"))?;
            certificates.extend(expiration(unnamed("unnamed_cert_", Some(&c.chain)), &key));
            Some(key)
        }
        Some(CertificateSource::Sds(name)) => match secrets.secret(name).as_deref() {
            None => return Ok(None),
            Some(Secret::Certificate(c)) => {
                certificates.extend(expiration(name.clone(), c));
                Some(c.clone())
            }
            Some(other) => {
                return Err(format!(
                    "{COMMON}.tls_certificate_sds_secret_configs[0]: secret `{name}` is a {}, \
                     not a tls_certificate",
                    other.kind()
                ));
            }
        },
    };
    let validation = match &tls.validation {
        ValidationSource::None => Validation::default(),
        ValidationSource::Inline(v) => {
            let loaded =
                material::validation(v).map_err(|e| format!("{COMMON}.validation_context.{e}"))?;
            if let Some(t) = loaded.ca_not_after {
                certificates.push((unnamed("unnamed_ca_cert_", v.trusted_ca.as_ref()), t));
            }
            loaded
        }
        ValidationSource::Sds { name, default } => {
            let Some(secret) = secrets.secret(name) else {
                return Ok(None);
            };
            let Secret::Validation(dynamic) = &*secret else {
                return Err(format!(
                    "{COMMON}: secret `{name}` is a {}, not a validation_context",
                    secret.kind()
                ));
            };
            let default = material::validation(default).map_err(|e| {
                format!("{COMMON}.combined_validation_context.default_validation_context.{e}")
            })?;
            let merged = dynamic.merged_over(&default);
            if !merged.san_matchers.is_empty() && merged.roots.is_none() {
                return Err(format!(
                    "{COMMON}: secret `{name}`: SAN-based verification of peer certificates \
                     without trusted CA is insecure and not allowed"
                ));
            }
            if let Some(t) = merged.ca_not_after {
                certificates.push((name.clone(), t));
            }
            merged
        }
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let usable = !versions.is_empty();
    let versions = if usable {
        versions
    } else {
        tracing::warn!(
            "tls_minimum_protocol_version is above tls_maximum_protocol_version: every \
             handshake will fail (as with Envoy)"
        );
        vec![&rustls::version::TLS12]
    };
    let builder = ClientConfig::builder_with_provider(provider().clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{COMMON}.tls_params: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UpstreamVerifier::new(&validation)));
    let mut config = match certificate {
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn(tls, protocol);
    config.enable_sni = tls.sni.is_some();
    let server_name = match &tls.sni {
        Some(sni) => ServerName::try_from(sni.clone())
            .map_err(|e| format!("transport_socket.typed_config.sni: {e}"))?,
        // Not sent (enable_sni is off) and not checked by the verifier.
        None => ServerName::try_from("upstream.invalid").map_err(|e| e.to_string())?,
    };
    Ok(Some(TlsClient {
        config: Arc::new(config),
        server_name,
        usable,
        certificates,
        stats: None,
    }))
}

/// `(name, notAfter)` of a certificate's leaf (none if it does not parse).
fn expiration(name: String, key: &CertifiedKey) -> Option<(String, u64)> {
    let leaf = key.cert.first()?;
    validity::not_after(leaf).ok().map(|t| (name, t))
}

/// Presents the configured certificate whatever the server asks for (as Envoy, which has
/// one client certificate per context).
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client configuration in force, with its generation.
#[derive(Debug)]
struct Installed {
    client: TlsClient,
    generation: u64,
}

/// A cluster's TLS state: its configuration, the client configuration in force (swapped on
/// rotation) and its stats. Shared by the cluster's host pools.
#[derive(Debug)]
pub struct ClusterTls {
    /// The cluster's `UpstreamTlsContext`.
    pub config: UpstreamTls,
    /// The cluster's upstream protocol (for ALPN).
    pub protocol: UpstreamProtocol,
    current: ArcSwapOption<Installed>,
    installs: AtomicU64,
    /// Set when the secrets did not arrive within the initial fetch timeout.
    fetch_timed_out: AtomicBool,
    /// `ssl.*` stats.
    pub stats: SslStats,
}

/// Why a TLS connect failed (the stats are already counted).
#[derive(Debug)]
pub enum HandshakeError {
    /// The configuration is not ready (an SDS secret has not arrived).
    NotReady,
    /// The handshake or the verification failed.
    Failed(std::io::Error),
}

impl ClusterTls {
    /// The TLS state of a cluster, with no client configuration yet.
    pub fn new(
        config: UpstreamTls,
        protocol: UpstreamProtocol,
        store: &Store,
        cluster: &str,
    ) -> Self {
        ClusterTls {
            config,
            protocol,
            current: ArcSwapOption::empty(),
            installs: AtomicU64::new(0),
            fetch_timed_out: AtomicBool::new(false),
            stats: SslStats::new(store, cluster),
        }
    }

    /// Builds the client configuration from `secrets` (see [`build_client`]).
    pub fn build(&self, secrets: &dyn SecretLookup) -> Result<Option<TlsClient>, String> {
        build_client(&self.config, self.protocol, secrets)
    }

    /// Puts `client` in force for new connections. Connections of earlier generations are
    /// no longer reused.
    pub fn install(&self, client: TlsClient) {
        for (name, not_after) in &client.certificates {
            self.stats.expiration(name).set(*not_after);
        }
        let generation = self.installs.fetch_add(1, Ordering::AcqRel) + 1;
        self.current
            .store(Some(Arc::new(Installed { client, generation })));
    }

    /// True once a client configuration is in force, or once its secrets did not arrive in
    /// time ([`ClusterTls::give_up_waiting`]): the cluster may then warm, as Envoy's does after
    /// the SDS initial fetch timeout, and its connections fail until the secrets arrive.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some() || self.fetch_timed_out.load(Ordering::Acquire)
    }

    /// True once a client configuration is in force.
    pub fn is_configured(&self) -> bool {
        self.current.load().is_some()
    }

    /// The SDS initial fetch timeout passed without the secrets: stop holding the cluster
    /// back (see [`ClusterTls::is_ready`]).
    pub fn give_up_waiting(&self) {
        self.fetch_timed_out.store(true, Ordering::Release);
    }

    /// The generation in force (0 before the first install).
    pub fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |i| i.generation)
    }

    /// Runs the handshake over `tcp` with the configuration in force, counting `ssl.*` stats.
    /// Returns the stream and the generation it was made with.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<(TlsStream, u64), HandshakeError> {
        let Some(installed) = self.current.load_full() else {
            self.stats.secrets_not_ready.inc();
            return Err(HandshakeError::NotReady);
        };
        handshake(&installed.client, Some(&self.stats), tcp)
            .await
            .map(|stream| (stream, installed.generation))
            .map_err(HandshakeError::Failed)
    }
}

/// Runs `client`'s handshake over `tcp`, counting it in `stats`.
async fn handshake(
    client: &TlsClient,
    stats: Option<&SslStats>,
    tcp: TcpStream,
) -> std::io::Result<TlsStream> {
    if !client.usable {
        if let Some(stats) = stats {
            stats.connection_error.inc();
        }
        return Err(std::io::Error::other(
            "no TLS version between the minimum and the maximum",
        ));
    }
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    match connector.connect(client.server_name.clone(), tcp).await {
        Ok(stream) => {
            if let Some(stats) = stats {
                stats.completed(stream.get_ref().1);
            }
            let counter = stats.map(|s| s.connection_error.clone());
            Ok(TlsStream::new(stream, counter))
        }
        Err(e) => {
            if let Some(stats) = stats {
                stats.failed(&e);
            }
            Err(e)
        }
    }
}

impl TlsClient {
    /// Counts this configuration's handshakes ([`TlsClient::connect`]) in `stats`, and sets
    /// its certificate expiration gauges there: for the xDS channel, whose connections are not
    /// made by a cluster's pool but are Envoy's `cluster.<xds cluster>.ssl.*` all the same.
    pub fn with_stats(mut self, stats: SslStats) -> Self {
        for (name, not_after) in &self.certificates {
            stats.expiration(name).set(*not_after);
        }
        self.stats = Some(Arc::new(stats));
        self
    }

    /// Runs a handshake over `tcp` (counted if [`TlsClient::with_stats`] was given stats).
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream> {
        handshake(self, self.stats.as_deref(), tcp).await
    }

    /// The certificates in use, by Envoy's certificate name, with their expiration (Unix
    /// seconds).
    pub fn certificates(&self) -> &[(String, u64)] {
        &self.certificates
    }

    /// The ALPN protocols offered.
    pub fn alpn(&self) -> &[Vec<u8>] {
        &self.config.alpn_protocols
    }
}
