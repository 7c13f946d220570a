//! `legate-cp render`: exactly the resources a node would receive, in Envoy's JSON mapping.
//!
//! Private keys are replaced by `"[redacted]"` (as Envoy's `/config_dump` does) unless asked
//! for with `--show-secrets`.

use crate::cache::SnapshotCache;
use crate::model::Config;
use legate_proto::type_url;
use serde_json::Value;

/// What stands in for a private key's bytes.
pub const REDACTED: &str = "[redacted]";

/// Renders what `node` (matched like a live client: ambassador name, else `default`) receives,
/// with private keys redacted.
pub fn render(config: &Config, node: &str) -> anyhow::Result<Value> {
    render_with(config, node, false)
}

/// Renders what `node` receives; `show_secrets` keeps private keys in the output.
pub fn render_with(config: &Config, node: &str, show_secrets: bool) -> anyhow::Result<Value> {
    let cache = SnapshotCache::new();
    let snapshots = cache.publish(config, 1);
    let Some(amb) = snapshots.ambassador_for(node, node) else {
        anyhow::bail!(
            "no ambassador named `{node}` and no `default` ambassador; known: {}",
            snapshots
                .by_ambassador
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let snapshot = &snapshots.by_ambassador[amb];
    let mut out = serde_json::Map::new();
    out.insert("ambassador".into(), amb.into());
    for t in type_url::ADS_ORDER {
        let Some(typed) = snapshot.of(t) else {
            continue;
        };
        let mut items = typed
            .items
            .values()
            .map(|r| legate_proto::json::any_to_json(&r.any))
            .collect::<Result<Vec<_>, _>>()?;
        if t == type_url::SECRET && !show_secrets {
            items.iter_mut().for_each(redact_secret);
        }
        out.insert(type_url::short_name(t).into(), Value::Array(items));
    }
    Ok(Value::Object(out))
}

/// Replaces the private key of a rendered `Secret` (every form Envoy accepts) by [`REDACTED`].
pub fn redact_secret(secret: &mut Value) {
    let Some(key) = secret
        .get_mut("tls_certificate")
        .and_then(|c| c.get_mut("private_key"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for field in ["inline_bytes", "inline_string"] {
        if let Some(v) = key.get_mut(field) {
            *v = Value::String(REDACTED.to_string());
        }
    }
}
