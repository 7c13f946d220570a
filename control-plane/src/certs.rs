//! `legate-cp certs init`: a development CA and per-service leaf certificates (rcgen).
//!
//! Layout of the output directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the development CA (ECDSA P-256, 10 years) |
//! | `<svc>.pem`, `<svc>.key` | a leaf for each service, signed by the CA |
//!
//! Every leaf carries the URI SAN `spiffe://<trust-domain>/ns/default/sa/<svc>`, the DNS SANs
//! `<svc>`, `<svc>.internal` and `localhost`, and the IP SAN `127.0.0.1`, with the extended key
//! usages serverAuth and clientAuth, so one file serves as the service's server certificate and
//! as its client certificate when it calls others. Private keys are written with mode 0600.
//!
//! Existing files are never overwritten unless `force` is set. `keep_ca` reuses the CA already in
//! the directory and writes only leaves: that is how a rotation is made (new leaf keys and
//! serials, same trust).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The development CA's subject common name. Constant, so that a CA kept with `keep_ca` can sign
/// again without parsing its certificate.
const CA_COMMON_NAME: &str = "Legate development CA";
/// The development CA's subject organisation.
const ORGANIZATION: &str = "Legate (development only)";
/// Validity of the CA.
const CA_DAYS: u32 = 3650;
/// Default validity of a leaf.
pub const DEFAULT_DAYS: u32 = 365;

/// What `certs init` makes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Output directory (created when missing).
    pub out: PathBuf,
    /// SPIFFE trust domain, e.g. `example.org`.
    pub trust_domain: String,
    /// Services to issue leaves for.
    pub services: Vec<String>,
    /// Overwrite existing files.
    pub force: bool,
    /// Reuse `ca.pem`/`ca.key` from `out` instead of making a new CA.
    pub keep_ca: bool,
    /// Leaf validity in days.
    pub days: u32,
}

impl InitOptions {
    /// Options for a new CA and the given services in `out`, with defaults elsewhere.
    pub fn new(out: impl Into<PathBuf>, trust_domain: &str, services: &[&str]) -> Self {
        InitOptions {
            out: out.into(),
            trust_domain: trust_domain.to_string(),
            services: services.iter().map(ToString::to_string).collect(),
            force: false,
            keep_ca: false,
            days: DEFAULT_DAYS,
        }
    }
}

/// The files one service got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The service name.
    pub service: String,
    /// Its SPIFFE ID (the URI SAN).
    pub spiffe_id: String,
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8, mode 0600).
    pub key: PathBuf,
}

/// What `certs init` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// `ca.pem`.
    pub ca_cert: PathBuf,
    /// `ca.key`.
    pub ca_key: PathBuf,
    /// True when the CA was written now (false with `keep_ca`).
    pub ca_written: bool,
    /// One per service, in the order given.
    pub leaves: Vec<Leaf>,
}

/// The SPIFFE ID Legate gives a service: `spiffe://<trust-domain>/ns/default/sa/<svc>`.
pub fn spiffe_id(trust_domain: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/ns/default/sa/{service}")
}

/// Writes the CA (unless `keep_ca`) and one leaf per service. Refuses, before writing anything,
/// when a file to be written exists and `force` is not set.
pub fn init(opts: &InitOptions) -> anyhow::Result<Generated> {
    check_trust_domain(&opts.trust_domain)?;
    if opts.services.is_empty() {
        anyhow::bail!("name at least one service (`--service NAME`)");
    }
    for (i, svc) in opts.services.iter().enumerate() {
        check_service(svc)?;
        if opts.services[..i].contains(svc) {
            anyhow::bail!("service `{svc}` is named twice");
        }
    }
    if opts.days == 0 {
        anyhow::bail!("`--days` must be at least 1");
    }
    let ca_cert = opts.out.join("ca.pem");
    let ca_key = opts.out.join("ca.key");
    let leaves: Vec<Leaf> = opts
        .services
        .iter()
        .map(|svc| Leaf {
            service: svc.clone(),
            spiffe_id: spiffe_id(&opts.trust_domain, svc),
            cert: opts.out.join(format!("{svc}.pem")),
            key: opts.out.join(format!("{svc}.key")),
        })
        .collect();

    let mut targets: Vec<&Path> = Vec::new();
    if !opts.keep_ca {
        targets.extend([ca_cert.as_path(), ca_key.as_path()]);
    }
    for leaf in &leaves {
        if leaf.service == "ca" {
            anyhow::bail!("a service cannot be named `ca`: its files would be the CA's");
        }
        targets.extend([leaf.cert.as_path(), leaf.key.as_path()]);
    }
    if !opts.force {
        let existing: Vec<String> = targets
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            anyhow::bail!(
                "refusing to overwrite {} (use --force{})",
                existing.join(", "),
                if opts.keep_ca {
                    ""
                } else {
                    ", or --keep-ca to issue new leaves from the existing CA"
                }
            );
        }
    }
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", opts.out.display()))?;

    let now = time::OffsetDateTime::now_utc();
    let ca_params = ca_params(now);
    let ca_key_pair = if opts.keep_ca {
        load_ca(&ca_cert, &ca_key)?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params.self_signed(&key)?;
        write_file(&ca_cert, cert.pem().as_bytes(), 0o644)?;
        write_file(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
        key
    };
    let issuer = Issuer::new(ca_params, ca_key_pair);
    for leaf in &leaves {
        let key = KeyPair::generate()?;
        let cert = leaf_params(leaf, now, opts.days)?.signed_by(&key, &issuer)?;
        // Key first: a watcher that reads between the two renames sees a mismatch (a rejected
        // reload, retried on the next event) rather than a stale pair.
        write_file(&leaf.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&leaf.cert, cert.pem().as_bytes(), 0o644)?;
    }
    Ok(Generated {
        ca_cert,
        ca_key,
        ca_written: !opts.keep_ca,
        leaves,
    })
}

fn ca_params(now: time::OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = now + Duration::from_secs(u64::from(CA_DAYS) * 86_400);
    p.serial_number = Some(random_serial());
    p
}

fn leaf_params(
    leaf: &Leaf,
    now: time::OffsetDateTime,
    days: u32,
) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, leaf.service.as_str());
    dn.push(DnType::OrganizationName, ORGANIZATION);
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let svc = leaf.service.as_str();
    p.subject_alt_names = vec![
        SanType::URI(leaf.spiffe_id.as_str().try_into()?),
        SanType::DnsName(svc.try_into()?),
        SanType::DnsName(format!("{svc}.internal").try_into()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
    p.serial_number = Some(random_serial());
    Ok(p)
}

/// A random positive 128-bit serial (RFC 5280 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Reads the CA kept with `keep_ca` and checks that its key belongs to its certificate.
fn load_ca(cert: &Path, key: &Path) -> anyhow::Result<KeyPair> {
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| anyhow::anyhow!("--keep-ca: cannot read `{}`: {e}", p.display()))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let der = CertificateDer::from_pem_slice(&cert_pem)
        .map_err(|e| anyhow::anyhow!("--keep-ca: `{}`: {e}", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("--keep-ca: `{}`: {e}", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| anyhow::anyhow!("--keep-ca: `{}`: {e}", key.display()))?;
    rustls::sign::CertifiedKey::new(vec![der], signer)
        .keys_match()
        .map_err(|e| {
            anyhow::anyhow!(
                "--keep-ca: `{}` does not belong to `{}`: {e}",
                key.display(),
                cert.display()
            )
        })?;
    let text = String::from_utf8(key_pem)
        .map_err(|_| anyhow::anyhow!("--keep-ca: `{}` is not PEM text", key.display()))?;
    Ok(KeyPair::from_pem(&text)?)
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, renamed), with
/// `mode` set when the file is created.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot write `{}`: {e}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(cannot)?;
    f.write_all(bytes).map_err(cannot)?;
    f.sync_all().map_err(cannot)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(cannot)?;
    Ok(())
}

/// A SPIFFE trust domain: lower-case letters, digits, `.`, `-` and `_`.
fn check_trust_domain(td: &str) -> anyhow::Result<()> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        anyhow::bail!(
            "invalid trust domain `{td}`: use lower-case letters, digits, `.`, `-` and `_` (e.g. `example.org`)"
        );
    }
    Ok(())
}

/// A service name that is also a DNS name: lower-case labels of letters, digits and `-`.
fn check_service(svc: &str) -> anyhow::Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if svc.len() > 200 || !svc.split('.').all(label_ok) {
        anyhow::bail!(
            "invalid service name `{svc}` for a certificate: it becomes a DNS SAN, so use lower-case letters, digits, `-` and `.`"
        );
    }
    Ok(())
}

/// Parses the certificate and key at the given paths into a rustls certified key, checking that
/// they belong together. For tests and tools that need the pair in memory.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key_der = PrivateKeyDer::from_pem_file(key)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
    let ck = rustls::sign::CertifiedKey::new(chain, signer);
    ck.keys_match()?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_trust_domain("example.org").is_ok());
        assert!(check_trust_domain("Example.org").is_err());
        assert!(check_trust_domain("").is_err());
        assert!(check_service("payments").is_ok());
        assert!(check_service("pay-ments.v2").is_ok());
        assert!(check_service("Payments").is_err());
        assert!(check_service("pay_ments").is_err());
        assert!(check_service("-x").is_err());
    }

    /// The DER of the first certificate in a PEM file.
    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).expect("a PEM certificate")
    }

    /// Verifies `leaf` (of service `svc`) against `ca` as a server and as a client certificate.
    fn verify_leaf(ca: &Path, leaf: &Path, svc: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(ca))?;
        let roots = Arc::new(roots);
        let now = rustls_pki_types::UnixTime::now();
        // As a server certificate (serverAuth EKU, DNS and IP SANs)...
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let internal = format!("{svc}.internal");
        for name in [svc, internal.as_str(), "localhost", "127.0.0.1"] {
            let name = rustls_pki_types::ServerName::try_from(name).expect("name");
            server.verify_server_cert(&der(leaf), &[], &name, &[], now)?;
        }
        // ...and as a client certificate (clientAuth EKU).
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("verifier");
        client.verify_client_cert(&der(leaf), &[], now)?;
        Ok(())
    }

    #[test]
    fn init_writes_a_ca_and_leaves_with_spiffe_sans_and_both_ekus() {
        use x509_parser::extensions::GeneralName;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let got = init(&InitOptions::new(
            &out,
            "example.org",
            &["payments", "checkout"],
        ))
        .unwrap();
        assert!(got.ca_written);
        assert_eq!(got.leaves.len(), 2);
        assert_eq!(got.leaves[0].cert, out.join("payments.pem"));
        assert_eq!(got.leaves[1].key, out.join("checkout.key"));

        // The CA is a CA.
        let ca_der = der(&got.ca_cert);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
        assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());

        for leaf in &got.leaves {
            let leaf_der = der(&leaf.cert);
            let (_, cert) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
            let sans: Vec<String> = cert
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("uri:{u}"),
                    GeneralName::DNSName(d) => format!("dns:{d}"),
                    GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                    other => format!("{other:?}"),
                })
                .collect();
            let svc = &leaf.service;
            assert_eq!(
                sans,
                vec![
                    format!("uri:spiffe://example.org/ns/default/sa/{svc}"),
                    format!("dns:{svc}"),
                    format!("dns:{svc}.internal"),
                    "dns:localhost".to_string(),
                    "ip:[127, 0, 0, 1]".to_string(),
                ]
            );
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
            assert_eq!(cert.issuer(), ca.subject());
            verify_leaf(&got.ca_cert, &leaf.cert, svc).unwrap();
            // The key belongs to the certificate.
            load_certified_key(&leaf.cert, &leaf.key).unwrap();
        }

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&got.ca_key), 0o600);
        assert_eq!(mode(&got.leaves[0].key), 0o600);
        assert_eq!(mode(&got.leaves[0].cert), 0o644);
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced_and_keeps_the_ca_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let first = init(&InitOptions::new(out, "example.org", &["payments"])).unwrap();
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        let leaf_before = std::fs::read(&first.leaves[0].cert).unwrap();

        let again = init(&InitOptions::new(out, "example.org", &["payments"])).unwrap_err();
        let message = again.to_string();
        assert!(message.starts_with("refusing to overwrite"), "{message}");
        assert!(message.contains("payments.key"), "{message}");
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca_before);

        // A new service from the kept CA needs no --force; an existing one does.
        let mut keep = InitOptions::new(out, "example.org", &["checkout"]);
        keep.keep_ca = true;
        let kept = init(&keep).unwrap();
        assert!(!kept.ca_written);
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca_before);
        verify_leaf(&first.ca_cert, &kept.leaves[0].cert, "checkout").unwrap();

        let mut rotate = InitOptions::new(out, "example.org", &["payments"]);
        rotate.keep_ca = true;
        assert!(init(&rotate).is_err());
        rotate.force = true;
        init(&rotate).unwrap();
        let leaf_after = std::fs::read(&first.leaves[0].cert).unwrap();
        assert_ne!(
            leaf_after, leaf_before,
            "a rotation issues a new certificate"
        );
        verify_leaf(&first.ca_cert, &first.leaves[0].cert, "payments").unwrap();

        // --force without --keep-ca makes a new CA, which the old leaves no longer chain to.
        let mut force = InitOptions::new(out, "example.org", &["payments"]);
        force.force = true;
        init(&force).unwrap();
        assert_ne!(std::fs::read(&first.ca_cert).unwrap(), ca_before);
        assert!(verify_leaf(&first.ca_cert, &out.join("checkout.pem"), "checkout").is_err());
    }

    #[test]
    fn init_rejects_bad_input_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        for (td, services) in [
            ("Example.org", vec!["a"]),
            ("example.org", vec![]),
            ("example.org", vec!["a", "a"]),
            ("example.org", vec!["ca"]),
            ("example.org", vec!["Bad_Name"]),
        ] {
            assert!(
                init(&InitOptions::new(&out, td, &services)).is_err(),
                "{td} {services:?}"
            );
        }
        assert!(!out.exists());
        let mut keep = InitOptions::new(&out, "example.org", &["a"]);
        keep.keep_ca = true;
        let e = init(&keep).unwrap_err().to_string();
        assert!(e.contains("--keep-ca: cannot read"), "{e}");
    }

    #[test]
    fn spiffe_ids() {
        assert_eq!(
            spiffe_id("example.org", "payments"),
            "spiffe://example.org/ns/default/sa/payments"
        );
    }
}
