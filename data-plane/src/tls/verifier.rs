//! Verification of the upstream's certificate, with Envoy's semantics:
//!
//! - with a trusted CA, the chain must verify against it (webpki: signatures, validity dates,
//!   basic constraints, the `serverAuth` extended key usage when present); the certificate's
//!   names are NOT checked against the SNI (Envoy checks names only through SAN matchers);
//! - with SAN matchers, at least one SAN of the leaf must satisfy at least one matcher (any
//!   match passes);
//! - without a trusted CA, the certificate is not verified at all (Envoy's behaviour; SAN
//!   matchers without a CA are refused when the configuration is built). The handshake
//!   signatures are still checked, so the peer must hold the key of the certificate it sent.
//!
//! Failures map to rustls errors that the connection pool turns into Envoy's stats:
//! `NotValidForName` → `ssl.fail_verify_san`, any other certificate error →
//! `ssl.fail_verify_error`.

use super::material::Validation;
use super::san::subject_alt_names;
use crate::config::SanMatcher;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The upstream certificate verifier of one TLS context.
#[derive(Debug)]
pub struct UpstreamVerifier {
    roots: Option<Arc<RootCertStore>>,
    san_matchers: Vec<SanMatcher>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl UpstreamVerifier {
    /// A verifier for `validation` (trust anchors and SAN matchers).
    pub fn new(validation: &Validation) -> Self {
        UpstreamVerifier {
            roots: validation.roots.clone(),
            san_matchers: validation.san_matchers.clone(),
            algorithms: super::provider().signature_verification_algorithms,
        }
    }

    /// Verifies a certificate chain as the handshake does (exposed for tests).
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let Some(roots) = &self.roots else {
            return Ok(());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.san_matchers.is_empty() {
            return Ok(());
        }
        let sans = subject_alt_names(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let matched = sans
            .iter()
            .any(|(kind, value)| self.san_matchers.iter().any(|m| m.matches(*kind, value)));
        if matched {
            Ok(())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verify(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
