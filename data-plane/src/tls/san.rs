//! Subject alternative names of an X.509 certificate, read with a minimal DER walker (the
//! certificate has already been parsed and its chain verified by webpki; this only finds the
//! `subjectAltName` extension and lists its DNS, URI, email and IP entries).

use crate::config::SanType;
use std::net::{Ipv4Addr, Ipv6Addr};

/// `id-ce-subjectAltName` (2.5.29.17), DER-encoded OID contents.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

pub(super) const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT` in `TBSCertificate`: the extensions.
const EXTENSIONS: u8 = 0xa3;

/// A malformed certificate.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// One TLV: tag, contents, and the rest of the input.
pub(super) fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), Malformed> {
    let (&tag, rest) = input.split_first().ok_or(Malformed)?;
    if tag & 0x1f == 0x1f {
        // High tag numbers never occur in the structures walked here.
        return Err(Malformed);
    }
    let (&first, rest) = rest.split_first().ok_or(Malformed)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(Malformed);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(Malformed);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The contents of a TLV that must have tag `want`.
pub(super) fn expect(input: &[u8], want: u8) -> Result<(&[u8], &[u8]), Malformed> {
    let (tag, contents, rest) = tlv(input)?;
    if tag != want {
        return Err(Malformed);
    }
    Ok((contents, rest))
}

/// The DNS, URI, email and IP SANs of a DER certificate, in certificate order. IP addresses
/// are in their text form (as Envoy matches them); other name types are skipped.
pub fn subject_alt_names(cert: &[u8]) -> Result<Vec<(SanType, String)>, Malformed> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    let mut out = Vec::new();
    while !tbs.is_empty() {
        let (tag, contents, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut extensions, _) = expect(contents, SEQUENCE)?;
        while !extensions.is_empty() {
            let (ext, rest) = expect(extensions, SEQUENCE)?;
            extensions = rest;
            let (oid, mut ext) = expect(ext, OID)?;
            if oid != SAN_OID {
                continue;
            }
            // `critical BOOLEAN DEFAULT FALSE` may precede the value.
            if let Ok((BOOLEAN, _, after)) = tlv(ext) {
                ext = after;
            }
            let (value, _) = expect(ext, OCTET_STRING)?;
            let (mut names, _) = expect(value, SEQUENCE)?;
            while !names.is_empty() {
                let (tag, contents, rest) = tlv(names)?;
                names = rest;
                let entry = match tag {
                    0x81 => Some((SanType::Email, text(contents)?)),
                    0x82 => Some((SanType::Dns, text(contents)?)),
                    0x86 => Some((SanType::Uri, text(contents)?)),
                    0x87 => Some((SanType::IpAddress, ip(contents)?)),
                    _ => None,
                };
                out.extend(entry);
            }
        }
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, Malformed> {
    // IA5String: ASCII.
    if !bytes.is_ascii() {
        return Err(Malformed);
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Malformed)
}

fn ip(bytes: &[u8]) -> Result<String, Malformed> {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = bytes.try_into().map_err(|_| Malformed)?;
            Ok(Ipv4Addr::from(octets).to_string())
        }
        16 => {
            let octets: [u8; 16] = bytes.try_into().map_err(|_| Malformed)?;
            Ok(Ipv6Addr::from(octets).to_string())
        }
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_san_type_from_an_rcgen_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["api.example.com".to_string()]).expect("params");
        params.subject_alt_names.extend([
            rcgen::SanType::URI("spiffe://example.org/payments".try_into().expect("uri")),
            rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            rcgen::SanType::IpAddress("::1".parse().expect("ip")),
            rcgen::SanType::Rfc822Name("ops@example.org".try_into().expect("email")),
        ]);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let sans = subject_alt_names(cert.der()).expect("parses");
        assert_eq!(
            sans,
            vec![
                (SanType::Dns, "api.example.com".to_string()),
                (SanType::Uri, "spiffe://example.org/payments".to_string()),
                (SanType::IpAddress, "127.0.0.1".to_string()),
                (SanType::IpAddress, "::1".to_string()),
                (SanType::Email, "ops@example.org".to_string()),
            ]
        );
    }

    #[test]
    fn no_san_and_garbage() {
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(subject_alt_names(cert.der()), Ok(Vec::new()));
        assert_eq!(subject_alt_names(&[0x30, 0x05, 0x01]), Err(Malformed));
        assert_eq!(subject_alt_names(&[]), Err(Malformed));
    }
}
