//! Endpoint (`host:port`) and listener (`IP:port`) addresses.

use crate::model::Host;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parses an endpoint: `IPv4:port`, `[IPv6]:port` or `dns.name:port`.
///
/// The error is a sentence describing what is wrong with `text`.
pub(crate) fn parse_endpoint(text: &str) -> Result<(Host, u16), String> {
    let invalid = |why: &str| format!("invalid endpoint `{text}`: {why}");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(invalid("missing `]` after the IPv6 address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(invalid(
                "missing port; write `[IPv6]:port`, e.g. `[::1]:8080`",
            ));
        };
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| invalid(&format!("`{inside}` is not an IPv6 address")))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(invalid(
                "missing port; write `host:port`, e.g. `10.0.0.1:8080`",
            ));
        };
        if host.contains(':') {
            return Err(invalid("IPv6 addresses go in brackets, e.g. `[::1]:8080`"));
        }
        (parse_host(host).map_err(|why| invalid(&why))?, port)
    };
    let port = parse_port(port).map_err(|why| invalid(&why))?;
    Ok((host, port))
}

/// Parses a listener address: `IPv4:port` or `[IPv6]:port`, port 1–65535.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err(format!(
            "invalid listen address `{text}`: the port must be between 1 and 65535"
        )),
        Ok(addr) => Ok(addr),
        Err(_) => {
            let host = text.rsplit_once(':').map(|(h, _)| h).unwrap_or(text);
            let hint =
                if !host.is_empty() && parse_host(host).is_ok_and(|h| matches!(h, Host::Dns(_))) {
                    " (a host name is not allowed here; use an IP address)"
                } else {
                    ""
                };
            Err(format!(
                "invalid listen address `{text}`{hint}: write IP:port, e.g. `127.0.0.1:10000` or `[::1]:10000`"
            ))
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("missing port after `:`".to_string());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port `{text}` is not a number"));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port `{text}` must be between 1 and 65535")),
    }
}

/// An IPv4 literal, or a DNS name.
fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("missing host before `:`".to_string());
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("`{host}` is not a valid IPv4 address"));
    }
    check_dns_name(host)?;
    Ok(Host::Dns(host.to_string()))
}

/// A DNS name: dot-separated labels of letters, digits and `-` (not at either end of a label),
/// each at most 63 characters, at most 253 in all. One trailing dot is allowed.
fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.len() > 253 {
        return Err(format!("host name `{name}` is longer than 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(format!("host name `{name}` has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "host name `{name}` has a label longer than 63 characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "host name `{name}` contains `{c}`; use letters, digits, `-` and `.`"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host name `{name}` has a label that starts or ends with `-`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let v4 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(parse_endpoint("127.0.0.1:9001"), Ok((Host::Ip(v4), 9001)));
        assert_eq!(
            parse_endpoint("[::1]:80"),
            Ok((Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 80))
        );
        assert_eq!(
            parse_endpoint("payments-v2.svc.cluster.local:8080"),
            Ok((Host::Dns("payments-v2.svc.cluster.local".into()), 8080))
        );
        assert_eq!(
            parse_endpoint("example.com.:443"),
            Ok((Host::Dns("example.com.".into()), 443))
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:http",
            ":80",
            "::1:80",
            "[::1]",
            "[::1:80",
            "[zz]:80",
            "999.1.1.1:80",
            "bad_name:80",
            "-lead.example:80",
            "a..b:80",
            "ex ample:80",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} should be rejected");
        }
        let long_label = format!("{}.com:80", "a".repeat(64));
        assert!(parse_endpoint(&long_label).is_err());
        let long_name = format!("{}:80", vec!["a".repeat(60); 5].join("."));
        assert!(parse_endpoint(&long_name).is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:10000"),
            Ok("127.0.0.1:10000".parse().unwrap())
        );
        assert_eq!(
            parse_listen("[::1]:10000"),
            Ok("[::1]:10000".parse().unwrap())
        );
        assert!(parse_listen("127.0.0.1:0").is_err());
        let err = parse_listen("localhost:10000").unwrap_err();
        assert!(err.contains("host name is not allowed"), "{err}");
        assert!(parse_listen("10000").is_err());
    }
}
