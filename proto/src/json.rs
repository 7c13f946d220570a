//! Envoy's JSON mapping for any Envoy message, through the descriptor sets that envoy-types
//! ships.
//!
//! Output uses the proto field names (`connect_timeout`, not `connectTimeout`), as Envoy's
//! `/config_dump` does; input accepts both spellings, as Envoy does.
//!
//! Two ways in: the free functions ([`to_json`], [`from_json`], [`any_to_json`],
//! [`bytes_to_json`]) use [`pool`], the whole descriptor set decoded once and kept for the life
//! of the process (about 47 MiB: fine for `legate-cp` and tests). A [`Codec`] is for processes
//! that must stay small (`legate-proxy`): it decodes the core set while it lives, falls back to
//! the whole set only for a conversion the core set cannot do, and gives the memory back when
//! dropped. Both give the same results.

use crate::descriptors;
use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use std::cell::OnceCell;
use std::sync::OnceLock;

/// The encoded `FileDescriptorSet` behind [`pool`] (for gRPC server reflection).
pub fn descriptor_set_bytes() -> &'static [u8] {
    descriptors::full_set_bytes()
}

/// The descriptor pool of every Envoy, xDS and well-known type, decoded on first use and kept
/// for the life of the process (about 47 MiB of heap; a proxy uses a [`Codec`] instead).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    descriptors::note_full_set_use();
    // Embedded at build time from envoy-types: failing here is a build defect.
    POOL.get_or_init(|| {
        DescriptorPool::decode(descriptors::full_set_bytes())
            .expect("envoy-types descriptor set decodes")
    })
}

/// Converts with the core descriptor set while it lives, falling back to the whole set for a
/// conversion the core set cannot do (a type outside it, typically inside an `Any`); dropping
/// it frees both and returns the memory to the operating system.
///
/// Results are those of the free functions: the core set holds the same files byte for byte,
/// so a conversion that succeeds with it succeeds identically with the whole set, and one that
/// fails with it is redone with the whole set (an error is the whole set's error). Hold one
/// codec for a batch of conversions (a bootstrap, one `/config_dump`), not for the life of
/// the process.
pub struct Codec {
    core: DescriptorPool,
    full: OnceCell<DescriptorPool>,
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

impl Codec {
    /// Decodes the core set (about 25 ms, 16 MiB until the codec is dropped).
    pub fn new() -> Codec {
        Codec {
            core: descriptors::decode_core(),
            full: OnceCell::new(),
        }
    }

    /// Whether this codec had to decode the whole set.
    pub fn used_full_set(&self) -> bool {
        self.full.get().is_some()
    }

    fn full(&self) -> &DescriptorPool {
        self.full.get_or_init(descriptors::decode_full)
    }

    fn convert<T>(
        &self,
        f: impl Fn(&DescriptorPool) -> Result<T, JsonError>,
    ) -> Result<T, JsonError> {
        f(&self.core).or_else(|_| f(self.full()))
    }

    /// The descriptor of a message type, from the core set or else the whole set.
    pub fn message_by_name(&self, name: &str) -> Option<MessageDescriptor> {
        self.core
            .get_message_by_name(name)
            .or_else(|| self.full().get_message_by_name(name))
    }

    /// [`bytes_to_json`] through this codec.
    pub fn bytes_to_json(
        &self,
        message_name: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, JsonError> {
        self.convert(|pool| bytes_to_json_in(pool, message_name, bytes))
    }

    /// [`any_to_json`] through this codec.
    pub fn any_to_json(&self, any: &Any) -> Result<serde_json::Value, JsonError> {
        self.convert(|pool| any_to_json_in(pool, any))
    }

    /// [`to_json`] through this codec.
    pub fn to_json<M: prost::Message + prost::Name>(
        &self,
        message: &M,
    ) -> Result<serde_json::Value, JsonError> {
        let bytes = message.encode_to_vec();
        self.convert(|pool| bytes_to_json_in(pool, &M::full_name(), &bytes))
    }

    /// [`from_json`] through this codec.
    pub fn from_json<M: prost::Message + prost::Name + Default>(
        &self,
        value: &serde_json::Value,
    ) -> Result<M, JsonError> {
        self.convert(|pool| from_json_in(pool, value))
    }
}

impl Drop for Codec {
    fn drop(&mut self) {
        // Free the pools before trimming (fields are only dropped after this function).
        self.core = DescriptorPool::new();
        self.full.take();
        descriptors::release_free_memory();
    }
}

/// Why a JSON conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The message type is not in the descriptor set.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// Protobuf bytes did not decode.
    #[error("cannot decode {0}: {1}")]
    Decode(String, prost::DecodeError),
    /// JSON did not match the message schema.
    #[error("{0}")]
    Json(String),
}

fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
}

/// Encodes protobuf bytes of `message_name` as Envoy JSON.
pub fn bytes_to_json(message_name: &str, bytes: &[u8]) -> Result<serde_json::Value, JsonError> {
    bytes_to_json_in(pool(), message_name, bytes)
}

/// Encodes an `Any` as Envoy JSON, with its `@type`.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
    any_to_json_in(pool(), any)
}

/// Encodes a typed message as Envoy JSON.
pub fn to_json<M: prost::Message + prost::Name>(
    message: &M,
) -> Result<serde_json::Value, JsonError> {
    bytes_to_json(&M::full_name(), &message.encode_to_vec())
}

/// Decodes Envoy JSON into a typed message; the error names the offending field.
pub fn from_json<M: prost::Message + prost::Name + Default>(
    value: &serde_json::Value,
) -> Result<M, JsonError> {
    from_json_in(pool(), value)
}

fn bytes_to_json_in(
    pool: &DescriptorPool,
    message_name: &str,
    bytes: &[u8],
) -> Result<serde_json::Value, JsonError> {
    let desc = pool
        .get_message_by_name(message_name)
        .ok_or_else(|| JsonError::UnknownType(message_name.to_string()))?;
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|e| JsonError::Decode(message_name.to_string(), e))?;
    msg.serialize_with_options(serde_json::value::Serializer, &options())
        .map_err(|e| JsonError::Json(e.to_string()))
}

fn any_to_json_in(pool: &DescriptorPool, any: &Any) -> Result<serde_json::Value, JsonError> {
    let name = crate::type_url::message_name(&any.type_url);
    let mut value = bytes_to_json_in(pool, name, &any.value)?;
    if let serde_json::Value::Object(map) = &mut value {
        let mut with_type = serde_json::Map::new();
        with_type.insert(
            "@type".into(),
            serde_json::Value::String(any.type_url.clone()),
        );
        with_type.extend(std::mem::take(map));
        *map = with_type;
    }
    Ok(value)
}

fn from_json_in<M: prost::Message + prost::Name + Default>(
    pool: &DescriptorPool,
    value: &serde_json::Value,
) -> Result<M, JsonError> {
    let name = M::full_name();
    let desc = pool
        .get_message_by_name(&name)
        .ok_or_else(|| JsonError::UnknownType(name.clone()))?;
    let dynamic =
        DynamicMessage::deserialize(desc, value).map_err(|e| JsonError::Json(e.to_string()))?;
    M::decode(prost::Message::encode_to_vec(&dynamic).as_slice())
        .map_err(|e| JsonError::Decode(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf::Duration;

    #[test]
    fn cluster_json_uses_proto_names_and_round_trips() {
        let c = Cluster {
            name: "payments".into(),
            connect_timeout: Some(Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = to_json(&c).expect("to json");
        assert_eq!(json["name"], "payments");
        assert_eq!(json["connect_timeout"], "1s");
        let back: Cluster = from_json(&json).expect("from json");
        assert_eq!(back, c);
        let any = crate::any::pack(&c);
        let j = any_to_json(&any).expect("any");
        assert_eq!(j["@type"], crate::type_url::CLUSTER);
    }

    /// A listener with a filter outside the core set (TCP proxy) inside an `Any`.
    fn tcp_proxy_listener() -> serde_json::Value {
        serde_json::json!({
            "name": "l",
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "x", "cluster": "c"}}]}]
        })
    }

    #[test]
    fn codec_converts_core_types_without_the_whole_set() {
        use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
        let before = crate::descriptors::full_set_uses_on_this_thread();
        let codec = Codec::new();
        let cluster = serde_json::json!({
            "name": "payments", "connect_timeout": "1s", "type": "EDS",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
        });
        let typed: Cluster = codec.from_json(&cluster).expect("from json");
        assert_eq!(codec.to_json(&typed).expect("to json"), cluster);
        let any = crate::any::pack(&typed);
        let through_codec = codec.any_to_json(&any).expect("any");
        assert!(
            codec
                .message_by_name("envoy.config.route.v3.RouteConfiguration")
                .is_some()
        );
        assert!(!codec.used_full_set());
        drop(codec);
        assert_eq!(crate::descriptors::full_set_uses_on_this_thread(), before);
        // The same result as the whole set.
        assert_eq!(through_codec, any_to_json(&any).expect("any, whole set"));
        // An error is redone with the whole set (so it is the whole set's error).
        let codec = Codec::new();
        let err = codec
            .from_json::<Bootstrap>(&serde_json::json!({"statc_resources": {}}))
            .expect_err("unknown field");
        assert!(err.to_string().contains("statc_resources"), "{err}");
        assert!(codec.used_full_set());
    }

    #[test]
    fn codec_falls_back_to_the_whole_set_for_other_types() {
        use envoy_types::pb::envoy::config::listener::v3::Listener;
        let codec = Codec::new();
        let value = tcp_proxy_listener();
        let typed: Listener = codec.from_json(&value).expect("from json");
        assert!(codec.used_full_set());
        assert_eq!(typed, from_json::<Listener>(&value).expect("whole set"));
        let codec = Codec::new();
        assert_eq!(codec.to_json(&typed).expect("to json"), value);
        assert!(codec.used_full_set());
        assert!(
            Codec::new()
                .message_by_name("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy")
                .is_some()
        );
        let err = Codec::new()
            .from_json::<Listener>(
                &serde_json::json!({"name": "l", "filter_chains": [{"filters": [
                {"name": "x", "typed_config": {"@type": "type.googleapis.com/no.Such"}}]}]}),
            )
            .expect_err("unknown type");
        assert!(err.to_string().contains("no.Such"), "{err}");
    }

    #[test]
    fn bad_field_is_named() {
        let err = from_json::<Cluster>(&serde_json::json!({"name": "x", "conect_timeout": "1s"}))
            .expect_err("unknown field");
        assert!(err.to_string().contains("conect_timeout"), "{err}");
    }
}
