//! STRICT_DNS: resolve every target periodically and replace the cluster's endpoints.

use super::cluster::Cluster;
use crate::config::{Discovery, EndpointConfig, EndpointHealth};
use std::net::SocketAddr;
use std::sync::Arc;

/// Resolves once: every address of every target (IPv4 first when preferred), keeping weights.
pub async fn resolve(cluster: &Cluster) -> Option<(Vec<EndpointConfig>, Vec<Option<String>>)> {
    let Discovery::StrictDns {
        targets, prefer_v4, ..
    } = &cluster.config.discovery
    else {
        return None;
    };
    let mut endpoints = Vec::new();
    let mut names = Vec::new();
    for t in targets {
        let Ok(addrs) = tokio::net::lookup_host((t.host.as_str(), t.port)).await else {
            tracing::warn!(cluster = %cluster.config.name, host = %t.host, "DNS resolution failed");
            continue;
        };
        let mut addrs: Vec<SocketAddr> = addrs.collect();
        addrs.sort_by_key(|a| if *prefer_v4 { a.is_ipv6() } else { a.is_ipv4() });
        addrs.dedup();
        // A "preferred" family means: use it if present, else the other.
        if let Some(first) = addrs.first().copied() {
            addrs.retain(|a| a.is_ipv4() == first.is_ipv4());
        }
        for address in addrs {
            endpoints.push(EndpointConfig {
                address,
                weight: t.weight,
                locality_weight: 1,
                priority: 0,
                health: EndpointHealth::Healthy,
            });
            names.push(Some(t.host.clone()));
        }
    }
    Some((endpoints, names))
}

/// Keeps a STRICT_DNS cluster's endpoints fresh until the task is aborted.
pub async fn run(cluster: Arc<Cluster>) {
    let refresh = match &cluster.config.discovery {
        Discovery::StrictDns { refresh, .. } => *refresh,
        _ => return,
    };
    loop {
        if let Some((eps, names)) = resolve(&cluster).await {
            cluster.set_endpoints(&eps, &names);
        }
        tokio::time::sleep(refresh).await;
    }
}
