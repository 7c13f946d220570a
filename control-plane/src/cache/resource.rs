//! One encoded xDS resource.

use legate_proto::pb::google::protobuf::Any;
use prost::{Message, Name};

/// An immutable, encoded resource with its content version. `Debug` shows no bytes (a secret's
/// encoding holds its private key).
#[derive(PartialEq)]
pub struct Resource {
    /// The resource name (cluster name, listener name, …).
    pub name: String,
    /// The type URL.
    pub type_url: String,
    /// Content hash of the encoded bytes (xxh3-64).
    pub hash: u64,
    /// `hash` as 16 hex digits: the resource's version in delta xDS.
    pub version: String,
    /// The packed resource, encoded once.
    pub any: Any,
    /// Clusters this resource sends traffic to (set on route configurations), so that streams
    /// can keep a cluster until no route a client holds points at it.
    pub referenced_clusters: Vec<String>,
}

impl Resource {
    /// Encodes a message once and hashes the bytes.
    pub fn encode<M: Message + Name>(
        name: &str,
        message: &M,
        referenced_clusters: Vec<String>,
    ) -> Self {
        let any = legate_proto::any::pack(message);
        let hash = xxhash_rust::xxh3::xxh3_64(&any.value);
        Resource {
            name: name.to_string(),
            type_url: any.type_url.clone(),
            hash,
            version: format!("{hash:016x}"),
            any,
            referenced_clusters,
        }
    }
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("type_url", &self.type_url)
            .field("version", &self.version)
            .field("bytes", &self.any.value.len())
            .field("referenced_clusters", &self.referenced_clusters)
            .finish()
    }
}
