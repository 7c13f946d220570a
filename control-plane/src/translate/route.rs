//! Ambassador → `RouteConfiguration`.
//!
//! Layout (Envoy picks the virtual host by domain first):
//! - one virtual host per service, `domains: [S, "S:*"]`, sending any path to S (`Host: S`);
//! - a catch-all virtual host (`*`, named after the ambassador) holding the explicit routes,
//!   then per service `/S/…` and `/S`, with the prefix rewritten to `/`.
//!
//! Each route carries its service's timeout and retry policy. A split route takes the policy
//! of the first service in the split (Envoy's retry policy is per route, not per cluster).
//! `attempt_count_header` sets `include_request_attempt_count` on every virtual host.

use super::util::{duration, u32_value};
use crate::model::{
    Ambassador, Config, RetriableHeader, RouteAction as ModelAction, RouteMatch as ModelMatch,
};
use legate_proto::any::pack;
use legate_proto::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, header_matcher::HeaderMatchSpecifier,
};
use legate_proto::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, retry_policy,
    route, route_action, route_match, weighted_cluster,
};
use legate_proto::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use legate_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};

/// Envoy's name of the retry host predicate that avoids hosts already tried.
pub const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

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
            include_request_attempt_count: amb.attempt_count_header,
            ..Default::default()
        });
    }
    virtual_hosts.push(VirtualHost {
        name: amb.name.clone(),
        domains: vec!["*".into()],
        routes: catch_all,
        include_request_attempt_count: amb.attempt_count_header,
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
    let mut implies = |set: bool, name: &str| {
        if set && !on.iter().any(|o| o == name) {
            on.push(name.into());
        }
    };
    implies(!r.status_codes.is_empty(), "retriable-status-codes");
    implies(!r.retriable_headers.is_empty(), "retriable-headers");
    let retry_host_predicate = if r.previous_hosts {
        vec![retry_policy::RetryHostPredicate {
            name: PREVIOUS_HOSTS.into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                pack(&PreviousHostsPredicate {}),
            )),
        }]
    } else {
        Vec::new()
    };
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: r.attempts.map(u32_value),
        per_try_timeout: r.per_try_timeout.map(duration),
        per_try_idle_timeout: r.per_try_idle_timeout.map(duration),
        retriable_status_codes: r.status_codes.iter().map(|c| u32::from(*c)).collect(),
        retry_back_off: r.backoff.as_ref().map(|b| retry_policy::RetryBackOff {
            base_interval: Some(duration(b.base)),
            max_interval: b.max.map(duration),
        }),
        retry_host_predicate,
        // 0 is the proto default: Envoy's own default (1) applies.
        host_selection_retry_max_attempts: r.host_selection_attempts.map_or(0, i64::from),
        retriable_headers: r.retriable_headers.iter().map(header_matcher).collect(),
        ..Default::default()
    }
}

/// `present_match: true`, or `string_match: { exact: value }`.
fn header_matcher(h: &RetriableHeader) -> HeaderMatcher {
    let specifier = match &h.value {
        None => HeaderMatchSpecifier::PresentMatch(true),
        Some(value) => HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(value.clone())),
            ..Default::default()
        }),
    };
    HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}
