//! The demo topology: which upstream instances run where, and how they behave.
//!
//! Addresses are the ones `examples/services.yaml` names (`127.0.0.1:90xx`), so the file the
//! walkthrough edits and the processes the demo starts agree. `--port-offset N` shifts every
//! loopback port (in the YAML copy, the bootstrap and the upstreams) by N, so that tests can run
//! the demo next to other things.

use legate_test_upstream::FaultConfig;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The ambassador the demo's data plane is (its `node.cluster`).
pub const AMBASSADOR: &str = "checkout";
/// The demo topology, relative to the repository root.
pub const EXAMPLE_PATH: &str = "examples/services.yaml";
/// The same file as it was when the demo was built, for runs outside the repository.
pub const EMBEDDED_YAML: &str = include_str!("../../examples/services.yaml");
/// legate-cp's xDS port (`legate-cp serve` default).
pub const XDS_PORT: u16 = 18000;
/// legate-cp's admin port (`legate-cp serve` default).
pub const CP_ADMIN_PORT: u16 = 19000;
/// The ambassador's admin port (`legate-cp bootstrap envoy` default).
pub const PROXY_ADMIN_PORT: u16 = 9901;

/// Seed of the flaky instance: with `fail_rate` 0.3 its requests 1 to 5 fail, so outlier
/// detection (`consecutive_5xx: 3`) ejects it within the first second of traffic; after that it
/// fails about 30% of its requests at random (fixed by the seed).
pub const FLAKY_SEED: u64 = 329;
/// Share of the flaky instance's requests answered 503.
pub const FLAKY_RATE: f64 = 0.3;

/// One demo upstream instance.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Instance name, `<service>-<n>`: answered in `x-upstream-instance`.
    pub name: &'static str,
    /// Port on 127.0.0.1 (before `--port-offset`).
    pub port: u16,
    /// What the summary says about it.
    pub role: &'static str,
    /// Share of requests answered 503 (seeded by [`FLAKY_SEED`]).
    pub fail_rate: f64,
    /// Delay before the response headers.
    pub delay_ms: u64,
}

impl Instance {
    /// Its fault configuration.
    pub fn faults(&self) -> FaultConfig {
        FaultConfig {
            fail_rate: self.fail_rate,
            seed: FLAKY_SEED,
            delay: Duration::from_millis(self.delay_ms),
            ..FaultConfig::default()
        }
    }

    /// Its address after `offset`.
    pub fn addr(&self, offset: u16) -> SocketAddr {
        loopback(self.port, offset)
    }
}

/// The demo's upstream instances.
pub const INSTANCES: [Instance; 6] = [
    Instance {
        name: "payments-1",
        port: 9001,
        role: "healthy",
        fail_rate: 0.0,
        delay_ms: 2,
    },
    Instance {
        name: "payments-2",
        port: 9002,
        role: "healthy",
        fail_rate: 0.0,
        delay_ms: 3,
    },
    Instance {
        name: "payments-3",
        port: 9003,
        role: "flaky: 30% of requests get 503",
        fail_rate: FLAKY_RATE,
        delay_ms: 1,
    },
    Instance {
        name: "payments-4",
        port: 9004,
        role: "spare: not in the YAML until you add it",
        fail_rate: 0.0,
        delay_ms: 2,
    },
    Instance {
        name: "payments-canary-1",
        port: 9011,
        role: "healthy",
        fail_rate: 0.0,
        delay_ms: 2,
    },
    Instance {
        name: "inventory-1",
        port: 9021,
        role: "healthy (h2c)",
        fail_rate: 0.0,
        delay_ms: 4,
    },
];

// The mTLS service (`ledger-1` on 127.0.0.1:9031) is not in this list: it needs certificates
// made at demo start and is not in examples/services.yaml; see `crate::mtls`.

/// `127.0.0.1:(port + offset)`.
pub fn loopback(port: u16, offset: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port.saturating_add(offset)))
}

/// The service an instance name belongs to: `payments-canary-1` → `payments-canary`.
pub fn service_of(instance: &str) -> &str {
    match instance.rsplit_once('-') {
        Some((service, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => service,
        _ => instance,
    }
}

/// Shifts the port of every `127.0.0.1:PORT` in `text` by `offset`.
pub fn shift_ports(text: &str, offset: u16) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(HOST) {
        let (before, after) = rest.split_at(i + HOST.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<u16>() {
            Ok(port) if digits > 0 => out.push_str(&port.saturating_add(offset).to_string()),
            _ => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaky_instance_is_ejected_early_then_fails_about_30_percent() {
        let flaky = INSTANCES[2].faults();
        assert!((1..=5).all(|n| flaky.fails(n)), "first requests fail");
        let failures = (1..=10_000).filter(|n| flaky.fails(*n)).count();
        assert!((2_700..3_300).contains(&failures), "{failures}");
        for healthy in INSTANCES.iter().filter(|i| i.fail_rate == 0.0) {
            assert!(!(1..=1000).any(|n| healthy.faults().fails(n)));
        }
    }

    #[test]
    fn service_names() {
        assert_eq!(service_of("payments-canary-1"), "payments-canary");
        assert_eq!(service_of("payments-12"), "payments");
        assert_eq!(service_of("inventory"), "inventory");
        assert_eq!(service_of("a-b"), "a-b");
    }

    #[test]
    fn shifts_loopback_ports_only() {
        let text = "a: 127.0.0.1:9001\nb: [127.0.0.1:10000, 10.0.0.1:9001]\nc: 127.0.0.1:x\n";
        assert_eq!(
            shift_ports(text, 100),
            "a: 127.0.0.1:9101\nb: [127.0.0.1:10100, 10.0.0.1:9001]\nc: 127.0.0.1:x\n"
        );
    }

    #[test]
    fn every_instance_in_the_yaml_is_an_endpoint_of_its_service() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.yaml");
        std::fs::write(&path, EMBEDDED_YAML).unwrap();
        let config = legate_control_plane::config::load(&path).expect("valid");
        for i in INSTANCES.iter().filter(|i| i.name != "payments-4") {
            let service = &config.services[service_of(i.name)];
            assert!(
                service
                    .endpoints
                    .iter()
                    .any(|e| e.host.to_string() == "127.0.0.1" && e.port == i.port),
                "{} (127.0.0.1:{}) is not an endpoint of {}",
                i.name,
                i.port,
                service_of(i.name)
            );
        }
        assert!(config.ambassadors.contains_key(AMBASSADOR));
    }
}
