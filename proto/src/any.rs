//! Packing Envoy messages into `google.protobuf.Any` and back.

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// Packs a message into an `Any` with the `type.googleapis.com/` prefix.
pub fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Why an `Any` could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The `Any` holds another type.
    #[error("expected {expected}, got {actual}")]
    WrongType {
        /// The type URL we wanted.
        expected: String,
        /// The type URL found.
        actual: String,
    },
    /// The bytes do not decode as that message.
    #[error("cannot decode {type_url}: {source}")]
    Decode {
        /// The type URL.
        type_url: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
}

/// Unpacks an `Any` into `M`, checking the type URL.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Result<M, UnpackError> {
    let expected = M::type_url();
    if any.type_url != expected {
        return Err(UnpackError::WrongType {
            expected,
            actual: any.type_url.clone(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|source| UnpackError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::listener::v3::Listener;

    #[test]
    fn round_trip_and_wrong_type() {
        let c = Cluster {
            name: "payments".into(),
            ..Default::default()
        };
        let any = pack(&c);
        assert_eq!(any.type_url, crate::type_url::CLUSTER);
        let back: Cluster = unpack(&any).expect("unpack");
        assert_eq!(back.name, "payments");
        let err = unpack::<Listener>(&any).expect_err("wrong type");
        assert!(
            err.to_string()
                .contains("expected type.googleapis.com/envoy.config.listener.v3.Listener")
        );
    }
}
