//! TLS termination (rustls, `ring`): the server certificate, optional client-certificate
//! verification against a CA, ALPN `h2` + `http/1.1`, and what a connection tells the
//! responses (the client certificate's serial, the TLS version).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Response header carrying the serial number of the client certificate the connection was
/// made with (lowercase hex, no separators, as [`certificate_serial`] prints it); absent when
/// the client presented none or the connection is plaintext.
pub const CLIENT_SERIAL_HEADER: &str = "x-legate-client-serial";

/// Response header carrying the TLS version of the connection (`TLSv1.2` or `TLSv1.3`);
/// absent on plaintext connections.
pub const TLS_VERSION_HEADER: &str = "x-legate-tls-version";

/// Response header carrying the ALPN protocol the TLS connection negotiated (`h2`,
/// `http/1.1`); absent when the client offered none (or on plaintext).
pub const TLS_ALPN_HEADER: &str = "x-legate-tls-alpn";

/// How an upstream terminates TLS: its certificate chain and key (PEM files), and, when a
/// client CA is given, client certificates signed by that CA are **required** (a client
/// without one fails the handshake).
///
/// ALPN offers `h2` and `http/1.1`; TLS 1.2 and 1.3 are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Server certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Server private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; `None`: no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsSettings {
    /// Server-side TLS with `cert` and `key`, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsSettings {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Requires client certificates signed by the CA in `ca`.
    pub fn client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(ca.into());
        self
    }

    /// Reads the files and builds the acceptor. Errors (`InvalidInput`) name the file.
    pub fn acceptor(&self) -> io::Result<tokio_rustls::TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| invalid(&self.key, &format!("no usable PEM private key: {e}")))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| invalid(ca, &format!("not a usable CA: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| invalid(ca, &e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid(&self.key, &format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

fn invalid(path: &Path, message: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: {message}", path.display()),
    )
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(path, &format!("cannot read PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The serial number of a DER certificate as lowercase hex without separators (leading zero
/// bytes of the DER integer dropped), or `None` if it does not parse.
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let raw = cert.raw_serial();
    let trimmed = match raw.iter().position(|b| *b != 0) {
        Some(i) => &raw[i..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    Some(trimmed.iter().map(|b| format!("{b:02x}")).collect())
}

/// The serial of the first certificate in a PEM file (see [`certificate_serial`]).
pub fn pem_file_serial(path: &Path) -> io::Result<String> {
    let cert = read_certs(path)?.remove(0);
    certificate_serial(&cert).ok_or_else(|| invalid(path, "the certificate does not parse"))
}

/// What one TLS connection tells its responses.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnTls {
    /// [`CLIENT_SERIAL_HEADER`]'s value, when a client certificate was presented.
    pub(crate) client_serial: Option<HeaderValue>,
    /// [`TLS_VERSION_HEADER`]'s value.
    pub(crate) version: Option<HeaderValue>,
    /// [`TLS_ALPN_HEADER`]'s value.
    pub(crate) alpn: Option<HeaderValue>,
}

impl ConnTls {
    /// Reads the peer certificate and the version of an accepted connection.
    pub(crate) fn of(conn: &rustls::ServerConnection) -> ConnTls {
        let client_serial = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| certificate_serial(c))
            .and_then(|s| HeaderValue::from_str(&s).ok());
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => Some(HeaderValue::from_static("TLSv1.2")),
            Some(rustls::ProtocolVersion::TLSv1_3) => Some(HeaderValue::from_static("TLSv1.3")),
            _ => None,
        };
        let alpn = conn
            .alpn_protocol()
            .and_then(|p| HeaderValue::from_bytes(p).ok());
        ConnTls {
            client_serial,
            version,
            alpn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_trimmed_lowercase_hex() {
        let mut params = rcgen::CertificateParams::new(vec!["a".to_string()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x0a, 0xbc]));
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(certificate_serial(cert.der()).as_deref(), Some("0abc"));
        assert_eq!(certificate_serial(b"not a certificate"), None);
    }
}
