//! `Listener` → [`ListenerConfig`]: one plaintext filter chain whose only network filter is the
//! HTTP connection manager, whose only (enabled) HTTP filter is the router.

use super::cluster::raw_buffer_only;
use super::endpoint::ip_socket_address;
use super::error::{
    ConfigError, FieldError, Result, Under, ads_source, reject, timeout_or, unsupported,
};
use super::route::convert_table;
use super::types::{
    CidrRange, Codec, ConnectionLimits, DEFAULT_CONNECTION_IDLE_TIMEOUT, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_HEADERS_COUNT, DEFAULT_MAX_REQUEST_HEADERS_BYTES, HeaderOptions,
    InternalAddressConfig, ListenerConfig, RouteSource, ServerHeader, StripPort, UnderscoresAction,
};
use legate_proto::any::unpack;
use legate_proto::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, HttpProtocolOptions, http_protocol_options::HeadersWithUnderscoresAction,
};
use legate_proto::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, filter,
};
use legate_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use legate_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager as hcm_pb, http_filter,
};
use prost::Name;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's default HCM `stream_idle_timeout`.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Envoy's default `server_name`.
const DEFAULT_SERVER_NAME: &str = "envoy";

/// Converts an LDS `Listener`.
pub fn listener(l: &Listener) -> std::result::Result<ListenerConfig, ConfigError> {
    convert(l).map_err(|e| e.into_config("listener", &l.name))
}

fn convert(l: &Listener) -> Result<ListenerConfig> {
    if l.name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if l.api_listener.is_some() {
        return Err(FieldError::new(
            "api_listener",
            "not supported (api_listener is for gRPC clients)",
        ));
    }
    let address = ip_socket_address(l.address.as_ref()).under("address")?;
    unimplemented_fields(l)?;
    let (field, chain) = match (l.filter_chains.as_slice(), &l.default_filter_chain) {
        ([chain], None) => ("filter_chains[0]", chain),
        ([], Some(chain)) => ("default_filter_chain", chain),
        ([], None) => {
            return Err(FieldError::new(
                "filter_chains",
                "exactly one filter chain is required",
            ));
        }
        ([_], Some(_)) => {
            return Err(FieldError::new(
                "default_filter_chain",
                "not supported together with filter_chains (one filter chain only)",
            ));
        }
        (chains, _) => {
            return Err(FieldError::new(
                "filter_chains",
                format!(
                    "exactly one filter chain is supported, got {}",
                    chains.len()
                ),
            ));
        }
    };
    let hcm = filter_chain(chain).under(field)?;
    Ok(ListenerConfig {
        name: l.name.clone(),
        address,
        stat_prefix: hcm.stat_prefix,
        listener_stat_prefix: l.stat_prefix.clone(),
        routes: hcm.routes,
        codec: hcm.codec,
        stream_idle_timeout: hcm.stream_idle_timeout,
        request_timeout: hcm.request_timeout,
        request_headers_timeout: hcm.request_headers_timeout,
        max_stream_duration: hcm.max_stream_duration,
        connection: hcm.connection,
        server_name: hcm.server_name,
        headers: hcm.headers,
        internal_address: hcm.internal_address,
    })
}

/// Behaviour-changing listener fields we do not implement.
fn unimplemented_fields(l: &Listener) -> Result<()> {
    if !l.listener_filters.is_empty() {
        let names: Vec<&str> = l.listener_filters.iter().map(|f| f.name.as_str()).collect();
        return Err(FieldError::new(
            "listener_filters",
            format!("not supported ({})", names.join(", ")),
        ));
    }
    reject(!l.additional_addresses.is_empty(), "additional_addresses")?;
    reject(l.fcds_config.is_some(), "fcds_config")?;
    reject(l.filter_chain_matcher.is_some(), "filter_chain_matcher")?;
    reject(
        l.use_original_dst.is_some_and(|b| b.value),
        "use_original_dst",
    )?;
    reject(
        l.per_connection_buffer_high_watermark_timeout
            .as_ref()
            .is_some_and(|d| d.seconds != 0 || d.nanos != 0),
        "per_connection_buffer_high_watermark_timeout",
    )?;
    reject(l.transparent.is_some_and(|b| b.value), "transparent")?;
    reject(l.freebind.is_some_and(|b| b.value), "freebind")?;
    reject(!l.socket_options.is_empty(), "socket_options")?;
    reject(l.udp_listener_config.is_some(), "udp_listener_config")?;
    reject(l.bind_to_port.is_some_and(|b| !b.value), "bind_to_port")?;
    reject(l.enable_mptcp, "enable_mptcp")?;
    reject(l.tcp_keepalive.is_some(), "tcp_keepalive")?;
    reject(l.listener_specifier.is_some(), "internal_listener")?;
    reject(!l.access_log.is_empty(), "access_log")?;
    Ok(())
}

/// What the HTTP connection manager contributes to the listener.
struct Hcm {
    stat_prefix: String,
    routes: RouteSource,
    codec: Codec,
    stream_idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    request_headers_timeout: Option<Duration>,
    max_stream_duration: Option<Duration>,
    connection: ConnectionLimits,
    server_name: String,
    headers: HeaderOptions,
    internal_address: Option<InternalAddressConfig>,
}

fn filter_chain(chain: &FilterChain) -> Result<Hcm> {
    reject(
        chain
            .filter_chain_match
            .as_ref()
            .is_some_and(|m| *m != FilterChainMatch::default()),
        "filter_chain_match",
    )?;
    #[allow(deprecated)]
    let proxy_proto = chain.use_proxy_proto.is_some_and(|b| b.value);
    reject(proxy_proto, "use_proxy_proto")?;
    if let Some(ts) = &chain.transport_socket {
        raw_buffer_only("transport_socket", ts)?;
    }
    if chain.filters.is_empty() {
        return Err(FieldError::new(
            "filters",
            "an http_connection_manager filter is required",
        ));
    }
    let mut hcm = None;
    for (i, f) in chain.filters.iter().enumerate() {
        let field = format!("filters[{i}]");
        let any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(unsupported(&format!("{field}.config_discovery")));
            }
            None => {
                return Err(FieldError::new(
                    format!("{field}.typed_config"),
                    "required (HttpConnectionManager)",
                ));
            }
        };
        if any.type_url != HttpConnectionManager::type_url() {
            return Err(FieldError::new(
                format!("{field}.typed_config"),
                format!("expected HttpConnectionManager, got {}", any.type_url),
            ));
        }
        if hcm.is_none() {
            let config: HttpConnectionManager = unpack(any)
                .map_err(|e| FieldError::new(format!("{field}.typed_config"), e.to_string()))?;
            hcm = Some((field, config));
        }
    }
    if chain.filters.len() > 1 {
        return Err(FieldError::new(
            "filters",
            "exactly one network filter (http_connection_manager) is supported",
        ));
    }
    match hcm {
        Some((field, config)) => {
            http_connection_manager(&config).under(&format!("{field}.typed_config"))
        }
        None => Err(FieldError::new(
            "filters",
            "an http_connection_manager filter is required",
        )),
    }
}

fn http_connection_manager(h: &HttpConnectionManager) -> Result<Hcm> {
    if h.stat_prefix.is_empty() {
        return Err(FieldError::new("stat_prefix", "must not be empty"));
    }
    let codec = match hcm_pb::CodecType::try_from(h.codec_type) {
        Ok(hcm_pb::CodecType::Auto) => Codec::Auto,
        Ok(hcm_pb::CodecType::Http1) => Codec::Http1,
        Ok(hcm_pb::CodecType::Http2) => Codec::Http2,
        Ok(hcm_pb::CodecType::Http3) => {
            return Err(FieldError::new("codec_type", "HTTP3 is not supported"));
        }
        Err(_) => {
            return Err(FieldError::new(
                "codec_type",
                format!("unknown codec type {}", h.codec_type),
            ));
        }
    };
    let routes = match &h.route_specifier {
        Some(hcm_pb::RouteSpecifier::Rds(rds)) => {
            ads_source("rds.config_source", rds.config_source.as_ref(), false)?;
            if rds.route_config_name.is_empty() {
                return Err(FieldError::new(
                    "rds.route_config_name",
                    "must not be empty",
                ));
            }
            RouteSource::Rds(rds.route_config_name.clone())
        }
        Some(hcm_pb::RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(convert_table(rc).under("route_config")?))
        }
        Some(hcm_pb::RouteSpecifier::ScopedRoutes(_)) => {
            return Err(unsupported("scoped_routes"));
        }
        None => {
            return Err(FieldError::new(
                "route_specifier",
                "rds or route_config is required",
            ));
        }
    };
    http_filters(&h.http_filters)?;
    unimplemented_hcm_fields(h)?;
    let default_options = HttpProtocolOptions::default();
    let options = h
        .common_http_protocol_options
        .as_ref()
        .unwrap_or(&default_options);
    let (mut connection, max_stream_duration) =
        common_http_protocol_options(options).under("common_http_protocol_options")?;
    connection.drain_timeout = timeout_or(
        "drain_timeout",
        h.drain_timeout.as_ref(),
        Some(DEFAULT_DRAIN_TIMEOUT),
    )?
    .unwrap_or(Duration::ZERO);
    if let Some(kb) = h.max_request_headers_kb {
        if !(1..=8192).contains(&kb.value) {
            return Err(FieldError::new(
                "max_request_headers_kb",
                format!("must be between 1 and 8192, got {}", kb.value),
            ));
        }
        connection.max_request_headers_bytes = kb.value as usize * 1024;
    }
    Ok(Hcm {
        stat_prefix: h.stat_prefix.clone(),
        routes,
        codec,
        stream_idle_timeout: timeout_or(
            "stream_idle_timeout",
            h.stream_idle_timeout.as_ref(),
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        )?,
        request_timeout: timeout_or("request_timeout", h.request_timeout.as_ref(), None)?,
        request_headers_timeout: timeout_or(
            "request_headers_timeout",
            h.request_headers_timeout.as_ref(),
            None,
        )?,
        max_stream_duration,
        connection,
        server_name: if h.server_name.is_empty() {
            DEFAULT_SERVER_NAME.to_string()
        } else {
            h.server_name.clone()
        },
        headers: header_options(h)?,
        internal_address: h
            .internal_address_config
            .as_ref()
            .map(internal_address_config)
            .transpose()
            .under("internal_address_config")?,
    })
}

/// The connection manager's header options (`HeaderOptions`).
fn header_options(h: &HttpConnectionManager) -> Result<HeaderOptions> {
    if !h.via.is_empty() && http::HeaderValue::from_str(&h.via).is_err() {
        return Err(FieldError::new(
            "via",
            format!("`{}` is not a valid header value", h.via.escape_debug()),
        ));
    }
    let server_header =
        match hcm_pb::ServerHeaderTransformation::try_from(h.server_header_transformation) {
            Ok(hcm_pb::ServerHeaderTransformation::Overwrite) => ServerHeader::Overwrite,
            Ok(hcm_pb::ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
            Ok(hcm_pb::ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
            Err(_) => {
                return Err(FieldError::new(
                    "server_header_transformation",
                    format!("unknown value {}", h.server_header_transformation),
                ));
            }
        };
    let strip_port = match h.strip_port_mode {
        Some(hcm_pb::StripPortMode::StripAnyHostPort(true)) => {
            if h.strip_matching_host_port {
                return Err(FieldError::new(
                    "strip_any_host_port",
                    "cannot be set together with strip_matching_host_port",
                ));
            }
            StripPort::Any
        }
        _ if h.strip_matching_host_port => StripPort::Matching,
        _ => StripPort::None,
    };
    Ok(HeaderOptions {
        generate_request_id: h.generate_request_id.is_none_or(|b| b.value),
        request_id_in_response: h.always_set_request_id_in_response,
        via: (!h.via.is_empty()).then(|| h.via.clone()),
        server_header,
        strip_trailing_host_dot: h.strip_trailing_host_dot,
        strip_port,
        add_user_agent: h.add_user_agent.is_some_and(|b| b.value),
    })
}

/// The connection manager's `common_http_protocol_options`: the connection's limits (its
/// `drain_timeout` is set by the caller) and `max_stream_duration`. A zero duration disables
/// its timer, as in Envoy.
fn common_http_protocol_options(
    o: &HttpProtocolOptions,
) -> Result<(ConnectionLimits, Option<Duration>)> {
    reject(
        o.max_connection_duration_jitter.is_some(),
        "max_connection_duration_jitter",
    )?;
    reject(
        o.max_response_headers_kb.is_some(),
        "max_response_headers_kb",
    )?;
    let max_headers = match o.max_headers_count {
        None => DEFAULT_MAX_HEADERS_COUNT,
        Some(v) if v.value >= 1 => v.value,
        Some(_) => {
            return Err(FieldError::new(
                "max_headers_count",
                "value must be greater than or equal to 1",
            ));
        }
    };
    let underscores =
        match HeadersWithUnderscoresAction::try_from(o.headers_with_underscores_action) {
            Ok(HeadersWithUnderscoresAction::Allow) => UnderscoresAction::Allow,
            Ok(HeadersWithUnderscoresAction::RejectRequest) => UnderscoresAction::RejectRequest,
            Ok(HeadersWithUnderscoresAction::DropHeader) => UnderscoresAction::DropHeader,
            Err(_) => {
                return Err(FieldError::new(
                    "headers_with_underscores_action",
                    format!("unknown action {}", o.headers_with_underscores_action),
                ));
            }
        };
    let connection = ConnectionLimits {
        idle_timeout: timeout_or(
            "idle_timeout",
            o.idle_timeout.as_ref(),
            Some(DEFAULT_CONNECTION_IDLE_TIMEOUT),
        )?,
        max_connection_duration: timeout_or(
            "max_connection_duration",
            o.max_connection_duration.as_ref(),
            None,
        )?,
        // 0 means "no limit" in Envoy.
        max_requests: o
            .max_requests_per_connection
            .map(|v| v.value)
            .filter(|v| *v > 0),
        drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        max_headers,
        max_request_headers_bytes: DEFAULT_MAX_REQUEST_HEADERS_BYTES,
        underscores,
    };
    let max_stream_duration =
        timeout_or("max_stream_duration", o.max_stream_duration.as_ref(), None)?;
    Ok((connection, max_stream_duration))
}

/// `internal_address_config`. `unix_sockets` is accepted and has no effect: it applies to a
/// downstream connection over a Unix socket, and the listener address is always IP.
fn internal_address_config(c: &hcm_pb::InternalAddressConfig) -> Result<InternalAddressConfig> {
    let cidr_ranges = c
        .cidr_ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("cidr_ranges[{i}]");
            let len = r.prefix_len.map_or(0, |l| l.value);
            r.address_prefix
                .parse::<std::net::IpAddr>()
                .ok()
                .and_then(|ip| CidrRange::new(ip, len))
                .ok_or_else(|| {
                    FieldError::new(
                        field,
                        format!(
                            "invalid ip/mask combo '{}/{len}' (format is <ip>/<# mask bits>)",
                            r.address_prefix
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(InternalAddressConfig { cidr_ranges })
}

/// The chain must end with the router; any other enabled filter is an error naming it.
/// Filters with `disabled: true` are skipped: only per-route config could enable them, and that
/// is rejected (`typed_per_filter_config`).
fn http_filters(filters: &[HttpFilter]) -> Result<()> {
    let Some(last) = filters.len().checked_sub(1) else {
        return Err(FieldError::new(
            "http_filters",
            "the router filter (envoy.filters.http.router) is required",
        ));
    };
    for (k, f) in filters.iter().enumerate() {
        let field = format!("http_filters[{k}]");
        let any = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
            Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(unsupported(&format!("{field}.config_discovery")));
            }
            None => None,
        };
        let is_router = any.is_some_and(|a| a.type_url == Router::type_url());
        if k == last {
            let Some(any) = any.filter(|_| is_router) else {
                return Err(FieldError::new(
                    field,
                    format!(
                        "the last HTTP filter must be the router ({}), got `{}`",
                        Router::full_name(),
                        describe(f)
                    ),
                ));
            };
            reject(f.disabled, &format!("{field}.disabled"))?;
            let router: Router = unpack(any)
                .map_err(|e| FieldError::new(format!("{field}.typed_config"), e.to_string()))?;
            router_options(&router).under(&format!("{field}.typed_config"))?;
        } else if is_router {
            return Err(FieldError::new(
                field,
                "the router must be the last HTTP filter",
            ));
        } else if !f.disabled {
            return Err(FieldError::new(
                field,
                format!("HTTP filter `{}` is not supported", describe(f)),
            ));
        }
    }
    Ok(())
}

/// A filter's name and type for messages.
fn describe(f: &HttpFilter) -> String {
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) if !f.name.is_empty() => {
            format!("{}` (`{}", f.name, any.type_url)
        }
        Some(http_filter::ConfigType::TypedConfig(any)) => any.type_url.clone(),
        _ => f.name.clone(),
    }
}

fn router_options(r: &Router) -> Result<()> {
    reject(!r.upstream_log.is_empty(), "upstream_log")?;
    reject(r.suppress_envoy_headers, "suppress_envoy_headers")?;
    reject(!r.strict_check_headers.is_empty(), "strict_check_headers")?;
    reject(r.respect_expected_rq_timeout, "respect_expected_rq_timeout")?;
    reject(!r.upstream_http_filters.is_empty(), "upstream_http_filters")
}

/// Behaviour-changing HCM fields we do not implement.
fn unimplemented_hcm_fields(h: &HttpConnectionManager) -> Result<()> {
    let bool_set =
        |b: Option<legate_proto::pb::google::protobuf::BoolValue>| b.is_some_and(|b| b.value);
    reject(h.tracing.is_some(), "tracing")?;
    reject(
        h.http_protocol_options
            .as_ref()
            .is_some_and(|o| *o != Http1ProtocolOptions::default()),
        "http_protocol_options",
    )?;
    reject(h.http3_protocol_options.is_some(), "http3_protocol_options")?;
    reject(
        h.scheme_header_transformation
            .as_ref()
            .is_some_and(|s| *s != Default::default()),
        "scheme_header_transformation",
    )?;
    reject(!h.access_log.is_empty(), "access_log")?;
    reject(bool_set(h.use_remote_address), "use_remote_address")?;
    reject(h.xff_num_trusted_hops != 0, "xff_num_trusted_hops")?;
    reject(
        !h.original_ip_detection_extensions.is_empty(),
        "original_ip_detection_extensions",
    )?;
    reject(
        !h.early_header_mutation_extensions.is_empty(),
        "early_header_mutation_extensions",
    )?;
    // `preserve_external_request_id` is accepted: without `use_remote_address` (NACKed) Envoy
    // keeps an external request's `x-request-id` either way.
    reject(
        h.forward_client_cert_details != hcm_pb::ForwardClientCertDetails::Sanitize as i32,
        "forward_client_cert_details",
    )?;
    reject(
        h.forward_client_cert_matcher.is_some(),
        "forward_client_cert_matcher",
    )?;
    reject(h.proxy_100_continue, "proxy_100_continue")?;
    reject(!h.upgrade_configs.is_empty(), "upgrade_configs")?;
    reject(bool_set(h.normalize_path), "normalize_path")?;
    reject(h.merge_slashes, "merge_slashes")?;
    reject(
        !matches!(
            hcm_pb::PathWithEscapedSlashesAction::try_from(h.path_with_escaped_slashes_action),
            Ok(
                hcm_pb::PathWithEscapedSlashesAction::ImplementationSpecificDefault
                    | hcm_pb::PathWithEscapedSlashesAction::KeepUnchanged
            )
        ),
        "path_with_escaped_slashes_action",
    )?;
    reject(h.request_id_extension.is_some(), "request_id_extension")?;
    reject(h.local_reply_config.is_some(), "local_reply_config")?;
    reject(
        h.path_normalization_options.is_some(),
        "path_normalization_options",
    )?;
    reject(h.proxy_status_config.is_some(), "proxy_status_config")?;
    reject(
        h.typed_header_validation_config.is_some(),
        "typed_header_validation_config",
    )?;
    reject(h.append_x_forwarded_port, "append_x_forwarded_port")?;
    reject(h.forward_proto_config.is_some(), "forward_proto_config")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_proto::any::pack;
    use legate_proto::json::from_json;
    use legate_proto::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, SocketAddress, address, config_source, socket_address,
    };
    use legate_proto::pb::envoy::config::listener::v3::Filter;
    use legate_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use serde_json::{Value, json};

    const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

    fn router() -> Value {
        json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}})
    }

    /// A listener as stock Envoy configs write it, with `hcm` merged into the HCM config.
    fn with_hcm(hcm: Value) -> Value {
        let mut config = json!({
            "@type": HCM_TYPE,
            "stat_prefix": "checkout",
            "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": "checkout"},
            "http_filters": [router()]
        });
        if let (Some(c), Some(extra)) = (config.as_object_mut(), hcm.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        json!({
            "name": "checkout",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": config}]}]
        })
    }

    fn parse(v: Value) -> Listener {
        from_json(&v).expect("valid Listener JSON")
    }

    fn ok(v: Value) -> ListenerConfig {
        listener(&parse(v)).expect("valid listener")
    }

    fn err(v: Value) -> ConfigError {
        listener(&parse(v)).expect_err("invalid listener")
    }

    const HCM_FIELD: &str = "filter_chains[0].filters[0].typed_config";

    #[test]
    fn defaults_resolved() {
        let l = ok(with_hcm(json!({})));
        assert_eq!(l.name, "checkout");
        assert_eq!(l.address, "127.0.0.1:10000".parse().unwrap());
        assert_eq!(l.stat_prefix, "checkout");
        assert!(matches!(&l.routes, RouteSource::Rds(n) if n == "checkout"));
        assert_eq!(l.codec, Codec::Auto);
        assert_eq!(l.stream_idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(l.request_timeout, None);
        assert_eq!(l.request_headers_timeout, None);
        assert_eq!(l.server_name, "envoy");
        assert_eq!(l.internal_address, None);

        let l = ok(with_hcm(json!({
            "codec_type": "HTTP2", "stream_idle_timeout": "0s", "request_timeout": "10s",
            "request_headers_timeout": "2s",
            "server_name": "legate", "http2_protocol_options": {"max_concurrent_streams": 10}
        })));
        assert_eq!(l.codec, Codec::Http2);
        assert_eq!(l.stream_idle_timeout, None, "0 disables");
        assert_eq!(l.request_timeout, Some(Duration::from_secs(10)));
        assert_eq!(l.request_headers_timeout, Some(Duration::from_secs(2)));
        assert_eq!(l.server_name, "legate");
        assert_eq!(
            ok(with_hcm(json!({"codec_type": "HTTP1"}))).codec,
            Codec::Http1
        );
    }

    #[test]
    fn as_legate_cp_builds_it() {
        // control-plane/src/translate/listener.rs, built in Rust.
        let ads = ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            ..Default::default()
        };
        let hcm = HttpConnectionManager {
            stat_prefix: "amb".into(),
            codec_type: hcm_pb::CodecType::Auto as i32,
            route_specifier: Some(hcm_pb::RouteSpecifier::Rds(Rds {
                config_source: Some(ads),
                route_config_name: "amb".into(),
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                    &Router::default(),
                ))),
                ..Default::default()
            }],
            ..Default::default()
        };
        let l = Listener {
            name: "amb".into(),
            address: Some(legate_proto::pb::envoy::config::core::v3::Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "::".into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = listener(&l).expect("valid");
        assert_eq!(c.address, "[::]:8080".parse().unwrap());
        assert!(matches!(&c.routes, RouteSource::Rds(n) if n == "amb"));
    }

    #[test]
    fn inline_route_config() {
        let l = ok(with_hcm(json!({
            "rds": null,
            "route_config": {"name": "local", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "payments"}}
            ]}]}
        })));
        let RouteSource::Inline(t) = &l.routes else {
            panic!("inline expected")
        };
        assert_eq!(t.name, "local");
        assert_eq!(t.virtual_hosts[0].routes.len(), 1);
        let e = err(with_hcm(json!({
            "rds": null,
            "route_config": {"name": "local", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "redirect": {"path_redirect": "/"}}
            ]}]}
        })));
        assert_eq!(
            e.field,
            format!("{HCM_FIELD}.route_config.virtual_hosts[0].routes[0].redirect")
        );
        assert_eq!(e.kind, "listener");
    }

    #[test]
    fn wrong_network_filter_is_named() {
        let e = err(json!({
            "name": "checkout",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp", "cluster": "c"
            }}]}]
        }));
        assert_eq!(
            e.to_string(),
            "listener `checkout`: filter_chains[0].filters[0].typed_config: expected HttpConnectionManager, got type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
        );
    }

    #[test]
    fn http_filters_must_be_the_router() {
        let e = err(with_hcm(json!({"http_filters": [
            {"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            router()
        ]})));
        assert_eq!(e.field, format!("{HCM_FIELD}.http_filters[0]"));
        assert!(e.message.contains("envoy.filters.http.cors"), "{e}");
        // A disabled filter is skipped.
        assert!(listener(&parse(with_hcm(json!({"http_filters": [
            {"name": "envoy.filters.http.cors", "disabled": true, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            router()
        ]})))).is_ok());
        let e = err(with_hcm(json!({"http_filters": []})));
        assert_eq!(e.field, format!("{HCM_FIELD}.http_filters"));
        let e = err(with_hcm(json!({"http_filters": [router(), router()]})));
        assert_eq!(e.field, format!("{HCM_FIELD}.http_filters[0]"));
        let e = err(with_hcm(json!({"http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE, "suppress_envoy_headers": true}}
        ]})));
        assert_eq!(
            e.field,
            format!("{HCM_FIELD}.http_filters[0].typed_config.suppress_envoy_headers")
        );
    }

    #[test]
    fn common_http_protocol_options_with_envoys_defaults() {
        let l = ok(with_hcm(json!({})));
        assert_eq!(l.connection, ConnectionLimits::default());
        assert_eq!(
            l.connection.idle_timeout,
            Some(Duration::from_secs(3600)),
            "1 h"
        );
        assert_eq!(l.connection.drain_timeout, Duration::from_secs(5));
        assert_eq!(l.connection.max_headers, 100);
        assert_eq!(l.max_stream_duration, None);
        let l = ok(with_hcm(json!({"drain_timeout": "2s",
            "common_http_protocol_options": {"idle_timeout": "0s",
            "max_connection_duration": "60s", "max_requests_per_connection": 0,
            "max_stream_duration": "10s", "max_headers_count": 7,
            "headers_with_underscores_action": "DROP_HEADER"}})));
        assert_eq!(l.connection.idle_timeout, None, "0 disables");
        assert_eq!(
            l.connection.max_connection_duration,
            Some(Duration::from_secs(60))
        );
        assert_eq!(l.connection.max_requests, None, "0: no limit");
        assert_eq!(l.connection.drain_timeout, Duration::from_secs(2));
        assert_eq!(l.connection.max_headers, 7);
        assert_eq!(l.connection.underscores, UnderscoresAction::DropHeader);
        assert_eq!(l.max_stream_duration, Some(Duration::from_secs(10)));
        let field =
            |options: Value| err(with_hcm(json!({"common_http_protocol_options": options}))).field;
        let under = format!("{HCM_FIELD}.common_http_protocol_options");
        assert_eq!(
            field(json!({"max_headers_count": 0})),
            format!("{under}.max_headers_count")
        );
        assert_eq!(
            field(json!({"max_response_headers_kb": 60})),
            format!("{under}.max_response_headers_kb")
        );
        assert_eq!(
            field(json!({"max_connection_duration_jitter": {"value": 10}})),
            format!("{under}.max_connection_duration_jitter")
        );
    }

    #[test]
    fn errors_name_fields() {
        let base = || with_hcm(json!({}));
        let mut v = base();
        v["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]);
        assert_eq!(err(v).field, "listener_filters");
        let mut v = base();
        v["filter_chains"][0]["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"}});
        let e = err(v);
        assert_eq!(
            e.to_string(),
            "listener `checkout`: filter_chains[0].transport_socket: TLS is not supported yet"
        );
        let mut v = base();
        v["api_listener"] = json!({});
        assert!(err(v).message.contains("gRPC clients"));
        let mut v = base();
        v["address"] = json!({"socket_address": {"address": "localhost", "port_value": 80}});
        assert_eq!(err(v).field, "address");
        let mut v = base();
        v["filter_chains"][0]["filter_chain_match"] = json!({"server_names": ["a"]});
        assert_eq!(err(v).field, "filter_chains[0].filter_chain_match");
        // An empty match is fine.
        let mut v = base();
        v["filter_chains"][0]["filter_chain_match"] = json!({});
        assert!(listener(&parse(v)).is_ok());
        let mut v = base();
        let chain = v["filter_chains"][0].clone();
        v["filter_chains"] = json!([chain.clone(), chain]);
        assert_eq!(err(v).field, "filter_chains");
        // default_filter_chain alone is accepted.
        let mut v = base();
        v["default_filter_chain"] = v["filter_chains"][0].clone();
        v["filter_chains"] = json!([]);
        assert!(listener(&parse(v)).is_ok());

        let hcm_err = |extra: Value| err(with_hcm(extra)).field;
        assert_eq!(
            hcm_err(json!({"codec_type": "HTTP3"})),
            format!("{HCM_FIELD}.codec_type")
        );
        assert_eq!(
            hcm_err(json!({"stat_prefix": ""})),
            format!("{HCM_FIELD}.stat_prefix")
        );
        assert_eq!(
            hcm_err(
                json!({"rds": {"config_source": {"path_config_source": {"path": "/x"}}, "route_config_name": "r"}})
            ),
            format!("{HCM_FIELD}.rds.config_source")
        );
        assert_eq!(
            hcm_err(json!({"use_remote_address": true})),
            format!("{HCM_FIELD}.use_remote_address")
        );
        assert_eq!(
            hcm_err(json!({"upgrade_configs": [{"upgrade_type": "websocket"}]})),
            format!("{HCM_FIELD}.upgrade_configs")
        );
        assert_eq!(
            hcm_err(json!({"tracing": {}})),
            format!("{HCM_FIELD}.tracing")
        );
        assert_eq!(
            hcm_err(json!({"rds": null, "scoped_routes": {"name": "s"}})),
            format!("{HCM_FIELD}.scoped_routes")
        );
    }

    #[test]
    fn internal_address_config_parsed() {
        let l = ok(with_hcm(json!({"internal_address_config": {}})));
        assert_eq!(l.internal_address, Some(InternalAddressConfig::default()));
        let l = ok(with_hcm(json!({"internal_address_config": {
            "unix_sockets": true,
            "cidr_ranges": [
                {"address_prefix": "10.1.2.3", "prefix_len": 8},
                {"address_prefix": "fd00::", "prefix_len": 8},
                {"address_prefix": "8.8.8.8"}
            ]
        }})));
        let ranges = l.internal_address.expect("configured").cidr_ranges;
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(ranges[0], CidrRange::new(ip("10.0.0.0"), 8).unwrap());
        assert!(ranges[0].contains(ip("10.255.0.1")) && !ranges[0].contains(ip("11.0.0.1")));
        assert!(ranges[1].contains(ip("fd12::1")) && !ranges[1].contains(ip("fc00::1")));
        assert!(
            ranges[2].contains(ip("1.2.3.4")),
            "prefix_len defaults to 0"
        );
        assert!(!ranges[2].contains(ip("::1")), "no family crossing");
        for bad in [
            json!({"address_prefix": "10.0.0.0", "prefix_len": 33}),
            json!({"address_prefix": "fd00::", "prefix_len": 129}),
            json!({"address_prefix": "example.com", "prefix_len": 8}),
        ] {
            let e = err(with_hcm(
                json!({"internal_address_config": {"cidr_ranges": [bad]}}),
            ));
            assert_eq!(
                e.field,
                format!("{HCM_FIELD}.internal_address_config.cidr_ranges[0]")
            );
        }
    }
}
