//! Small conversions shared by the translators.

use crate::model::Host;
use legate_proto::pb::envoy::config::core::v3::Address;
use legate_proto::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use legate_proto::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use std::net::SocketAddr;
use std::time::Duration;

/// `google.protobuf.Duration` from a std duration.
pub fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `google.protobuf.UInt32Value`.
pub fn u32_value(value: u32) -> UInt32Value {
    UInt32Value { value }
}

/// A config source that says "over the ADS stream this resource arrived on".
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A TCP socket address for a host (IP or DNS name) and port.
pub fn socket_address(host: &Host, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A TCP socket address from a std socket address.
pub fn socket_addr(addr: SocketAddr) -> Address {
    socket_address(&Host::Ip(addr.ip()), addr.port())
}
