//! Envoy's `ssl.*` and `client_ssl_socket_factory.*` stats of a cluster, and the certificate
//! expiration gauges (`ssl.certificate.<name>.expiration_unix_time_seconds`).

use crate::stats::{Counter, Gauge, Store};

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

    /// The gauge `ssl.certificate.<name>.expiration_unix_time_seconds`: when the certificate
    /// `name` (an SDS secret name, or Envoy's `unnamed_cert_<hash>` / `unnamed_ca_cert_<hash>`
    /// for inline material) expires.
    pub fn expiration(&self, name: &str) -> Gauge {
        self.store.gauge(&format!(
            "{}ssl.certificate.{name}.expiration_unix_time_seconds",
            self.prefix
        ))
    }

    /// Counts a completed handshake: `handshake`, `session_reused`, and the negotiated
    /// `versions.*`, `ciphers.*` and `curves.*` (OpenSSL names, as Envoy prints them).
    pub(super) fn completed(&self, conn: &rustls::ClientConnection) {
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
    pub(super) fn failed(&self, error: &std::io::Error) {
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
