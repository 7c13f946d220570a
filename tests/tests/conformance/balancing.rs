//! Consistent hashing: a route's header hash policy pins a header value to one host of a
//! `RING_HASH` or `MAGLEV` cluster (legate-cp does not generate hash policies: a static
//! bootstrap).

use std::collections::{BTreeMap, BTreeSet};

use legate_e2e::Flavor;
use legate_e2e::upstream::Upstream;
use serde_json::json;

use crate::common::{Fixture, flavors};

/// Twelve users, three requests each: every request of a user reaches the same host, and the
/// users spread over more than one host.
async fn hash_policy_pins_a_header_to_a_host(flavor: Flavor, lb_policy: &str) {
    let mut ups = Vec::new();
    for name in ["h1", "h2", "h3"] {
        ups.push(Upstream::start(name).await.expect("upstream"));
    }
    let endpoints: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let hcm = json!({
        "route_config": {"name": "app", "virtual_hosts": [{
            "name": "app", "domains": ["*"],
            "routes": [{"match": {"prefix": "/payments/"},
                        "route": {"cluster": "payments", "prefix_rewrite": "/",
                                  "hash_policy": [{"header": {"header_name": "x-user"}}]}}]
        }]}
    });
    let fx =
        Fixture::start_static_with(flavor, &endpoints, hcm, json!({"lb_policy": lb_policy})).await;
    let name = flavor.name();
    let mut hosts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        for _ in 0..3 {
            let r = fx.get("/payments/x", &[("x-user", &user)]).await;
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            let instance = r.header("x-upstream-instance").unwrap_or("?").to_owned();
            hosts.entry(user.clone()).or_default().insert(instance);
        }
    }
    for (user, seen) in &hosts {
        assert_eq!(seen.len(), 1, "{name} {lb_policy}: {user} reached {seen:?}");
    }
    let used: BTreeSet<&String> = hosts.values().flatten().collect();
    assert!(used.len() > 1, "{name} {lb_policy}: every user on {used:?}");
}

async fn ring_hash_pins_a_header_to_a_host(flavor: Flavor) {
    hash_policy_pins_a_header_to_a_host(flavor, "RING_HASH").await;
}

async fn maglev_pins_a_header_to_a_host(flavor: Flavor) {
    hash_policy_pins_a_header_to_a_host(flavor, "MAGLEV").await;
}

flavors!(
    ring_hash_pins_a_header_to_a_host,
    ring_hash_pins_a_header_to_a_host_envoy,
    ring_hash_pins_a_header_to_a_host_legate
);

flavors!(
    maglev_pins_a_header_to_a_host,
    maglev_pins_a_header_to_a_host_envoy,
    maglev_pins_a_header_to_a_host_legate
);
