//! One entry under `ambassadors:` → [`Ambassador`], with its explicit routes.

use super::address;
use super::node::{Kind, Node};
use super::reader::{Diag, MapReader, boolean, describe, did_you_mean, list, string, u32_in};
use crate::model::{Ambassador, Location, Route, RouteAction, RouteMatch};
use std::collections::BTreeSet;

/// Reads the ambassador `name`, defined by the key at `key_loc` with value `node`. `services` are
/// the names of every defined service. Returns `None` when anything is wrong (and records why in
/// `diag`).
pub(crate) fn build(
    name: &str,
    key_loc: &Location,
    node: &Node,
    services: &BTreeSet<String>,
    diag: &mut Diag,
) -> Option<Ambassador> {
    let errors_before = diag.count();
    let what = format!("ambassador `{name}`");
    let mut m = MapReader::new(node, what.clone(), diag)?;

    let listen = match m.get("listen") {
        None => {
            diag.at(
                key_loc,
                format!("{what} needs `listen` (e.g. `listen: 127.0.0.1:10000`)"),
            );
            None
        }
        Some(n) => string(n, "`listen`", diag).and_then(|text| {
            address::parse_listen(&text)
                .map_err(|message| diag.at(&n.loc, message))
                .ok()
        }),
    };
    let allowed: BTreeSet<String> = match m.get("services") {
        None => services.clone(),
        Some(n) => list(n, "`services`", diag)
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                let service = string(item, "a service name", diag)?;
                known_service(&service, item, services, diag).then_some(service)
            })
            .collect(),
    };
    let routes: Vec<Route> = m
        .get("routes")
        .and_then(|n| list(n, "`routes`", diag))
        .unwrap_or_default()
        .iter()
        .filter_map(|item| route(item, name, services, &allowed, diag))
        .collect();
    let attempt_count_header = m
        .get("attempt_count_header")
        .and_then(|n| boolean(n, "`attempt_count_header`", diag))
        .unwrap_or(false);
    m.finish(diag);

    if diag.count() > errors_before {
        return None;
    }
    Some(Ambassador {
        name: name.to_string(),
        listen: listen?,
        services: allowed.into_iter().collect(),
        routes,
        attempt_count_header,
        location: key_loc.clone(),
    })
}

/// True when `service` is defined; otherwise reports it at `node`.
fn known_service(service: &str, node: &Node, services: &BTreeSet<String>, diag: &mut Diag) -> bool {
    if services.contains(service) {
        return true;
    }
    let hint = did_you_mean(service, services.iter().map(String::as_str));
    diag.at(&node.loc, format!("unknown service `{service}`{hint}"));
    false
}

/// One explicit route. Problems are reported at the route item, or at the offending value.
fn route(
    node: &Node,
    ambassador: &str,
    services: &BTreeSet<String>,
    allowed: &BTreeSet<String>,
    diag: &mut Diag,
) -> Option<Route> {
    let errors_before = diag.count();
    let mut m = MapReader::new(node, format!("a route of ambassador `{ambassador}`"), diag)?;
    let prefix = m.get("prefix");
    let path = m.get("path");
    let service = m.get("service");
    let split = m.get("split");
    let rewrite = m.get("rewrite").and_then(|n| string(n, "`rewrite`", diag));
    m.finish(diag);

    let matcher = match (prefix, path) {
        (Some(n), None) => route_path(n, "prefix", diag).map(RouteMatch::Prefix),
        (None, Some(n)) => route_path(n, "path", diag).map(RouteMatch::Path),
        (None, None) => {
            diag.at(&node.loc, "a route needs `prefix` or `path`");
            None
        }
        (Some(_), Some(_)) => {
            diag.at(&node.loc, "a route takes `prefix` or `path`, not both");
            None
        }
    };

    // Every service the route names must exist and be one the ambassador may call.
    let check = |service: &str, at: &Node, diag: &mut Diag| {
        if !known_service(service, at, services, diag) {
            return;
        }
        if !allowed.contains(service) {
            diag.at(
                &at.loc,
                format!(
                    "route sends to service `{service}`, which is not in the `services` of ambassador `{ambassador}`"
                ),
            );
        }
    };
    let action = match (service, split) {
        (Some(n), None) => string(n, "`service`", diag).map(|s| {
            check(&s, n, diag);
            RouteAction::Service(s)
        }),
        (None, Some(n)) => split_targets(n, diag).map(|parts| {
            for (s, at, _) in &parts {
                check(s, at, diag);
            }
            RouteAction::Split(parts.into_iter().map(|(s, _, w)| (s, w)).collect())
        }),
        (None, None) => {
            diag.at(&node.loc, "a route needs `service` or `split`");
            None
        }
        (Some(_), Some(_)) => {
            diag.at(&node.loc, "a route takes `service` or `split`, not both");
            None
        }
    };

    if diag.count() > errors_before {
        return None;
    }
    Some(Route {
        matcher: matcher?,
        action: action?,
        rewrite,
        location: node.loc.clone(),
    })
}

/// A `prefix` or `path` value: text starting with `/`.
fn route_path(node: &Node, key: &str, diag: &mut Diag) -> Option<String> {
    let text = string(node, &format!("`{key}`"), diag)?;
    if !text.starts_with('/') {
        diag.at(
            &node.loc,
            format!("`{key}` must start with `/`, found `{text}`"),
        );
        return None;
    }
    Some(text)
}

/// The `split` mapping: service name → weight (at least 1), in file order.
fn split_targets<'n>(node: &'n Node, diag: &mut Diag) -> Option<Vec<(String, &'n Node, u32)>> {
    let Kind::Map(entries) = &node.kind else {
        diag.at(
            &node.loc,
            format!(
                "`split` must map services to weights, e.g. `{{ a: 90, b: 10 }}`, found {}",
                describe(node)
            ),
        );
        return None;
    };
    if entries.is_empty() {
        diag.at(&node.loc, "`split` needs at least one service");
        return None;
    }
    let mut parts: Vec<(String, &Node, u32)> = Vec::new();
    let mut ok = true;
    for (key, value) in entries {
        let Some(service) = string(key, "a service name in `split`", diag) else {
            ok = false;
            continue;
        };
        if let Some((_, first, _)) = parts.iter().find(|(s, _, _)| *s == service) {
            diag.at(
                &key.loc,
                format!(
                    "service `{service}` appears twice in `split`; first at {}",
                    first.loc
                ),
            );
            ok = false;
            continue;
        }
        match u32_in(
            value,
            &format!("the weight of `{service}`"),
            1,
            u32::MAX,
            diag,
        ) {
            Some(weight) => parts.push((service, key, weight)),
            None => ok = false,
        }
    }
    ok.then_some(parts)
}
