//! `legate-cp render`: exactly the resources a node would receive, in Envoy's JSON mapping.

use crate::cache::SnapshotCache;
use crate::model::Config;
use legate_proto::type_url;

/// Renders what `node` (matched like a live client: ambassador name, else `default`) receives.
pub fn render(config: &Config, node: &str) -> anyhow::Result<serde_json::Value> {
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
        let items = typed
            .items
            .values()
            .map(|r| legate_proto::json::any_to_json(&r.any))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(
            type_url::short_name(t).into(),
            serde_json::Value::Array(items),
        );
    }
    Ok(serde_json::Value::Object(out))
}
