//! Ambassador → `Listener` with an HttpConnectionManager (RDS over ADS) and the router filter.

use super::util::{ads_config_source, socket_addr};
use crate::model::Ambassador;
use legate_proto::any::pack;
use legate_proto::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use legate_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use legate_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier, http_filter,
};

/// Envoy's well-known name of the HTTP connection manager network filter.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// Envoy's well-known name of the router HTTP filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// The listener the application calls. `codec_type: AUTO` accepts HTTP/1.1 and h2c; the stat
/// prefix is the ambassador name, so Envoy's stats read `http.<ambassador>.downstream_rq_*`.
pub fn listener(amb: &Ambassador) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: amb.name.clone(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: amb.name.clone(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: amb.name.clone(),
        address: Some(socket_addr(amb.listen)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HCM_FILTER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
