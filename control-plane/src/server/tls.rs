//! TLS for the xDS listener (`serve --xds-tls-cert/--xds-tls-key [--xds-client-ca]`).
//!
//! The files are read and checked once at start (the key must belong to the certificate, the CA
//! must parse), so a mistake fails `serve` with a message instead of failing every handshake.
//! With a client CA, clients must present a certificate it signed (mTLS).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The xDS listener's TLS settings, read from files.
#[derive(Clone)]
pub struct XdsTls {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for XdsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsTls")
            .field("mtls", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl XdsTls {
    /// Reads and checks the server certificate chain, its key and the optional client CA.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<XdsTls> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("{what} `{}`: {e}", p.display()))
        };
        let cert_pem = read("--xds-tls-cert", cert)?;
        let key_pem = read("--xds-tls-key", key)?;
        let chain = certificates("--xds-tls-cert", cert, &cert_pem)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            anyhow::anyhow!(
                "--xds-tls-key `{}`: no PEM private key found",
                key.display()
            )
        })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|_| {
            anyhow::anyhow!(
                "--xds-tls-key `{}`: unsupported or malformed private key",
                key.display()
            )
        })?;
        rustls::sign::CertifiedKey::new(chain, signer)
            .keys_match()
            .map_err(|e| {
                anyhow::anyhow!(
                    "--xds-tls-key `{}` does not match --xds-tls-cert `{}`: {e}",
                    key.display(),
                    cert.display()
                )
            })?;
        let client_ca = match client_ca {
            None => None,
            Some(p) => {
                let pem = read("--xds-client-ca", p)?;
                let mut roots = rustls::RootCertStore::empty();
                for der in certificates("--xds-client-ca", p, &pem)? {
                    roots
                        .add(der)
                        .map_err(|e| anyhow::anyhow!("--xds-client-ca `{}`: {e}", p.display()))?;
                }
                Some(pem)
            }
        };
        Ok(XdsTls {
            cert: cert_pem,
            key: key_pem,
            client_ca,
        })
    }

    /// True when clients must present a certificate.
    pub fn is_mtls(&self) -> bool {
        self.client_ca.is_some()
    }

    /// tonic's server TLS configuration (ALPN `h2`, handshake timeout).
    pub fn server_config(&self) -> ServerTlsConfig {
        // tonic builds its rustls config with the process default provider: make it `ring`,
        // the only one this workspace builds (a no-op when already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        config
    }
}

fn certificates(
    what: &str,
    path: &Path,
    pem: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{what} `{}`: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{what} `{}`: no PEM certificate found", path.display());
    }
    for der in &certs {
        rustls::server::ParsedCertificate::try_from(der)
            .map_err(|e| anyhow::anyhow!("{what} `{}`: {e}", path.display()))?;
    }
    Ok(certs)
}
