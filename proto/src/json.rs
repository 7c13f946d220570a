//! Envoy's JSON mapping for any Envoy message, through the descriptor set that envoy-types ships.
//!
//! Output uses the proto field names (`connect_timeout`, not `connectTimeout`), as Envoy's
//! `/config_dump` does; input accepts both spellings, as Envoy does.

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use std::sync::OnceLock;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// The encoded `FileDescriptorSet` behind [`pool`] (for gRPC server reflection).
pub fn descriptor_set_bytes() -> &'static [u8] {
    DESCRIPTORS
}

/// The descriptor pool of every Envoy, xDS and well-known type (decoded once).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes are embedded at build time from envoy-types; failing here is a build defect.
        DescriptorPool::decode(DESCRIPTORS).expect("envoy-types descriptor set decodes")
    })
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
    let desc = pool()
        .get_message_by_name(message_name)
        .ok_or_else(|| JsonError::UnknownType(message_name.to_string()))?;
    let msg = DynamicMessage::decode(desc, bytes)
        .map_err(|e| JsonError::Decode(message_name.to_string(), e))?;
    msg.serialize_with_options(serde_json::value::Serializer, &options())
        .map_err(|e| JsonError::Json(e.to_string()))
}

/// Encodes an `Any` as Envoy JSON, with its `@type`.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
    let name = crate::type_url::message_name(&any.type_url);
    let mut value = bytes_to_json(name, &any.value)?;
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
    let name = M::full_name();
    let desc = pool()
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

    #[test]
    fn bad_field_is_named() {
        let err = from_json::<Cluster>(&serde_json::json!({"name": "x", "conect_timeout": "1s"}))
            .expect_err("unknown field");
        assert!(err.to_string().contains("conect_timeout"), "{err}");
    }
}
