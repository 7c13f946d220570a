//! Validated proxy configuration converted from Envoy resources.
//!
//! [`types`] holds what the request path reads; the converters here turn Envoy v3 resources
//! into those types with Envoy's defaults resolved, or fail with a [`ConfigError`] naming the
//! resource and the field (the NACK message):
//!
//! - [`cluster()`]: `Cluster` → [`ClusterConfig`];
//! - [`load_assignment()`]: `ClusterLoadAssignment` → [`EndpointConfig`]s;
//! - [`listener()`]: `Listener` → [`ListenerConfig`];
//! - [`route_table()`]: `RouteConfiguration` → [`RouteTable`], with [`RouteTable::select`];
//! - [`secret()`]: an SDS `Secret` → [`SecretConfig`] (the cluster's `UpstreamTlsContext`
//!   becomes [`ClusterConfig::tls`]).

pub mod types;
pub use types::*;

mod cluster;
mod endpoint;
mod error;
mod listener;
mod matcher;
mod route;
mod tls;

pub use cluster::{HTTP_PROTOCOL_OPTIONS, cluster};
pub use endpoint::load_assignment;
pub use error::ConfigError;
pub use listener::listener;
pub(crate) use route::retry_on;
pub use route::route_table;
pub use tls::{SecretConfig, dns_name_match, secret};
