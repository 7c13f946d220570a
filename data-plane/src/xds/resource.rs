//! Reading resources out of discovery responses: names, type checks and the `Resource` wrapper.
//!
//! Error strings returned here become NACK messages, so they name the response type and the
//! resource (by name, or by index when the name cannot be read).

use legate_proto::pb::envoy::service::discovery::v3::Resource;
use legate_proto::pb::google::protobuf::Any;
use legate_proto::type_url::{self, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// Type URL of `envoy.service.discovery.v3.Resource`, which a SotW response may use to wrap a
/// resource (for a TTL, say).
pub const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// The first field of every resource type this client consumes: `Cluster.name`,
/// `ClusterLoadAssignment.cluster_name`, `Listener.name`, `RouteConfiguration.name` and
/// `Secret.name` are all `string name = 1`. Decoding only that field skips the rest of the
/// message without building it (prost still checks the wire format of what it skips).
#[derive(Clone, PartialEq, prost::Message)]
struct NameField {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name of a resource, decoded from the resource itself: `Cluster.name`,
/// `ClusterLoadAssignment.cluster_name`, `Listener.name`, `RouteConfiguration.name` or
/// `Secret.name`.
///
/// Errors (a type other than these five, bytes that do not decode, an empty name) are
/// descriptions suitable for a NACK message.
pub fn resource_name(any: &Any) -> Result<String, String> {
    match any.type_url.as_str() {
        CLUSTER | ENDPOINT | LISTENER | ROUTE | SECRET => {}
        other => return Err(format!("has unsupported type {other:?}")),
    }
    let decoded = <NameField as prost::Message>::decode(any.value.as_slice())
        .map_err(|e| format!("does not decode as {}: {e}", any.type_url))?;
    if decoded.name.is_empty() {
        return Err("has an empty name".to_string());
    }
    Ok(decoded.name)
}

/// Takes the resource at `index` of a SotW response of type `expected`: unwraps a `Resource`
/// wrapper, checks the type and reads the name.
pub(crate) fn sotw_resource(
    expected: &str,
    index: usize,
    any: Any,
) -> Result<(String, Any), String> {
    let what = type_url::short_name(expected);
    let any = if any.type_url == RESOURCE_WRAPPER {
        let wrapper: Resource = legate_proto::any::unpack(&any)
            .map_err(|e| format!("{what} response: resource [{index}]: {e}"))?;
        match wrapper.resource {
            Some(inner) => inner,
            None => {
                return Err(format!(
                    "{what} response: resource [{index}] ({:?}) is a Resource wrapper without a resource",
                    wrapper.name
                ));
            }
        }
    } else {
        any
    };
    if any.type_url != expected {
        return Err(format!(
            "{what} response: resource [{index}] has type {}, expected {expected}",
            any.type_url
        ));
    }
    let name =
        resource_name(&any).map_err(|e| format!("{what} response: resource [{index}] {e}"))?;
    Ok((name, any))
}

/// Checks one resource of a delta response of type `expected`: present, of that type, and
/// carrying the name the response gives it.
pub(crate) fn delta_resource(
    expected: &str,
    resource: Resource,
) -> Result<(String, String, Any), String> {
    let what = type_url::short_name(expected);
    let name = resource.name;
    if name.is_empty() {
        return Err(format!("{what} response: a resource has no name"));
    }
    let Some(any) = resource.resource else {
        return Err(format!("{what} response: resource {name:?} has no body"));
    };
    if any.type_url != expected {
        return Err(format!(
            "{what} response: resource {name:?} has type {}, expected {expected}",
            any.type_url
        ));
    }
    let inner =
        resource_name(&any).map_err(|e| format!("{what} response: resource {name:?} {e}"))?;
    if inner != name {
        return Err(format!(
            "{what} response: resource {name:?} carries a {} named {inner:?}",
            type_url::message_name(expected)
        ));
    }
    Ok((name, resource.version, any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_proto::any::pack;
    use legate_proto::pb::envoy::config::cluster::v3::Cluster;
    use legate_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use legate_proto::pb::envoy::config::listener::v3::Listener;
    use legate_proto::pb::envoy::config::route::v3::RouteConfiguration;
    use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

    #[test]
    fn names_of_the_five_types() {
        let cluster = Cluster {
            name: "payments".into(),
            connect_timeout: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(resource_name(&pack(&cluster)).as_deref(), Ok("payments"));
        let cla = ClusterLoadAssignment {
            cluster_name: "inventory".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(&pack(&cla)).as_deref(), Ok("inventory"));
        let listener = Listener {
            name: "checkout".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(&pack(&listener)).as_deref(), Ok("checkout"));
        let route = RouteConfiguration {
            name: "r".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(&pack(&route)).as_deref(), Ok("r"));
        let secret = Secret {
            name: "s".into(),
            ..Default::default()
        };
        assert_eq!(resource_name(&pack(&secret)).as_deref(), Ok("s"));
    }

    #[test]
    fn bad_resources_are_described() {
        let garbage = Any {
            type_url: CLUSTER.into(),
            value: vec![0x0a, 0xff],
        };
        assert!(
            resource_name(&garbage)
                .unwrap_err()
                .contains("does not decode")
        );
        let unnamed = pack(&Cluster::default());
        assert_eq!(resource_name(&unnamed).unwrap_err(), "has an empty name");
        let listener = pack(&Listener {
            name: "l".into(),
            ..Default::default()
        });
        let err = sotw_resource(CLUSTER, 3, listener).unwrap_err();
        assert!(
            err.starts_with("clusters response: resource [3] has type"),
            "{err}"
        );
    }

    #[test]
    fn wrapped_sotw_resource_is_unwrapped() {
        let cluster = pack(&Cluster {
            name: "payments".into(),
            ..Default::default()
        });
        let wrapped = pack(&Resource {
            name: "payments".into(),
            resource: Some(cluster.clone()),
            ..Default::default()
        });
        let (name, any) = sotw_resource(CLUSTER, 0, wrapped).expect("unwraps");
        assert_eq!(name, "payments");
        assert_eq!(any, cluster);
    }

    #[test]
    fn delta_resource_name_must_match_body() {
        let cluster = pack(&Cluster {
            name: "payments".into(),
            ..Default::default()
        });
        let r = Resource {
            name: "orders".into(),
            version: "1".into(),
            resource: Some(cluster),
            ..Default::default()
        };
        let err = delta_resource(CLUSTER, r).unwrap_err();
        assert!(
            err.contains("\"orders\"") && err.contains("\"payments\""),
            "{err}"
        );
    }
}
