//! Upstream TLS: rustls client configurations built from a cluster's `UpstreamTlsContext` and
//! its SDS secrets, the handshake the connection pools run, Envoy's `ssl.*` stats, the secret
//! store the manager keeps, and the key redaction of `/config_dump`.
//!
//! Layout:
//! - `material.rs`: data sources read, PEM parsed, keys checked against certificates;
//!   [`Secret`] (a validated SDS secret);
//! - `verifier.rs`: [`UpstreamVerifier`] (trusted CA + SAN matchers, Envoy's semantics);
//! - `san.rs`: the SANs of a certificate (a minimal DER walker);
//! - `store.rs`: [`SecretStore`], the SDS secrets in force, and how an update reaches the
//!   clusters that reference them;
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
//!   when idle; requests in flight on them finish).
//!
//! Crypto: rustls with the `ring` provider, TLS 1.2 and 1.3, no session tickets across
//! configurations (each configuration has its own resumption cache, so a rotated client
//! certificate is presented on the next connection).

mod connector;
mod material;
pub mod redact;
mod san;
mod store;
#[cfg(test)]
mod tests;
mod verifier;

pub use connector::TlsConnector;
pub use material::{Secret, Validation, parse_secret};
pub use redact::redact_json;
pub use san::subject_alt_names;
pub use store::{SecretEntry, SecretStore};
pub use verifier::UpstreamVerifier;

use crate::config::{
    CertificateSource, TlsVersion, UpstreamProtocol, UpstreamTls, ValidationSource,
};
use crate::stats::{Counter, Store};
use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;

/// A TLS connection to an upstream.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

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
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .field("usable", &self.usable)
            .finish()
    }
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
    let certificate: Option<Arc<CertifiedKey>> = match &tls.certificate {
        None => None,
        Some(CertificateSource::Inline(c)) => Some(
            material::certified_key(c).map_err(|e| format!("{COMMON}.tls_certificates[0].{e}"))?,
        ),
        Some(CertificateSource::Sds(name)) => match secrets.secret(name).as_deref() {
            None => return Ok(None),
            Some(Secret::Certificate(c)) => Some(c.clone()),
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
            material::validation(v).map_err(|e| format!("{COMMON}.validation_context.{e}"))?
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
    }))
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

/// Envoy's `cluster.<name>.ssl.*` and `client_ssl_socket_factory.*` stats of one cluster.
#[derive(Debug)]
pub struct SslStats {
    /// `ssl.handshake`: handshakes completed.
    pub handshake: Counter,
    /// `ssl.connection_error`: handshakes that failed other than by verification.
    pub connection_error: Counter,
    /// `ssl.fail_verify_san`: the certificate chain verified but no SAN matched.
    pub fail_verify_san: Counter,
    /// `ssl.fail_verify_error`: the certificate chain did not verify.
    pub fail_verify_error: Counter,
    /// `ssl.fail_verify_no_cert`: the peer sent no certificate.
    pub fail_verify_no_cert: Counter,
    /// `ssl.no_certificate`: a connection completed without a peer certificate.
    pub no_certificate: Counter,
    /// `ssl.session_reused`: resumed sessions.
    pub session_reused: Counter,
    /// `client_ssl_socket_factory.ssl_context_update_by_sds`: one per referenced SDS secret
    /// delivered or changed (the first delivery included), as Envoy counts its secret update
    /// callbacks.
    pub context_update_by_sds: Counter,
    /// `client_ssl_socket_factory.upstream_context_secrets_not_ready`.
    pub secrets_not_ready: Counter,
    prefix: String,
    store: Store,
}

impl SslStats {
    /// The stats of cluster `cluster`, created eagerly as Envoy does.
    pub fn new(store: &Store, cluster: &str) -> Self {
        let prefix = format!("cluster.{cluster}.");
        let c = |s: &str| store.counter(&format!("{prefix}{s}"));
        for name in [
            "ssl.fail_verify_cert_hash",
            "ssl.ocsp_staple_failed",
            "ssl.ocsp_staple_omitted",
            "ssl.ocsp_staple_requests",
            "ssl.ocsp_staple_responses",
            "client_ssl_socket_factory.downstream_context_secrets_not_ready",
        ] {
            let _ = c(name);
        }
        SslStats {
            handshake: c("ssl.handshake"),
            connection_error: c("ssl.connection_error"),
            fail_verify_san: c("ssl.fail_verify_san"),
            fail_verify_error: c("ssl.fail_verify_error"),
            fail_verify_no_cert: c("ssl.fail_verify_no_cert"),
            no_certificate: c("ssl.no_certificate"),
            session_reused: c("ssl.session_reused"),
            context_update_by_sds: c("client_ssl_socket_factory.ssl_context_update_by_sds"),
            secrets_not_ready: c("client_ssl_socket_factory.upstream_context_secrets_not_ready"),
            prefix,
            store: store.clone(),
        }
    }

    /// Counts a completed handshake: `handshake`, `session_reused`, and the negotiated
    /// `versions.*`, `ciphers.*` and `curves.*` (OpenSSL names, as Envoy prints them).
    fn completed(&self, conn: &rustls::ClientConnection) {
        self.handshake.inc();
        if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            self.session_reused.inc();
        }
        if conn.peer_certificates().is_none_or(|c| c.is_empty()) {
            self.no_certificate.inc();
        }
        let dynamic = |name: String| {
            self.store
                .counter(&format!("{}ssl.{name}", self.prefix))
                .inc()
        };
        match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => dynamic("versions.TLSv1.2".into()),
            Some(rustls::ProtocolVersion::TLSv1_3) => dynamic("versions.TLSv1.3".into()),
            _ => {}
        }
        if let Some(suite) = conn.negotiated_cipher_suite() {
            dynamic(format!("ciphers.{}", openssl_cipher_name(suite.suite())));
        }
        if let Some(group) = conn.negotiated_key_exchange_group() {
            let name = match group.name() {
                rustls::NamedGroup::X25519 => "X25519".to_string(),
                rustls::NamedGroup::secp256r1 => "P-256".to_string(),
                rustls::NamedGroup::secp384r1 => "P-384".to_string(),
                rustls::NamedGroup::secp521r1 => "P-521".to_string(),
                other => format!("{other:?}"),
            };
            dynamic(format!("curves.{name}"));
        }
    }

    /// Counts a failed handshake by its cause, as Envoy does: verification failures count
    /// only as `fail_verify_*`, anything else as `connection_error`.
    fn failed(&self, error: &std::io::Error) {
        let tls = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
                self.fail_verify_san.inc()
            }
            Some(rustls::Error::InvalidCertificate(_)) => self.fail_verify_error.inc(),
            Some(rustls::Error::NoCertificatesPresented) => self.fail_verify_no_cert.inc(),
            _ => self.connection_error.inc(),
        }
    }
}

/// The OpenSSL name of a cipher suite (what Envoy's `ssl.ciphers.*` stats use).
fn openssl_cipher_name(suite: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as S;
    let name = match suite {
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    name.to_string()
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
        let generation = self.installs.fetch_add(1, Ordering::AcqRel) + 1;
        self.current
            .store(Some(Arc::new(Installed { client, generation })));
    }

    /// True once a client configuration is in force.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
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
        if !installed.client.usable {
            self.stats.connection_error.inc();
            return Err(HandshakeError::Failed(std::io::Error::other(
                "no TLS version between the minimum and the maximum",
            )));
        }
        let connector = tokio_rustls::TlsConnector::from(installed.client.config.clone());
        match connector
            .connect(installed.client.server_name.clone(), tcp)
            .await
        {
            Ok(stream) => {
                self.stats.completed(stream.get_ref().1);
                Ok((stream, installed.generation))
            }
            Err(e) => {
                self.stats.failed(&e);
                Err(HandshakeError::Failed(e))
            }
        }
    }
}

impl TlsClient {
    /// Runs a handshake over `tcp` (for the xDS channel, which has no cluster stats).
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream> {
        if !self.usable {
            return Err(std::io::Error::other(
                "no TLS version between the minimum and the maximum",
            ));
        }
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }

    /// The ALPN protocols offered.
    pub fn alpn(&self) -> &[Vec<u8>] {
        &self.config.alpn_protocols
    }
}
