//! Envoy's internal-request rule (`ConnectionManagerUtility::mutateRequestHeaders`), and the
//! header sanitizing that goes with it.
//!
//! Only an *internal* request may steer the router with `x-envoy-retry-on`,
//! `x-envoy-max-retries`, `x-envoy-upstream-rq-timeout-ms` and the like; the connection manager
//! strips those headers from every other request before routing. With the settings
//! legate-proxy accepts (`use_remote_address` false, `xff_num_trusted_hops` 0, no original-IP
//! detection extension) Envoy 1.40 decides as follows, checked against Envoy 1.40:
//!
//! 1. The candidate address is the `x-forwarded-for` value when it holds exactly one entry
//!    (no comma; several header lines count as one comma-joined list) that parses as an IP
//!    address after trimming spaces (`10.1.2.3`, `fd00::1`; not `10.1.2.3:80`, not
//!    `[fd00::1]`). No such address: the request is external.
//! 2. Without the connection manager's `internal_address_config` no address is internal
//!    (since Envoy 1.36, `envoy.reloadable_features.explicit_internal_address_config` is gone).
//! 3. With it: an address in one of its `cidr_ranges`, or, when it lists none, a built-in
//!    internal address: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, exactly `127.0.0.1`,
//!    `fd00::/8` and exactly `::1`.
//!
//! An internal request gets `x-envoy-internal: true`; a client's own `x-envoy-internal` is
//! always removed first.

use crate::config::InternalAddressConfig;
use http::HeaderMap;
use http::header::HeaderValue;
use std::net::IpAddr;

/// `x-forwarded-for`.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Set to `true` on internal requests.
pub const ENVOY_INTERNAL: &str = "x-envoy-internal";

/// Headers Envoy removes from requests that are not internal (`cleanInternalHeaders`;
/// `x-envoy-decorator-operation` and the downstream-service headers are only removed when
/// `use_remote_address` is set, which legate-proxy does not accept). The last one,
/// `x-envoy-upstream-stream-duration-ms`, was found removed from external requests by sending
/// it to Envoy 1.40.
pub const INTERNAL_ONLY: [&str; 15] = [
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-stream-duration-ms",
];

/// `x-forwarded-client-cert`: removed from every request, as Envoy's default
/// `forward_client_cert_details: SANITIZE` does (the only value legate-proxy accepts), so that a
/// client cannot pass off a certificate it does not have.
const X_FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";

/// What [`sanitize`] found out about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The request is internal (it now carries `x-envoy-internal: true`).
    pub internal: bool,
    /// The request may still carry headers that steer the router ([`INTERNAL_ONLY`]): it is
    /// internal and came with `x-envoy-*` headers. When false the router need not look for
    /// them (each lookup by name costs a parse and a hash).
    pub may_steer: bool,
}

/// Decides whether the request is internal and sanitizes its headers accordingly: removes the
/// client's `x-envoy-internal`, then sets it on an internal request, or removes
/// [`INTERNAL_ONLY`] from any other.
pub fn sanitize(headers: &mut HeaderMap, config: Option<&InternalAddressConfig>) -> Verdict {
    let internal = config.is_some_and(|c| is_internal(headers, c));
    // Most requests carry no x-envoy-* header and no XFCC at all: one pass over the names is
    // cheaper than looking up every name to remove.
    let mut any_envoy_header = false;
    let mut client_cert = false;
    for name in headers.keys() {
        let name = name.as_str();
        any_envoy_header |= name.starts_with("x-envoy-");
        client_cert |= name == X_FORWARDED_CLIENT_CERT;
    }
    if client_cert {
        headers.remove(X_FORWARDED_CLIENT_CERT);
    }
    if any_envoy_header {
        headers.remove(ENVOY_INTERNAL);
        if !internal {
            for name in INTERNAL_ONLY {
                headers.remove(name);
            }
        }
    }
    if internal {
        headers.insert(ENVOY_INTERNAL, HeaderValue::from_static("true"));
    }
    Verdict {
        internal,
        may_steer: internal && any_envoy_header,
    }
}

/// Rule 1 and 3 for a connection manager with `internal_address_config`.
fn is_internal(headers: &HeaderMap, config: &InternalAddressConfig) -> bool {
    let Some(ip) = single_forwarded_for(headers) else {
        return false;
    };
    if config.cidr_ranges.is_empty() {
        is_builtin_internal(ip)
    } else {
        config.cidr_ranges.iter().any(|r| r.contains(ip))
    }
}

/// The only address in `x-forwarded-for`, if it holds exactly one that parses.
fn single_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let mut values = headers.get_all(X_FORWARDED_FOR).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    if text.contains(',') {
        return None;
    }
    // Envoy's `StringUtil::ltrim`/`rtrim` characters.
    text.trim_matches(|c| matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\n' | '\r'))
        .parse()
        .ok()
}

/// Envoy's `Network::Utility::isInternalAddress`.
fn is_builtin_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            b0 == 10
                || (b0 == 192 && b1 == 168)
                || (b0 == 172 && (16..=31).contains(&b1))
                || a == std::net::Ipv4Addr::LOCALHOST
        }
        IpAddr::V6(a) => a.octets()[0] == 0xfd || a == std::net::Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CidrRange;

    fn request(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h.insert("x-envoy-retry-on", HeaderValue::from_static("5xx"));
        h.insert("x-envoy-internal", HeaderValue::from_static("true"));
        h.insert("x-envoy-max-retries", HeaderValue::from_static("2"));
        h
    }

    fn internal(xff: &[&str], config: Option<&InternalAddressConfig>) -> bool {
        let mut h = request(xff);
        let verdict = sanitize(&mut h, config);
        let internal = verdict.internal;
        assert_eq!(
            verdict.may_steer, internal,
            "the router looks for steering headers iff it may"
        );
        assert_eq!(
            h.contains_key("x-envoy-retry-on"),
            internal,
            "internal-only headers kept iff internal"
        );
        assert_eq!(
            h.get(ENVOY_INTERNAL).map(|v| v.as_bytes()),
            internal.then_some(&b"true"[..])
        );
        internal
    }

    /// The cases probed against Envoy 1.40 (`internal_address_config: {}` unless noted).
    #[test]
    fn matches_envoy() {
        let builtin = InternalAddressConfig::default();
        let c = Some(&builtin);
        for xff in [
            "10.1.2.3",
            " 10.1.2.3 ",
            "127.0.0.1",
            "192.168.1.1",
            "172.31.0.1",
            "fd00::1",
            "::1",
        ] {
            assert!(internal(&[xff], c), "{xff}");
            assert!(
                !internal(&[xff], None),
                "{xff} without internal_address_config"
            );
        }
        for xff in [
            "10.1.2.3, 10.0.0.1",
            "127.0.0.2",
            "172.32.0.1",
            "8.8.8.8",
            "10.1.2.3:80",
            "fc00::1",
            "[fd00::1]",
            "::ffff:10.1.2.3",
            "",
            "10.1.2.3,",
            ",10.1.2.3",
        ] {
            assert!(!internal(&[xff], c), "{xff}");
        }
        assert!(!internal(&[], c), "no x-forwarded-for");
        assert!(!internal(&["10.1.2.3", "10.0.0.1"], c), "two header lines");

        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ranges = InternalAddressConfig {
            cidr_ranges: vec![
                CidrRange::new(ip("10.0.0.0"), 8).unwrap(),
                CidrRange::new(ip("8.8.8.0"), 24).unwrap(),
                CidrRange::new(ip("fc00::"), 7).unwrap(),
            ],
        };
        let c = Some(&ranges);
        for xff in ["10.1.2.3", "8.8.8.8", "fd00::1", "fc00::1"] {
            assert!(internal(&[xff], c), "{xff}");
        }
        for xff in ["127.0.0.1", "192.168.1.1", "::1", "::ffff:10.1.2.3"] {
            assert!(
                !internal(&[xff], c),
                "{xff}: ranges replace the built-in list"
            );
        }
    }

    #[test]
    fn leaves_other_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert("x-envoy-attempt-count", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        assert!(!sanitize(&mut h, None).internal);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn nothing_to_steer_without_envoy_headers() {
        let builtin = InternalAddressConfig::default();
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.1.2.3"));
        let verdict = sanitize(&mut h, Some(&builtin));
        assert_eq!(
            verdict,
            Verdict {
                internal: true,
                may_steer: false
            }
        );
        assert_eq!(
            h.get(ENVOY_INTERNAL).map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
    }

    #[test]
    fn client_certificates_are_never_forwarded() {
        let mut h = request(&["10.1.2.3"]);
        h.insert(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("Hash=abc"),
        );
        h.insert(
            "x-envoy-upstream-stream-duration-ms",
            HeaderValue::from_static("5"),
        );
        let verdict = sanitize(&mut h, None);
        assert!(!verdict.internal);
        assert!(h.get(X_FORWARDED_CLIENT_CERT).is_none());
        assert!(h.get("x-envoy-upstream-stream-duration-ms").is_none());
        let config = InternalAddressConfig {
            cidr_ranges: Vec::new(),
        };
        let mut h = request(&["10.1.2.3"]);
        h.insert(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("Hash=abc"),
        );
        assert!(sanitize(&mut h, Some(&config)).internal);
        assert!(h.get(X_FORWARDED_CLIENT_CERT).is_none(), "internal too");
    }
}
