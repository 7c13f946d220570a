//! `GET /config_dump`: Envoy's top-level shape (Bootstrap, Clusters, Endpoints on request,
//! Listeners, ScopedRoutes, Routes, Secrets config dumps).
//!
//! As in Envoy's JSON, fields left at their default (empty strings and lists) are omitted, and
//! each object's fields come in the proto's field order.

use super::AdminCtx;
use super::time::rfc3339;
use crate::runtime::manager::DumpEntry;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::SystemTime;

fn resource(e: &DumpEntry) -> Value {
    legate_proto::json::any_to_json(&e.any).unwrap_or(Value::Null)
}

/// An object of the given fields, without those that are empty (`""`, `[]`).
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter(|(_, v)| match v {
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            _ => true,
        })
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::Object(map)
}

/// A dynamic resource: `version_info`, the resource under `key`, `last_updated`.
fn dynamic(key: &str, e: &DumpEntry) -> Value {
    object([
        ("version_info", Value::String(e.version.clone())),
        (key, resource(e)),
        ("last_updated", Value::String(rfc3339(e.updated))),
    ])
}

/// The bootstrap's static resources of one kind (`clusters`, `listeners`), each as
/// `{<key>: resource, last_updated}` with the time the manager installed it.
fn statics(
    ctx: &AdminCtx,
    list: &str,
    key: &str,
    type_url: &str,
    installed: &BTreeMap<String, SystemTime>,
) -> Vec<Value> {
    ctx.bootstrap["static_resources"][list]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let updated = r["name"]
                .as_str()
                .and_then(|n| installed.get(n))
                .map(|t| Value::String(rfc3339(*t)))
                .unwrap_or(Value::Null);
            object([(key, with_type(r, type_url)), ("last_updated", updated)])
        })
        .collect()
}

/// The whole dump; `include_eds` adds the EndpointsConfigDump as Envoy's `?include_eds`.
pub fn dump(ctx: &AdminCtx, include_eds: bool) -> Value {
    let parts = ctx.manager.dump();
    let static_clusters = statics(
        ctx,
        "clusters",
        "cluster",
        legate_proto::type_url::CLUSTER,
        &parts.static_clusters,
    );
    let static_listeners = statics(
        ctx,
        "listeners",
        "listener",
        legate_proto::type_url::LISTENER,
        &parts.static_listeners,
    );
    let (warming, active): (Vec<&DumpEntry>, Vec<&DumpEntry>) =
        parts.dynamic_clusters.iter().partition(|e| e.warming);
    let clusters = |list: Vec<&DumpEntry>| -> Value {
        list.into_iter().map(|e| dynamic("cluster", e)).collect()
    };
    let listeners: Vec<Value> = parts
        .dynamic_listeners
        .iter()
        .map(|e| {
            let state = if e.warming {
                "warming_state"
            } else {
                "active_state"
            };
            json!({"name": e.name, state: dynamic("listener", e)})
        })
        .collect();
    let routes: Vec<Value> = parts
        .routes
        .iter()
        .map(|e| dynamic("route_config", e))
        .collect();
    let mut configs = vec![
        object([
            (
                "@type",
                json!("type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"),
            ),
            ("bootstrap", ctx.bootstrap.clone()),
            ("last_updated", Value::String(rfc3339(ctx.bootstrap_loaded))),
        ]),
        object([
            (
                "@type",
                json!("type.googleapis.com/envoy.admin.v3.ClustersConfigDump"),
            ),
            (
                "version_info",
                Value::String(parts.clusters_version.clone()),
            ),
            ("static_clusters", Value::Array(static_clusters)),
            ("dynamic_active_clusters", clusters(active)),
            ("dynamic_warming_clusters", clusters(warming)),
        ]),
    ];
    if include_eds {
        // Envoy dumps endpoints without version or time.
        let eds: Vec<Value> = parts
            .endpoints
            .iter()
            .map(|e| json!({"endpoint_config": resource(e)}))
            .collect();
        configs.push(object([
            (
                "@type",
                json!("type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"),
            ),
            ("dynamic_endpoint_configs", Value::Array(eds)),
        ]));
    }
    configs.push(object([
        (
            "@type",
            json!("type.googleapis.com/envoy.admin.v3.ListenersConfigDump"),
        ),
        (
            "version_info",
            Value::String(parts.listeners_version.clone()),
        ),
        ("static_listeners", Value::Array(static_listeners)),
        ("dynamic_listeners", Value::Array(listeners)),
    ]));
    configs.push(json!({"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump"}));
    configs.push(object([
        (
            "@type",
            json!("type.googleapis.com/envoy.admin.v3.RoutesConfigDump"),
        ),
        ("dynamic_route_configs", Value::Array(routes)),
    ]));
    let secrets: Vec<Value> = parts
        .secrets
        .iter()
        .map(|e| {
            object([
                ("name", Value::String(e.name.clone())),
                ("version_info", Value::String(e.version.clone())),
                ("last_updated", Value::String(rfc3339(e.updated))),
                ("secret", resource(e)),
            ])
        })
        .collect();
    configs.push(object([
        (
            "@type",
            json!("type.googleapis.com/envoy.admin.v3.SecretsConfigDump"),
        ),
        ("dynamic_active_secrets", Value::Array(secrets)),
    ]));
    let mut dump = json!({ "configs": configs });
    // Private keys never leave the process: Envoy redacts its `sensitive` fields the same way
    // (in secrets, and in TLS contexts inline in clusters and the bootstrap).
    crate::tls::redact_json(&mut dump);
    dump
}

fn with_type(mut v: Value, type_url: &str) -> Value {
    if let Value::Object(map) = &mut v {
        let mut typed = serde_json::Map::new();
        typed.insert("@type".into(), Value::String(type_url.into()));
        typed.extend(std::mem::take(map));
        *map = typed;
    }
    v
}
