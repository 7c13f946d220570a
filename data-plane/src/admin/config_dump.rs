//! `GET /config_dump`: Envoy's top-level shape (Bootstrap, Clusters, Endpoints on request,
//! Listeners, ScopedRoutes, Routes, Secrets config dumps).
//!
//! As in Envoy's JSON, fields left at their default (empty strings and lists) are omitted, and
//! each object's fields come in the proto's field order.

use super::AdminCtx;
use super::time::rfc3339;
use crate::runtime::manager::DumpEntry;
use legate_proto::json::Codec;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::SystemTime;

fn resource(codec: &Codec, e: &DumpEntry) -> Value {
    codec.any_to_json(&e.any).unwrap_or(Value::Null)
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
fn dynamic(codec: &Codec, key: &str, e: &DumpEntry) -> Value {
    object([
        ("version_info", Value::String(e.version.clone())),
        (key, resource(codec, e)),
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

/// `/config_dump?resource=<field>`: every element of the repeated field `<field>` of any
/// config dump in `dump` (`dynamic_active_clusters`, `static_listeners`, …), each typed by its
/// own message (`ClustersConfigDump.DynamicCluster`, …), as Envoy lists them. `None` when no
/// config dump has such a list.
pub fn only_resource(dump: &Value, field: &str) -> Option<Value> {
    let mut found = false;
    let mut configs = Vec::new();
    for config in dump["configs"].as_array()? {
        let Some(items) = config.get(field).and_then(Value::as_array) else {
            continue;
        };
        let Some(element_type) = config["@type"]
            .as_str()
            .and_then(|t| element_type(t, field))
        else {
            continue;
        };
        found = true;
        for item in items {
            let mut typed = Map::new();
            typed.insert("@type".into(), Value::String(element_type.clone()));
            if let Some(fields) = item.as_object() {
                typed.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            configs.push(Value::Object(typed));
        }
    }
    found.then(|| json!({ "configs": configs }))
}

/// The message type of the elements of `field` in the config dump of type `dump_type`.
fn element_type(dump_type: &str, field: &str) -> Option<String> {
    let message = match field {
        "static_clusters" => "StaticCluster",
        "dynamic_active_clusters" | "dynamic_warming_clusters" => "DynamicCluster",
        "static_listeners" => "StaticListener",
        "dynamic_listeners" => "DynamicListener",
        "static_route_configs" => "StaticRouteConfig",
        "dynamic_route_configs" => "DynamicRouteConfig",
        "static_endpoint_configs" => "StaticEndpointConfig",
        "dynamic_endpoint_configs" => "DynamicEndpointConfig",
        "static_secrets" => "StaticSecret",
        "dynamic_active_secrets" | "dynamic_warming_secrets" => "DynamicSecret",
        _ => return None,
    };
    Some(format!("{dump_type}.{message}"))
}

/// The whole dump; `include_eds` adds the EndpointsConfigDump as Envoy's `?include_eds`.
pub fn dump(ctx: &AdminCtx, include_eds: bool) -> Value {
    // Decoded for this dump only and freed after it: the proxy keeps no descriptor pool.
    let codec = Codec::new();
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
        list.into_iter()
            .map(|e| dynamic(&codec, "cluster", e))
            .collect()
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
            json!({"name": e.name, state: dynamic(&codec, "listener", e)})
        })
        .collect();
    let routes: Vec<Value> = parts
        .routes
        .iter()
        .map(|e| dynamic(&codec, "route_config", e))
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
            .map(|e| json!({"endpoint_config": resource(&codec, e)}))
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
                ("secret", resource(&codec, e)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use legate_control_plane::cache::SnapshotCache;
    use legate_control_plane::certs::{InitOptions, init};
    use legate_proto::descriptors::full_set_uses_on_this_thread;
    use legate_proto::type_url::ADS_ORDER;
    use std::path::Path;

    /// Every resource legate-cp sends for the example configuration, and for a service with
    /// mTLS (UpstreamTlsContext over SDS, and the secrets).
    fn legate_cp_resources(dir: &Path) -> Vec<DumpEntry> {
        init(&InitOptions::new(
            dir.join("certs"),
            "example.org",
            &["payments", "checkout"],
        ))
        .expect("certs");
        let tls_yaml = dir.join("tls.yaml");
        std::fs::write(
            &tls_yaml,
            "services:\n  payments:\n    endpoints: [127.0.0.1:9001]\n    protocol: http2\n    \
             tls: { ca: certs/ca.pem, cert: certs/checkout.pem, key: certs/checkout.key, \
             sni: payments, verify_san: [spiffe://example.org/ns/default/sa/payments] }\n\
             ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n",
        )
        .expect("write");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services.yaml");
        let mut entries = Vec::new();
        for file in [example, tls_yaml] {
            let config = legate_control_plane::config::load(&file)
                .unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
            let snapshots = SnapshotCache::new().publish(&config, 1);
            for snapshot in snapshots.by_ambassador.values() {
                for t in ADS_ORDER {
                    for r in snapshot
                        .of(t)
                        .map(|s| s.items.values())
                        .into_iter()
                        .flatten()
                    {
                        entries.push(DumpEntry {
                            name: r.name.clone(),
                            any: r.any.clone(),
                            updated: SystemTime::UNIX_EPOCH,
                            version: "1".into(),
                            warming: false,
                        });
                    }
                }
            }
        }
        entries
    }

    /// `/config_dump` of what legate-cp sends decodes only the core descriptor set, and shows
    /// exactly what the whole set shows.
    #[test]
    fn legate_cp_resources_dump_with_the_core_descriptor_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = legate_cp_resources(dir.path());
        let before = full_set_uses_on_this_thread();
        let codec = Codec::new();
        let dumped: Vec<Value> = entries.iter().map(|e| resource(&codec, e)).collect();
        assert!(!codec.used_full_set());
        drop(codec);
        assert_eq!(full_set_uses_on_this_thread(), before);
        let text = serde_json::to_string(&dumped).expect("JSON");
        for expected in [
            "envoy.extensions.transport_sockets.tls.v3.Secret",
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
        ] {
            assert!(text.contains(expected), "no {expected} in {text}");
        }
        for (entry, ours) in entries.iter().zip(&dumped) {
            let whole = legate_proto::json::any_to_json(&entry.any).expect("whole set");
            assert_eq!(ours, &whole, "{}", entry.name);
        }
    }

    /// A resource with a type outside the core set is still dumped in full.
    #[test]
    fn other_types_are_dumped_through_the_whole_set() {
        let listener: legate_proto::pb::envoy::config::listener::v3::Listener =
            legate_proto::json::from_json(&json!({"name": "tcp", "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "tcp", "cluster": "c"}}]}]}))
            .expect("listener");
        let entry = DumpEntry {
            name: "tcp".into(),
            any: legate_proto::any::pack(&listener),
            updated: SystemTime::UNIX_EPOCH,
            version: "1".into(),
            warming: false,
        };
        let codec = Codec::new();
        let dumped = resource(&codec, &entry);
        assert!(codec.used_full_set());
        assert_eq!(
            dumped["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
            "c"
        );
    }
}
