//! Ambassador → `RouteConfiguration`.
//!
//! Layout (Envoy picks the virtual host by domain first):
//! - one virtual host per service, `domains: [S, "S:*"]`, sending any path to S (`Host: S`);
//! - a catch-all virtual host (`*`, named after the ambassador) holding the explicit routes,
//!   then per service `/S/…` and `/S`, with the prefix rewritten to `/`.
//!
//! Each route carries its service's timeout and retry policy. A split route takes the policy
//! of the first service in the split (Envoy's retry policy is per route, not per cluster).

use super::util::{duration, u32_value};
use crate::model::{Ambassador, Config, RouteAction as ModelAction, RouteMatch as ModelMatch};
use legate_proto::pb::envoy::config::route::v3::RetryPolicy;
use legate_proto::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, retry_policy,
    route, route_action, route_match, weighted_cluster,
};

/// Builds the ambassador's route table; its name is the ambassador name (the listener's RDS name).
pub fn route_configuration(config: &Config, amb: &Ambassador) -> RouteConfiguration {
    let mut virtual_hosts = Vec::new();
    let mut catch_all = Vec::new();
    for r in &amb.routes {
        let (matcher, action) = match &r.matcher {
            ModelMatch::Prefix(p) => (route_match::PathSpecifier::Prefix(p.clone()), &r.action),
            ModelMatch::Path(p) => (route_match::PathSpecifier::Path(p.clone()), &r.action),
        };
        let first = action
            .services()
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let specifier = match action {
            ModelAction::Service(s) => route_action::ClusterSpecifier::Cluster(s.clone()),
            ModelAction::Split(parts) => {
                route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: parts
                        .iter()
                        .map(|(name, weight)| weighted_cluster::ClusterWeight {
                            name: name.clone(),
                            weight: Some(u32_value(*weight)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            }
        };
        catch_all.push(route(config, &first, matcher, specifier, r.rewrite.clone()));
    }
    for name in &amb.services {
        let to = || route_action::ClusterSpecifier::Cluster(name.clone());
        catch_all.push(route(
            config,
            name,
            route_match::PathSpecifier::Prefix(format!("/{name}/")),
            to(),
            Some("/".into()),
        ));
        catch_all.push(route(
            config,
            name,
            route_match::PathSpecifier::Path(format!("/{name}")),
            to(),
            Some("/".into()),
        ));
        virtual_hosts.push(VirtualHost {
            name: name.clone(),
            domains: vec![name.clone(), format!("{name}:*")],
            routes: vec![route(
                config,
                name,
                route_match::PathSpecifier::Prefix("/".into()),
                to(),
                None,
            )],
            ..Default::default()
        });
    }
    virtual_hosts.push(VirtualHost {
        name: amb.name.clone(),
        domains: vec!["*".into()],
        routes: catch_all,
        ..Default::default()
    });
    RouteConfiguration {
        name: amb.name.clone(),
        virtual_hosts,
        ..Default::default()
    }
}

/// One route with the policy (timeout, retries) of `service`.
fn route(
    config: &Config,
    service: &str,
    path: route_match::PathSpecifier,
    specifier: route_action::ClusterSpecifier,
    rewrite: Option<String>,
) -> Route {
    let svc = config.services.get(service);
    let action = RouteAction {
        cluster_specifier: Some(specifier),
        prefix_rewrite: rewrite.unwrap_or_default(),
        timeout: svc.and_then(|s| s.timeout).map(duration),
        retry_policy: svc.and_then(|s| s.retries.as_ref()).map(retry_policy),
        ..Default::default()
    };
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn retry_policy(r: &crate::model::RetryPolicy) -> RetryPolicy {
    let mut on = r.on.clone();
    if !r.status_codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
        on.push("retriable-status-codes".into());
    }
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: r.attempts.map(u32_value),
        per_try_timeout: r.per_try_timeout.map(duration),
        retriable_status_codes: r.status_codes.iter().map(|c| u32::from(*c)).collect(),
        retry_back_off: r.backoff.as_ref().map(|b| retry_policy::RetryBackOff {
            base_interval: Some(duration(b.base)),
            max_interval: b.max.map(duration),
        }),
        ..Default::default()
    }
}
