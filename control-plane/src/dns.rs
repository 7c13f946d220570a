//! DNS names of endpoints, resolved by the control plane for gRPC clients.
//!
//! Envoy resolves a service's DNS endpoints itself (STRICT_DNS), but gRPC clients accept only
//! IP literals in a ClusterLoadAssignment. So the loading stage resolves every DNS endpoint
//! name (on each reload, and again every [`REFRESH`]) and hands the answers to translation,
//! which stays pure. Like STRICT_DNS with `V4_PREFERRED` (the Envoy flavour's setting), a name
//! with IPv4 addresses uses those, else its IPv6 ones. A lookup that fails or times out keeps
//! the name's previous addresses, as Envoy keeps its hosts when DNS fails.

use crate::model::{Config, Host};
use crate::translate::grpc::Resolved;
use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often DNS names are resolved again while the configuration does not change.
pub const REFRESH: Duration = Duration::from_secs(30);

/// How long one round of lookups may take in all.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Every DNS name an endpoint of `config` uses.
pub fn names(config: &Config) -> BTreeSet<String> {
    config
        .services
        .values()
        .flat_map(|s| &s.endpoints)
        .filter_map(|e| match &e.host {
            Host::Dns(name) => Some(name.clone()),
            Host::Ip(_) => None,
        })
        .collect()
}

/// Resolves every DNS name of `config` (in parallel, within [`DEADLINE`]); a name whose lookup
/// fails keeps its addresses from `previous`.
pub fn resolve(config: &Config, previous: &Resolved) -> Resolved {
    let names = names(config);
    if names.is_empty() {
        return Resolved::new();
    }
    let (tx, rx) = mpsc::channel();
    for name in &names {
        let (tx, name) = (tx.clone(), name.clone());
        // A thread per name: the system resolver blocks and has no deadline of its own. A
        // lookup still running at the deadline finishes in the background and is dropped.
        let spawned = std::thread::Builder::new()
            .name("legate-dns".into())
            .spawn(move || {
                let answer = (name.as_str(), 0).to_socket_addrs().map(|a| a.collect());
                let _ = tx.send((name, answer));
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a DNS lookup");
        }
    }
    drop(tx);
    let deadline = Instant::now() + DEADLINE;
    let mut out = Resolved::new();
    while out.len() < names.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((name, answer)) = rx.recv_timeout(left) else {
            break;
        };
        let answer: std::io::Result<Vec<std::net::SocketAddr>> = answer;
        match answer {
            Ok(addrs) if !addrs.is_empty() => {
                out.insert(name, preferred(addrs.iter().map(|a| a.ip())));
            }
            Ok(_) => tracing::warn!(name, "DNS name has no address; keeping the previous ones"),
            Err(e) => {
                tracing::warn!(name, error = %e, "DNS lookup failed; keeping the previous addresses")
            }
        }
    }
    for name in &names {
        if !out.contains_key(name)
            && let Some(old) = previous.get(name)
        {
            out.insert(name.clone(), old.clone());
        }
    }
    out
}

/// The IPv4 addresses if there are any, else the IPv6 ones; sorted and without duplicates, so
/// equal answers give equal resources.
pub fn preferred(addrs: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let all: BTreeSet<IpAddr> = addrs.collect();
    let v4: Vec<IpAddr> = all.iter().filter(|a| a.is_ipv4()).copied().collect();
    if v4.is_empty() {
        all.into_iter().collect()
    } else {
        v4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::path::Path;

    #[test]
    fn v4_preferred_sorted_unique() {
        let ips = |s: &[&str]| {
            s.iter()
                .map(|a| a.parse::<IpAddr>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            preferred(ips(&["::1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]).into_iter()),
            ips(&["127.0.0.1", "127.0.0.2"])
        );
        assert_eq!(
            preferred(ips(&["::2", "::1"]).into_iter()),
            ips(&["::1", "::2"])
        );
    }

    #[test]
    fn resolves_localhost_and_keeps_previous_on_failure() {
        let config = load_str(
            Path::new("t.yaml"),
            "services:\n  a:\n    endpoints: ['localhost:1', 'no-such-host.invalid:2', 127.0.0.1:3]\n",
        )
        .expect("valid");
        assert_eq!(
            names(&config).into_iter().collect::<Vec<_>>(),
            vec!["localhost", "no-such-host.invalid"]
        );
        let previous: Resolved = [(
            "no-such-host.invalid".to_string(),
            vec!["192.0.2.1".parse().unwrap()],
        )]
        .into_iter()
        .collect();
        let r = resolve(&config, &previous);
        assert!(r["localhost"].iter().all(IpAddr::is_loopback), "{r:?}");
        assert_eq!(r["no-such-host.invalid"], previous["no-such-host.invalid"]);
    }
}
