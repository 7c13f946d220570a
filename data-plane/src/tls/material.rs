//! Certificate material: data sources read, PEM parsed, keys checked against their
//! certificates. Errors are `field: message` strings relative to the message that held the
//! data source; they never contain key bytes.

use super::provider;
use crate::config::{
    DataSource, SanMatcher, SecretConfig, TlsCertificateConfig, ValidationContextConfig,
};
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret as SecretProto;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// A validated SDS secret (or inline material), ready to build client configurations from.
#[derive(Debug)]
pub enum Secret {
    /// `tls_certificate`: the chain and the signing key, checked to match.
    Certificate(Arc<CertifiedKey>),
    /// `validation_context`: trust anchors and SAN matchers.
    Validation(Validation),
    /// A kind the proxy does not use (`session_ticket_keys`, `generic_secret`).
    Other(&'static str),
}

impl Secret {
    /// The secret's kind as Envoy names its field.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Certificate(_) => "tls_certificate",
            Secret::Validation(_) => "validation_context",
            Secret::Other(kind) => kind,
        }
    }
}

/// A loaded validation context.
#[derive(Clone, Debug, Default)]
pub struct Validation {
    /// Trust anchors from `trusted_ca`; `None` = the upstream certificate is not verified.
    pub roots: Option<Arc<RootCertStore>>,
    /// SAN matchers (any match passes).
    pub san_matchers: Vec<SanMatcher>,
    /// When the first certificate of `trusted_ca` expires (Unix seconds), for Envoy's
    /// `ssl.certificate.<name>.expiration_unix_time_seconds`.
    pub ca_not_after: Option<u64>,
}

impl Validation {
    /// `self` merged over `default`, as Envoy merges an SDS validation context over
    /// `combined_validation_context.default_validation_context` (`MergeFrom`): a trusted CA in
    /// the secret wins, SAN matchers are concatenated.
    pub fn merged_over(&self, default: &Validation) -> Validation {
        let (roots, ca_not_after) = match &self.roots {
            Some(roots) => (Some(roots.clone()), self.ca_not_after),
            None => (default.roots.clone(), default.ca_not_after),
        };
        Validation {
            roots,
            ca_not_after,
            san_matchers: default
                .san_matchers
                .iter()
                .chain(&self.san_matchers)
                .cloned()
                .collect(),
        }
    }
}

/// Parses and checks an SDS `Secret`. Errors read ``secret `name`: field: message``.
pub fn parse_secret(proto: &SecretProto) -> Result<Secret, String> {
    let config = crate::config::secret(proto).map_err(|e| e.to_string())?;
    let named = |e: String| format!("secret `{}`: {e}", proto.name);
    match config {
        SecretConfig::Certificate(c) => certified_key(&c)
            .map(Secret::Certificate)
            .map_err(|e| named(format!("tls_certificate.{e}"))),
        SecretConfig::Validation(v) => validation(&v)
            .map(Secret::Validation)
            .map_err(|e| named(format!("validation_context{}", dotted(&e)))),
        SecretConfig::Other(kind) => Ok(Secret::Other(kind)),
    }
}

/// `.field: message` for a `field: message` error, `: message` when there is no field.
fn dotted(e: &str) -> String {
    if e.starts_with(':') {
        e.to_string()
    } else {
        format!(".{e}")
    }
}

/// Reads a data source (files and environment variables are read now).
pub fn read(source: &DataSource) -> Result<Vec<u8>, String> {
    match source {
        DataSource::Inline(bytes) => Ok(bytes.clone()),
        DataSource::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
        }
        DataSource::Env(var) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {var} is not set")),
    }
}

/// The X.509 certificates of a PEM bundle (at least one).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".to_string());
    }
    Ok(certs)
}

/// Loads a `TlsCertificate`: the chain, the key, and a check that they belong together.
/// Errors read `certificate_chain: …` or `private_key: …`.
pub fn certified_key(c: &TlsCertificateConfig) -> Result<Arc<CertifiedKey>, String> {
    let chain_pem = read(&c.chain).map_err(|e| format!("certificate_chain: {e}"))?;
    let chain = certificates(&chain_pem).map_err(|e| format!("certificate_chain: {e}"))?;
    let key_pem = read(&c.key).map_err(|e| format!("private_key: {e}"))?;
    // The parser's error names the PEM problem only, never the key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        "private_key: no PEM private key (PKCS#8, SEC1 or PKCS#1) found".to_string()
    })?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private_key: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(
                "private_key: does not match the certificate in certificate_chain".to_string(),
            );
        }
        Err(e) => return Err(format!("certificate_chain: invalid certificate: {e}")),
    }
    Ok(Arc::new(certified))
}

/// Loads a validation context: the trusted CA bundle (if any) into a root store.
/// Errors read `.trusted_ca: …` style `field: message` (relative to the context).
pub fn validation(v: &ValidationContextConfig) -> Result<Validation, String> {
    let mut ca_not_after = None;
    let roots = match &v.trusted_ca {
        None => None,
        Some(source) => {
            let pem = read(source).map_err(|e| format!("trusted_ca: {e}"))?;
            let certs = certificates(&pem).map_err(|e| format!("trusted_ca: {e}"))?;
            ca_not_after = certs
                .first()
                .and_then(|c| super::validity::not_after(c).ok());
            let mut store = RootCertStore::empty();
            for (i, cert) in certs.into_iter().enumerate() {
                store
                    .add(cert)
                    .map_err(|e| format!("trusted_ca: certificate {i} is not a usable CA: {e}"))?;
            }
            Some(Arc::new(store))
        }
    };
    Ok(Validation {
        roots,
        san_matchers: v.san_matchers.clone(),
        ca_not_after,
    })
}
