//! `GET /config_dump`: Envoy's top-level shape (Bootstrap, Clusters, Endpoints on request,
//! Listeners, ScopedRoutes, Routes, Secrets config dumps).

use super::AdminCtx;
use super::time::rfc3339;
use crate::runtime::manager::DumpEntry;
use serde_json::{Value, json};

fn resource(e: &DumpEntry) -> Value {
    legate_proto::json::any_to_json(&e.any).unwrap_or(Value::Null)
}

/// The whole dump; `include_eds` adds the EndpointsConfigDump as Envoy's `?include_eds`.
pub fn dump(ctx: &AdminCtx, include_eds: bool) -> Value {
    let parts = ctx.manager.dump();
    let static_clusters: Vec<Value> = ctx.bootstrap["static_resources"]["clusters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|c| json!({"cluster": with_type(c, legate_proto::type_url::CLUSTER)}))
        .collect();
    let static_listeners: Vec<Value> = ctx.bootstrap["static_resources"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|l| json!({"listener": with_type(l, legate_proto::type_url::LISTENER)}))
        .collect();
    let (warming, active): (Vec<&DumpEntry>, Vec<&DumpEntry>) =
        parts.dynamic_clusters.iter().partition(|e| e.warming);
    let cluster_entry =
        |e: &&DumpEntry| json!({"cluster": resource(e), "last_updated": rfc3339(e.updated)});
    let listeners: Vec<Value> = parts
        .dynamic_listeners
        .iter()
        .map(|e| {
            let state = json!({"listener": resource(e), "last_updated": rfc3339(e.updated)});
            if e.warming {
                json!({"name": e.name, "warming_state": state})
            } else {
                json!({"name": e.name, "active_state": state})
            }
        })
        .collect();
    let routes: Vec<Value> = parts
        .routes
        .iter()
        .map(|e| json!({"route_config": resource(e), "last_updated": rfc3339(e.updated)}))
        .collect();
    let mut configs = vec![
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "bootstrap": ctx.bootstrap,
        }),
        json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": static_clusters,
            "dynamic_active_clusters": active.iter().map(cluster_entry).collect::<Vec<_>>(),
            "dynamic_warming_clusters": warming.iter().map(cluster_entry).collect::<Vec<_>>(),
        }),
    ];
    if include_eds {
        let eds: Vec<Value> = parts
            .endpoints
            .iter()
            .map(|e| json!({"endpoint_config": resource(e), "last_updated": rfc3339(e.updated)}))
            .collect();
        configs.push(json!({
            "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
            "dynamic_endpoint_configs": eds,
        }));
    }
    configs.push(json!({
        "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "static_listeners": static_listeners,
        "dynamic_listeners": listeners,
    }));
    configs.push(json!({"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump"}));
    configs.push(json!({
        "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        "dynamic_route_configs": routes,
    }));
    configs.push(json!({"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}));
    json!({ "configs": configs })
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
