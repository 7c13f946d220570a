//! `Cluster` → [`ClusterConfig`].
//!
//! Fields that would change behaviour and are not implemented are errors naming the field;
//! cosmetic ones (`alt_stat_name`, `metadata`, stats options) are ignored, as are settings that
//! only tune internals (HTTP/1 and HTTP/2 codec options, DNS jitter, merge windows).

use super::endpoint::{dns_targets, endpoints};
use super::error::{
    ConfigError, FieldError, Result, Under, ads_source, duration, percent, percent_u32,
    positive_duration, reject, timeout_or, unsupported,
};
use super::tls::upstream_transport_socket;
use super::types::{
    CircuitBreakerThresholds, ClusterConfig, DEFAULT_CONNECT_TIMEOUT, Discovery, LbPolicy,
    OutlierConfig, UpstreamProtocol, UpstreamTls,
};
use legate_proto::any::unpack;
use legate_proto::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, LoadBalancingPolicy, OutlierDetection, cluster,
};
use legate_proto::pb::envoy::config::core::v3::{
    HttpProtocolOptions as CommonHttpProtocolOptions, RoutingPriority, RuntimeDouble,
    TransportSocket, http_protocol_options::HeadersWithUnderscoresAction, transport_socket,
};
use legate_proto::pb::envoy::extensions::load_balancing_policies as lbp;
use legate_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use legate_proto::pb::google::protobuf::Any;
use prost::Name;
use std::time::Duration;

/// The key of the upstream HTTP protocol options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Envoy's default STRICT_DNS refresh rate.
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// Envoy's default upstream connection idle timeout.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default `per_connection_buffer_limit_bytes` (1 MiB).
const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
/// Envoy's default `healthy_panic_threshold` (percent).
const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;
/// Ring-hash defaults and bound.
const DEFAULT_MIN_RING: u64 = 1024;
const DEFAULT_MAX_RING: u64 = 8 * 1024 * 1024;
/// Maglev's table size (the only one implemented).
const MAGLEV_TABLE_SIZE: u64 = 65537;
/// Retry budget defaults (when the budget message is present).
const DEFAULT_BUDGET_PERCENT: f64 = 20.0;
const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

/// Converts a CDS `Cluster`.
pub fn cluster(c: &Cluster) -> std::result::Result<ClusterConfig, ConfigError> {
    convert(c).map_err(|e| e.into_config("cluster", &c.name))
}

fn convert(c: &Cluster) -> Result<ClusterConfig> {
    if c.name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    unimplemented_fields(c)?;
    let tls = transport_sockets(c)?;
    let discovery = discovery(c)?;
    let lb = lb_policy(c)?;
    let connect_timeout = match &c.connect_timeout {
        None => DEFAULT_CONNECT_TIMEOUT,
        Some(d) => positive_duration("connect_timeout", d)?,
    };
    let http = http_options(c)?;
    let (circuit_breakers, per_host_max_connections) =
        circuit_breakers(c.circuit_breakers.as_ref()).under("circuit_breakers")?;
    let outlier_detection = c
        .outlier_detection
        .as_ref()
        .map(outlier)
        .transpose()
        .under("outlier_detection")?;
    let panic_threshold = common_lb(c.common_lb_config.as_ref()).under("common_lb_config")?;
    Ok(ClusterConfig {
        name: c.name.clone(),
        discovery,
        lb,
        connect_timeout,
        protocol: http.protocol,
        circuit_breakers,
        outlier_detection,
        panic_threshold,
        buffer_limit: c
            .per_connection_buffer_limit_bytes
            .map_or(DEFAULT_BUFFER_LIMIT, |v| v.value),
        idle_timeout: http.idle_timeout,
        max_requests_per_connection: http.max_requests_per_connection,
        per_host_max_connections,
        tls,
    })
}

/// Behaviour-changing fields we do not implement.
fn unimplemented_fields(c: &Cluster) -> Result<()> {
    reject(!c.health_checks.is_empty(), "health_checks")?;
    reject(
        c.lb_subset_config
            .as_ref()
            .is_some_and(|s| !s.subset_selectors.is_empty()),
        "lb_subset_config",
    )?;
    reject(c.upstream_bind_config.is_some(), "upstream_bind_config")?;
    reject(
        c.upstream_connection_options.is_some(),
        "upstream_connection_options",
    )?;
    reject(!c.filters.is_empty(), "filters")?;
    reject(c.lrs_server.is_some(), "lrs_server")?;
    reject(c.preconnect_policy.is_some(), "preconnect_policy")?;
    reject(
        c.connection_pool_per_downstream_connection,
        "connection_pool_per_downstream_connection",
    )?;
    reject(c.upstream_config.is_some(), "upstream_config")?;
    reject(
        c.per_connection_buffer_high_watermark_timeout
            .as_ref()
            .is_some_and(|d| d.seconds != 0 || d.nanos != 0),
        "per_connection_buffer_high_watermark_timeout",
    )?;
    reject(c.queuing_policies.is_some(), "queuing_policies")?;
    if let Some(cluster::LbConfig::OriginalDstLbConfig(_)) = &c.lb_config {
        return Err(unsupported("original_dst_lb_config"));
    }
    Ok(())
}

/// Accepts an absent or raw-buffer transport socket.
pub(crate) fn raw_buffer_only(field: &str, ts: &TransportSocket) -> Result<()> {
    let type_url = match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
        None => "",
    };
    let raw = type_url.ends_with("/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer")
        || (type_url.is_empty()
            && (ts.name == "envoy.transport_sockets.raw_buffer" || ts.name == "raw_buffer"));
    if raw {
        return Ok(());
    }
    let tls = type_url.contains("envoy.extensions.transport_sockets.tls.")
        || ts.name == "envoy.transport_sockets.tls"
        || ts.name == "tls";
    if tls {
        Err(FieldError::new(field, "TLS is not supported yet"))
    } else {
        let what = if type_url.is_empty() {
            ts.name.as_str()
        } else {
            type_url
        };
        Err(FieldError::new(
            field,
            format!("transport socket `{what}` is not supported (only raw_buffer)"),
        ))
    }
}

/// `transport_socket`: raw buffer (`None`) or an `UpstreamTlsContext`. Per-endpoint transport
/// socket selection is not implemented.
fn transport_sockets(c: &Cluster) -> Result<Option<UpstreamTls>> {
    if !c.transport_socket_matches.is_empty() {
        return Err(unsupported("transport_socket_matches"));
    }
    if c.transport_socket_matcher.is_some() {
        return Err(unsupported("transport_socket_matcher"));
    }
    match &c.transport_socket {
        None => Ok(None),
        Some(ts) => upstream_transport_socket(ts).under("transport_socket"),
    }
}

fn discovery(c: &Cluster) -> Result<Discovery> {
    use cluster::{ClusterDiscoveryType as T, DiscoveryType as D};
    let kind = match &c.cluster_discovery_type {
        None => D::Static,
        Some(T::Type(t)) => D::try_from(*t)
            .map_err(|_| FieldError::new("type", format!("unknown discovery type {t}")))?,
        Some(T::ClusterType(ct)) => {
            return Err(FieldError::new(
                "cluster_type",
                format!("custom cluster type `{}` is not supported", ct.name),
            ));
        }
    };
    match kind {
        D::Static => Ok(Discovery::Static(match &c.load_assignment {
            None => Vec::new(),
            Some(la) => endpoints(la).under("load_assignment")?,
        })),
        D::StrictDns | D::LogicalDns => {
            let logical = kind == D::LogicalDns;
            dns_options(c)?;
            let targets = match &c.load_assignment {
                Some(la) => dns_targets(la, logical).under("load_assignment")?,
                None if logical => {
                    return Err(FieldError::new(
                        "load_assignment",
                        "LOGICAL_DNS clusters need exactly one endpoint",
                    ));
                }
                None => Vec::new(),
            };
            let refresh = dns_refresh(c)?;
            use cluster::DnsLookupFamily as F;
            let prefer_v4 = match F::try_from(c.dns_lookup_family) {
                Ok(F::V4Only | F::V4Preferred) => true,
                Ok(F::Auto | F::V6Only | F::All) => false,
                Err(_) => {
                    return Err(FieldError::new(
                        "dns_lookup_family",
                        format!("unknown value {}", c.dns_lookup_family),
                    ));
                }
            };
            Ok(Discovery::StrictDns {
                targets,
                refresh,
                prefer_v4,
            })
        }
        D::Eds => {
            let eds = c.eds_cluster_config.as_ref();
            ads_source(
                "eds_cluster_config.eds_config",
                eds.and_then(|e| e.eds_config.as_ref()),
                true,
            )?;
            let service_name = eds
                .map(|e| e.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&c.name)
                .to_string();
            Ok(Discovery::Eds { service_name })
        }
        D::OriginalDst => Err(FieldError::new("type", "ORIGINAL_DST is not supported")),
    }
}

/// DNS resolver settings we do not implement (deprecated in favour of the DNS cluster
/// extension, still honoured by Envoy).
#[allow(deprecated)]
fn dns_options(c: &Cluster) -> Result<()> {
    reject(c.respect_dns_ttl, "respect_dns_ttl")?;
    reject(!c.dns_resolvers.is_empty(), "dns_resolvers")?;
    reject(c.dns_resolution_config.is_some(), "dns_resolution_config")?;
    reject(
        c.typed_dns_resolver_config.is_some(),
        "typed_dns_resolver_config",
    )?;
    reject(c.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups")
}

/// `dns_refresh_rate` (default 5 s, must exceed 1 ms).
#[allow(deprecated)]
fn dns_refresh(c: &Cluster) -> Result<Duration> {
    let Some(d) = &c.dns_refresh_rate else {
        return Ok(DEFAULT_DNS_REFRESH);
    };
    let d = duration("dns_refresh_rate", d)?;
    if d <= Duration::from_millis(1) {
        return Err(FieldError::new(
            "dns_refresh_rate",
            "must be greater than 1ms",
        ));
    }
    Ok(d)
}

fn lb_policy(c: &Cluster) -> Result<LbPolicy> {
    if let Some(policy) = &c.load_balancing_policy {
        return typed_lb_policy(policy).under("load_balancing_policy");
    }
    use cluster::LbConfig as C;
    use cluster::LbPolicy as P;
    let policy = P::try_from(c.lb_policy)
        .map_err(|_| FieldError::new("lb_policy", format!("unknown policy {}", c.lb_policy)))?;
    match policy {
        P::RoundRobin => {
            if let Some(C::RoundRobinLbConfig(rr)) = &c.lb_config {
                reject(
                    rr.slow_start_config.is_some(),
                    "round_robin_lb_config.slow_start_config",
                )?;
            }
            Ok(LbPolicy::RoundRobin)
        }
        P::LeastRequest => {
            if let Some(C::LeastRequestLbConfig(lr)) = &c.lb_config {
                least_request_options(
                    lr.choice_count.map(|v| v.value),
                    lr.active_request_bias.as_ref(),
                    lr.slow_start_config.is_some(),
                )
                .under("least_request_lb_config")?;
            }
            Ok(LbPolicy::LeastRequest)
        }
        P::Random => Ok(LbPolicy::Random),
        P::RingHash => match &c.lb_config {
            Some(C::RingHashLbConfig(rh)) => {
                if rh.hash_function
                    == cluster::ring_hash_lb_config::HashFunction::MurmurHash2 as i32
                {
                    return Err(FieldError::new(
                        "ring_hash_lb_config.hash_function",
                        "MURMUR_HASH_2 is not supported",
                    ));
                }
                ring_sizes(
                    rh.minimum_ring_size.map(|v| v.value),
                    rh.maximum_ring_size.map(|v| v.value),
                )
                .under("ring_hash_lb_config")
            }
            _ => ring_sizes(None, None),
        },
        P::Maglev => {
            if let Some(C::MaglevLbConfig(m)) = &c.lb_config {
                maglev_table(m.table_size.map(|v| v.value)).under("maglev_lb_config")?;
            }
            Ok(LbPolicy::Maglev)
        }
        P::ClusterProvided => Err(FieldError::new(
            "lb_policy",
            "CLUSTER_PROVIDED is not supported",
        )),
        P::LoadBalancingPolicyConfig => Err(FieldError::new(
            "lb_policy",
            "LOAD_BALANCING_POLICY_CONFIG requires load_balancing_policy",
        )),
    }
}

fn ring_sizes(min: Option<u64>, max: Option<u64>) -> Result<LbPolicy> {
    let min_ring_size = min.unwrap_or(DEFAULT_MIN_RING);
    let max_ring_size = max.unwrap_or(DEFAULT_MAX_RING);
    for (field, v) in [
        ("minimum_ring_size", min_ring_size),
        ("maximum_ring_size", max_ring_size),
    ] {
        if !(1..=DEFAULT_MAX_RING).contains(&v) {
            return Err(FieldError::new(
                field,
                format!("must be between 1 and {DEFAULT_MAX_RING}"),
            ));
        }
    }
    if min_ring_size > max_ring_size {
        return Err(FieldError::new(
            "minimum_ring_size",
            format!("{min_ring_size} is greater than maximum_ring_size {max_ring_size}"),
        ));
    }
    Ok(LbPolicy::RingHash {
        min_ring_size,
        max_ring_size,
    })
}

fn maglev_table(size: Option<u64>) -> Result<()> {
    match size {
        None | Some(MAGLEV_TABLE_SIZE) => Ok(()),
        Some(other) => Err(FieldError::new(
            "table_size",
            format!("only {MAGLEV_TABLE_SIZE} is supported, got {other}"),
        )),
    }
}

fn least_request_options(
    choice_count: Option<u32>,
    active_request_bias: Option<&RuntimeDouble>,
    slow_start: bool,
) -> Result<()> {
    if choice_count.is_some_and(|c| c != 2) {
        return Err(FieldError::new(
            "choice_count",
            "only 2 (power of two choices) is supported",
        ));
    }
    reject(
        active_request_bias.is_some_and(|b| b.default_value != 1.0 || !b.runtime_key.is_empty()),
        "active_request_bias",
    )?;
    reject(slow_start, "slow_start_config")
}

/// `load_balancing_policy`: the first policy we implement wins (Envoy skips unknown ones).
fn typed_lb_policy(policy: &LoadBalancingPolicy) -> Result<LbPolicy> {
    if policy.policies.is_empty() {
        return Err(FieldError::new(
            "policies",
            "at least one policy is required",
        ));
    }
    let mut seen = Vec::new();
    for (i, p) in policy.policies.iter().enumerate() {
        let field = format!("policies[{i}].typed_extension_config.typed_config");
        let Some(any) = p
            .typed_extension_config
            .as_ref()
            .and_then(|t| t.typed_config.as_ref())
        else {
            return Err(FieldError::new(field, "required"));
        };
        if let Some(lb) = one_lb_policy(any).under(&field)? {
            return Ok(lb);
        }
        seen.push(any.type_url.clone());
    }
    Err(FieldError::new(
        "policies",
        format!("no supported policy among {}", seen.join(", ")),
    ))
}

fn unpack_as<M: prost::Message + Name + Default>(any: &Any) -> Result<M> {
    unpack::<M>(any).map_err(|e| FieldError::new("", e.to_string()))
}

fn locality_lb(l: Option<&lbp::common::v3::LocalityLbConfig>) -> Result<()> {
    use lbp::common::v3::locality_lb_config::LocalityConfigSpecifier as L;
    // Zone-aware routing needs a local cluster (not supported by the bootstrap), so it is inert.
    match l.and_then(|l| l.locality_config_specifier.as_ref()) {
        Some(L::LocalityWeightedLbConfig(_)) => Err(unsupported(
            "locality_lb_config.locality_weighted_lb_config",
        )),
        _ => Ok(()),
    }
}

fn consistent_hashing(c: Option<&lbp::common::v3::ConsistentHashingLbConfig>) -> Result<()> {
    if let Some(c) = c {
        reject(
            c.use_hostname_for_hashing,
            "consistent_hashing_lb_config.use_hostname_for_hashing",
        )?;
        reject(
            c.hash_balance_factor.is_some(),
            "consistent_hashing_lb_config.hash_balance_factor",
        )?;
        reject(
            !c.hash_policy.is_empty(),
            "consistent_hashing_lb_config.hash_policy",
        )?;
    }
    Ok(())
}

/// One typed policy; `Ok(None)` when it is not one we implement.
fn one_lb_policy(any: &Any) -> Result<Option<LbPolicy>> {
    let t = any.type_url.as_str();
    if t == lbp::round_robin::v3::RoundRobin::type_url() {
        let rr: lbp::round_robin::v3::RoundRobin = unpack_as(any)?;
        reject(rr.slow_start_config.is_some(), "slow_start_config")?;
        locality_lb(rr.locality_lb_config.as_ref())?;
        Ok(Some(LbPolicy::RoundRobin))
    } else if t == lbp::least_request::v3::LeastRequest::type_url() {
        let lr: lbp::least_request::v3::LeastRequest = unpack_as(any)?;
        least_request_options(
            lr.choice_count.map(|v| v.value),
            lr.active_request_bias.as_ref(),
            lr.slow_start_config.is_some(),
        )?;
        locality_lb(lr.locality_lb_config.as_ref())?;
        #[allow(deprecated)]
        let full_scan = lr.enable_full_scan.is_some_and(|b| b.value);
        reject(full_scan, "enable_full_scan")?;
        reject(
            lr.selection_method
                != lbp::least_request::v3::least_request::SelectionMethod::NChoices as i32,
            "selection_method",
        )?;
        Ok(Some(LbPolicy::LeastRequest))
    } else if t == lbp::random::v3::Random::type_url() {
        let r: lbp::random::v3::Random = unpack_as(any)?;
        locality_lb(r.locality_lb_config.as_ref())?;
        Ok(Some(LbPolicy::Random))
    } else if t == lbp::ring_hash::v3::RingHash::type_url() {
        let rh: lbp::ring_hash::v3::RingHash = unpack_as(any)?;
        if rh.hash_function == lbp::ring_hash::v3::ring_hash::HashFunction::MurmurHash2 as i32 {
            return Err(FieldError::new(
                "hash_function",
                "MURMUR_HASH_2 is not supported",
            ));
        }
        #[allow(deprecated)]
        {
            reject(rh.use_hostname_for_hashing, "use_hostname_for_hashing")?;
            reject(rh.hash_balance_factor.is_some(), "hash_balance_factor")?;
        }
        consistent_hashing(rh.consistent_hashing_lb_config.as_ref())?;
        reject(
            rh.locality_weighted_lb_config.is_some(),
            "locality_weighted_lb_config",
        )?;
        ring_sizes(
            rh.minimum_ring_size.map(|v| v.value),
            rh.maximum_ring_size.map(|v| v.value),
        )
        .map(Some)
    } else if t == lbp::maglev::v3::Maglev::type_url() {
        let m: lbp::maglev::v3::Maglev = unpack_as(any)?;
        maglev_table(m.table_size.map(|v| v.value))?;
        consistent_hashing(m.consistent_hashing_lb_config.as_ref())?;
        reject(
            m.locality_weighted_lb_config.is_some(),
            "locality_weighted_lb_config",
        )?;
        Ok(Some(LbPolicy::Maglev))
    } else {
        Ok(None)
    }
}

/// Upstream HTTP settings resolved from the typed or the deprecated cluster fields.
struct HttpSettings {
    protocol: UpstreamProtocol,
    idle_timeout: Option<Duration>,
    max_requests_per_connection: Option<u32>,
}

fn http_options(c: &Cluster) -> Result<HttpSettings> {
    let mut keys: Vec<&String> = c.typed_extension_protocol_options.keys().collect();
    keys.sort();
    let mut protocol = UpstreamProtocol::Http1;
    let mut common: Option<(String, CommonHttpProtocolOptions)> = None;
    let mut typed = false;
    for key in keys {
        let field = format!("typed_extension_protocol_options[\"{key}\"]");
        if key != HTTP_PROTOCOL_OPTIONS {
            return Err(FieldError::new(
                field,
                "unsupported protocol options extension",
            ));
        }
        let Some(any) = c.typed_extension_protocol_options.get(key) else {
            continue;
        };
        let opts: HttpProtocolOptions = unpack_as(any).under(&field)?;
        typed = true;
        protocol = match &opts.upstream_protocol_options {
            None => {
                return Err(FieldError::new(
                    format!("{field}.upstream_protocol_options"),
                    "required (explicit_http_config)",
                ));
            }
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err(unsupported(&format!(
                        "{field}.explicit_http_config.http3_protocol_options"
                    )));
                }
                None => {
                    return Err(FieldError::new(
                        format!("{field}.explicit_http_config"),
                        "a protocol is required",
                    ));
                }
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                return Err(unsupported(&format!(
                    "{field}.use_downstream_protocol_config"
                )));
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                return Err(unsupported(&format!("{field}.auto_config")));
            }
        };
        reject(
            !opts.http_filters.is_empty(),
            &format!("{field}.http_filters"),
        )?;
        reject(
            opts.header_validation_config.is_some(),
            &format!("{field}.header_validation_config"),
        )?;
        reject(
            opts.outlier_detection.is_some(),
            &format!("{field}.outlier_detection"),
        )?;
        reject(
            !opts.request_mirror_policies.is_empty(),
            &format!("{field}.request_mirror_policies"),
        )?;
        reject(
            !opts.hash_policy.is_empty(),
            &format!("{field}.hash_policy"),
        )?;
        reject(
            opts.retry_policy.is_some(),
            &format!("{field}.retry_policy"),
        )?;
        if let Some(co) = opts.common_http_protocol_options {
            common = Some((format!("{field}.common_http_protocol_options"), co));
        }
    }
    #[allow(deprecated)]
    {
        let legacy = [
            ("http_protocol_options", c.http_protocol_options.is_some()),
            ("http2_protocol_options", c.http2_protocol_options.is_some()),
            (
                "common_http_protocol_options",
                c.common_http_protocol_options.is_some(),
            ),
            (
                "upstream_http_protocol_options",
                c.upstream_http_protocol_options.is_some(),
            ),
        ];
        for (name, set) in legacy {
            if set && typed {
                return Err(FieldError::new(
                    name,
                    format!(
                        "cannot be combined with typed_extension_protocol_options[\"{HTTP_PROTOCOL_OPTIONS}\"]"
                    ),
                ));
            }
        }
        if c.http2_protocol_options.is_some() {
            protocol = UpstreamProtocol::Http2;
        }
        if let Some(co) = &c.common_http_protocol_options {
            common = Some(("common_http_protocol_options".to_string(), *co));
        }
        if c.protocol_selection != cluster::ClusterProtocolSelection::UseConfiguredProtocol as i32 {
            return Err(unsupported("protocol_selection"));
        }
    }
    let mut idle_timeout = Some(DEFAULT_IDLE_TIMEOUT);
    let mut max_requests = None;
    if let Some((field, co)) = &common {
        let f = |name: &str| format!("{field}.{name}");
        idle_timeout = timeout_or(
            &f("idle_timeout"),
            co.idle_timeout.as_ref(),
            Some(DEFAULT_IDLE_TIMEOUT),
        )?;
        reject(
            co.max_connection_duration.is_some(),
            &f("max_connection_duration"),
        )?;
        reject(co.max_stream_duration.is_some(), &f("max_stream_duration"))?;
        reject(
            co.headers_with_underscores_action != HeadersWithUnderscoresAction::Allow as i32,
            &f("headers_with_underscores_action"),
        )?;
        max_requests = co.max_requests_per_connection.map(|v| v.value);
    }
    #[allow(deprecated)]
    if let Some(v) = c.max_requests_per_connection {
        if max_requests.is_some() {
            return Err(FieldError::new(
                "max_requests_per_connection",
                "set both here and in common_http_protocol_options",
            ));
        }
        max_requests = Some(v.value);
    }
    Ok(HttpSettings {
        protocol,
        idle_timeout,
        // 0 means "no limit" in Envoy.
        max_requests_per_connection: max_requests.filter(|v| *v > 0),
    })
}

fn circuit_breakers(
    cb: Option<&CircuitBreakers>,
) -> Result<(CircuitBreakerThresholds, Option<u32>)> {
    let mut out = CircuitBreakerThresholds::default();
    let Some(cb) = cb else {
        return Ok((out, None));
    };
    let default = RoutingPriority::Default as i32;
    // Envoy uses the first thresholds entry of each priority; HIGH is not implemented (no route
    // sets a priority we accept other than DEFAULT), so its entries are ignored.
    if let Some((i, t)) = cb
        .thresholds
        .iter()
        .enumerate()
        .find(|(_, t)| t.priority == default)
    {
        let f = |name: &str| format!("thresholds[{i}].{name}");
        if let Some(v) = t.max_connections {
            out.max_connections = v.value;
        }
        if let Some(v) = t.max_pending_requests {
            out.max_pending_requests = v.value;
        }
        if let Some(v) = t.max_requests {
            out.max_requests = v.value;
        }
        if let Some(v) = t.max_retries {
            out.max_retries = v.value;
        }
        reject(t.max_connection_pools.is_some(), &f("max_connection_pools"))?;
        if let Some(b) = &t.retry_budget {
            let budget = match &b.budget_percent {
                None => DEFAULT_BUDGET_PERCENT,
                Some(p) => percent(&f("retry_budget.budget_percent"), p)?,
            };
            reject(
                b.budget_interval.is_some(),
                &f("retry_budget.budget_interval"),
            )?;
            let min = b
                .min_retry_concurrency
                .map_or(DEFAULT_MIN_RETRY_CONCURRENCY, |v| v.value);
            out.retry_budget = Some((budget, min));
        }
    }
    // Envoy honours only `max_connections` in per-host thresholds.
    let per_host = cb
        .per_host_thresholds
        .iter()
        .find(|t| t.priority == default)
        .and_then(|t| t.max_connections)
        .map(|v| v.value);
    Ok((out, per_host))
}

fn outlier(o: &OutlierDetection) -> Result<OutlierConfig> {
    let d = OutlierConfig::default();
    let u = |v: Option<legate_proto::pb::google::protobuf::UInt32Value>, def: u32| {
        v.map_or(def, |v| v.value)
    };
    let pct = |name: &str, v: Option<legate_proto::pb::google::protobuf::UInt32Value>, def| {
        percent_u32(name, v.map(|v| v.value), def)
    };
    let dur = |name: &str, v: Option<&legate_proto::pb::google::protobuf::Duration>, def| {
        v.map_or(Ok(def), |v| positive_duration(name, v))
    };
    reject(
        o.enforcing_local_origin_success_rate
            .is_some_and(|v| v.value != 100),
        "enforcing_local_origin_success_rate",
    )?;
    reject(
        o.enforcing_failure_percentage_local_origin
            .is_some_and(|v| v.value != 0),
        "enforcing_failure_percentage_local_origin",
    )?;
    reject(!o.monitors.is_empty(), "monitors")?;
    reject(
        o.always_eject_one_host.is_some_and(|b| b.value),
        "always_eject_one_host",
    )?;
    reject(
        o.detect_degraded_hosts.is_some_and(|b| b.value),
        "detect_degraded_hosts",
    )?;
    let mut cfg = OutlierConfig {
        consecutive_5xx: u(o.consecutive_5xx, d.consecutive_5xx),
        consecutive_gateway_failure: u(
            o.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        consecutive_local_origin_failure: u(
            o.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        interval: dur("interval", o.interval.as_ref(), d.interval)?,
        base_ejection_time: dur(
            "base_ejection_time",
            o.base_ejection_time.as_ref(),
            d.base_ejection_time,
        )?,
        max_ejection_time: dur(
            "max_ejection_time",
            o.max_ejection_time.as_ref(),
            d.max_ejection_time,
        )?,
        max_ejection_percent: pct(
            "max_ejection_percent",
            o.max_ejection_percent,
            d.max_ejection_percent,
        )?,
        enforcing_consecutive_5xx: pct(
            "enforcing_consecutive_5xx",
            o.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
        )?,
        enforcing_consecutive_gateway_failure: pct(
            "enforcing_consecutive_gateway_failure",
            o.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
        )?,
        enforcing_consecutive_local_origin_failure: pct(
            "enforcing_consecutive_local_origin_failure",
            o.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
        )?,
        enforcing_success_rate: pct(
            "enforcing_success_rate",
            o.enforcing_success_rate,
            d.enforcing_success_rate,
        )?,
        success_rate_minimum_hosts: u(o.success_rate_minimum_hosts, d.success_rate_minimum_hosts),
        success_rate_request_volume: u(
            o.success_rate_request_volume,
            d.success_rate_request_volume,
        ),
        success_rate_stdev_factor: u(o.success_rate_stdev_factor, d.success_rate_stdev_factor),
        failure_percentage_threshold: pct(
            "failure_percentage_threshold",
            o.failure_percentage_threshold,
            d.failure_percentage_threshold,
        )?,
        enforcing_failure_percentage: pct(
            "enforcing_failure_percentage",
            o.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
        )?,
        failure_percentage_minimum_hosts: u(
            o.failure_percentage_minimum_hosts,
            d.failure_percentage_minimum_hosts,
        ),
        failure_percentage_request_volume: u(
            o.failure_percentage_request_volume,
            d.failure_percentage_request_volume,
        ),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
    };
    if o.max_ejection_time.is_none() {
        // Envoy: without max_ejection_time, the cap is max(300 s, base_ejection_time).
        cfg.max_ejection_time = cfg.max_ejection_time.max(cfg.base_ejection_time);
    } else if cfg.max_ejection_time < cfg.base_ejection_time {
        return Err(FieldError::new(
            "max_ejection_time",
            format!(
                "{:?} is smaller than base_ejection_time {:?}",
                cfg.max_ejection_time, cfg.base_ejection_time
            ),
        ));
    }
    Ok(cfg)
}

fn common_lb(c: Option<&cluster::CommonLbConfig>) -> Result<f64> {
    let Some(c) = c else {
        return Ok(DEFAULT_PANIC_THRESHOLD);
    };
    reject(
        c.close_connections_on_host_set_change,
        "close_connections_on_host_set_change",
    )?;
    reject(c.override_host_status.is_some(), "override_host_status")?;
    if let Some(ch) = &c.consistent_hashing_lb_config {
        reject(
            ch.use_hostname_for_hashing,
            "consistent_hashing_lb_config.use_hostname_for_hashing",
        )?;
        reject(
            ch.hash_balance_factor.is_some(),
            "consistent_hashing_lb_config.hash_balance_factor",
        )?;
    }
    if let Some(cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_)) =
        &c.locality_config_specifier
    {
        return Err(unsupported("locality_weighted_lb_config"));
    }
    match &c.healthy_panic_threshold {
        None => Ok(DEFAULT_PANIC_THRESHOLD),
        Some(p) => percent("healthy_panic_threshold", p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{DnsTarget, EndpointConfig, EndpointHealth};
    use legate_proto::any::pack;
    use legate_proto::json::from_json;
    use serde_json::{Value, json};

    fn parse(v: Value) -> Cluster {
        from_json(&v).expect("valid Cluster JSON")
    }

    fn ok(v: Value) -> ClusterConfig {
        cluster(&parse(v)).expect("valid cluster")
    }

    fn err(v: Value) -> ConfigError {
        cluster(&parse(v)).expect_err("invalid cluster")
    }

    fn eds(extra: Value) -> Value {
        let mut base = json!({"name": "payments", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        base
    }

    fn ep(host: &str, port: u16) -> Value {
        json!({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}})
    }

    #[test]
    fn defaults_resolved() {
        let c = ok(eds(json!({})));
        assert_eq!(
            c,
            ClusterConfig {
                name: "payments".into(),
                discovery: Discovery::Eds {
                    service_name: "payments".into()
                },
                lb: LbPolicy::RoundRobin,
                connect_timeout: Duration::from_secs(5),
                protocol: UpstreamProtocol::Http1,
                circuit_breakers: CircuitBreakerThresholds {
                    max_connections: 1024,
                    max_pending_requests: 1024,
                    max_requests: 1024,
                    max_retries: 3,
                    retry_budget: None,
                },
                outlier_detection: None,
                panic_threshold: 50.0,
                buffer_limit: 1024 * 1024,
                idle_timeout: Some(Duration::from_secs(3600)),
                max_requests_per_connection: None,
                per_host_max_connections: None,
                tls: None,
            }
        );
        // EDS without eds_cluster_config, and a service name.
        let c = ok(json!({"name": "a", "type": "EDS"}));
        assert_eq!(
            c.discovery,
            Discovery::Eds {
                service_name: "a".into()
            }
        );
        let c =
            ok(json!({"name": "a", "type": "EDS", "eds_cluster_config": {"service_name": "svc"}}));
        assert_eq!(
            c.discovery,
            Discovery::Eds {
                service_name: "svc".into()
            }
        );
    }

    #[test]
    fn static_and_dns_discovery() {
        let c = ok(json!({
            "name": "s", "type": "STATIC",
            "load_assignment": {"cluster_name": "s", "endpoints": [{"lb_endpoints": [ep("127.0.0.1", 8080)]}]}
        }));
        assert_eq!(
            c.discovery,
            Discovery::Static(vec![EndpointConfig {
                address: "127.0.0.1:8080".parse().unwrap(),
                weight: 1,
                locality_weight: 1,
                priority: 0,
                health: EndpointHealth::Healthy,
            }])
        );
        // Default type is STATIC.
        assert_eq!(
            ok(json!({"name": "s"})).discovery,
            Discovery::Static(vec![])
        );
        let e = err(json!({
            "name": "s", "type": "STATIC",
            "load_assignment": {"cluster_name": "s", "endpoints": [{"lb_endpoints": [ep("localhost", 8080)]}]}
        }));
        assert_eq!(
            e.field,
            "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"
        );

        let c = ok(json!({
            "name": "d", "type": "STRICT_DNS", "dns_lookup_family": "V4_PREFERRED",
            "load_assignment": {"cluster_name": "d", "endpoints": [{"lb_endpoints": [ep("localhost", 8080)]}]}
        }));
        assert_eq!(
            c.discovery,
            Discovery::StrictDns {
                targets: vec![DnsTarget {
                    host: "localhost".into(),
                    port: 8080,
                    weight: 1
                }],
                refresh: Duration::from_secs(5),
                prefer_v4: true,
            }
        );
        let c = ok(json!({
            "name": "d", "type": "LOGICAL_DNS", "dns_refresh_rate": "30s",
            "load_assignment": {"cluster_name": "d", "endpoints": [{"lb_endpoints": [ep("a.example", 80)]}]}
        }));
        assert_eq!(
            c.discovery,
            Discovery::StrictDns {
                targets: vec![DnsTarget {
                    host: "a.example".into(),
                    port: 80,
                    weight: 1
                }],
                refresh: Duration::from_secs(30),
                prefer_v4: false,
            }
        );
        assert_eq!(
            err(json!({"name": "d", "type": "LOGICAL_DNS"})).field,
            "load_assignment"
        );
        assert_eq!(
            err(json!({"name": "d", "type": "STRICT_DNS", "dns_refresh_rate": "0s"})).field,
            "dns_refresh_rate"
        );
        assert_eq!(
            err(json!({"name": "d", "type": "STRICT_DNS", "respect_dns_ttl": true})).field,
            "respect_dns_ttl"
        );
    }

    #[test]
    fn discovery_errors() {
        let e = err(json!({"name": "o", "type": "ORIGINAL_DST"}));
        assert_eq!(e.field, "type");
        assert_eq!(
            e.to_string(),
            "cluster `o`: type: ORIGINAL_DST is not supported"
        );
        let e = err(json!({"name": "x", "cluster_type": {"name": "envoy.clusters.aggregate"}}));
        assert_eq!(e.field, "cluster_type");
        let e = err(json!({
            "name": "x", "type": "EDS",
            "eds_cluster_config": {"eds_config": {"api_config_source": {"api_type": "GRPC"}}}
        }));
        assert_eq!(e.field, "eds_cluster_config.eds_config");
        assert!(e.message.contains("ADS"), "{e}");
        assert_eq!(err(json!({"name": ""})).field, "name");
    }

    #[test]
    fn lb_policies() {
        assert_eq!(
            ok(eds(json!({"lb_policy": "LEAST_REQUEST"}))).lb,
            LbPolicy::LeastRequest
        );
        assert_eq!(ok(eds(json!({"lb_policy": "RANDOM"}))).lb, LbPolicy::Random);
        assert_eq!(ok(eds(json!({"lb_policy": "MAGLEV"}))).lb, LbPolicy::Maglev);
        assert_eq!(
            ok(eds(json!({"lb_policy": "RING_HASH"}))).lb,
            LbPolicy::RingHash {
                min_ring_size: 1024,
                max_ring_size: 8388608
            }
        );
        assert_eq!(
            ok(eds(json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 64, "maximum_ring_size": 4096}}))).lb,
            LbPolicy::RingHash { min_ring_size: 64, max_ring_size: 4096 }
        );
        let e = err(eds(json!({"lb_policy": "CLUSTER_PROVIDED"})));
        assert_eq!(
            e.to_string(),
            "cluster `payments`: lb_policy: CLUSTER_PROVIDED is not supported"
        );
        assert_eq!(
            err(eds(json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 4096, "maximum_ring_size": 64}}))).field,
            "ring_hash_lb_config.minimum_ring_size"
        );
        assert_eq!(
            err(eds(json!({"lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"choice_count": 5}}))).field,
            "least_request_lb_config.choice_count"
        );
        assert_eq!(
            err(eds(
                json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 5}})
            ))
            .field,
            "maglev_lb_config.table_size"
        );
    }

    #[test]
    fn typed_load_balancing_policy_first_supported_wins() {
        let policy = |types: Value| eds(json!({"load_balancing_policy": {"policies": types}}));
        let c = ok(policy(json!([
            {"typed_extension_config": {"name": "x", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"}}},
            {"typed_extension_config": {"name": "rh", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash", "minimum_ring_size": 10}}},
            {"typed_extension_config": {"name": "rr", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"}}}
        ])));
        assert_eq!(
            c.lb,
            LbPolicy::RingHash {
                min_ring_size: 10,
                max_ring_size: 8388608
            }
        );
        let c = ok(policy(json!([
            {"typed_extension_config": {"name": "m", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"}}}
        ])));
        assert_eq!(c.lb, LbPolicy::Maglev);
        let c = ok(policy(json!([
            {"typed_extension_config": {"name": "lr", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest"}}}
        ])));
        assert_eq!(c.lb, LbPolicy::LeastRequest);
        let c = ok(policy(json!([
            {"typed_extension_config": {"name": "r", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random"}}}
        ])));
        assert_eq!(c.lb, LbPolicy::Random);
        let e = err(policy(json!([
            {"typed_extension_config": {"name": "x", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst"}}}
        ])));
        assert_eq!(e.field, "load_balancing_policy.policies");
        let e = err(policy(json!([
            {"typed_extension_config": {"name": "rr", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin", "slow_start_config": {}}}}
        ])));
        assert_eq!(
            e.field,
            "load_balancing_policy.policies[0].typed_extension_config.typed_config.slow_start_config"
        );
    }

    #[test]
    fn http2_and_protocol_options() {
        // As legate-cp emits it.
        let mut c = parse(eds(json!({})));
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.into(),
            pack(&HttpProtocolOptions {
                upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    legate_proto::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Default::default())),
                    },
                )),
                common_http_protocol_options: Some(CommonHttpProtocolOptions {
                    idle_timeout: Some(legate_proto::pb::google::protobuf::Duration { seconds: 0, nanos: 0 }),
                    max_requests_per_connection: Some(legate_proto::pb::google::protobuf::UInt32Value { value: 100 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let cfg = cluster(&c).expect("valid");
        assert_eq!(cfg.protocol, UpstreamProtocol::Http2);
        assert_eq!(cfg.idle_timeout, None, "0 disables the idle timeout");
        assert_eq!(cfg.max_requests_per_connection, Some(100));

        let typed = |opts: Value| {
            eds(json!({"typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: opts}}))
        };
        let c = ok(typed(json!({
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "common_http_protocol_options": {"idle_timeout": "30s"}
        })));
        assert_eq!(c.protocol, UpstreamProtocol::Http1);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        let e = err(typed(json!({
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "use_downstream_protocol_config": {}
        })));
        assert_eq!(
            e.field,
            "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"].use_downstream_protocol_config"
        );
        let e = err(typed(json!({
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "auto_config": {}
        })));
        assert!(e.field.ends_with(".auto_config"), "{e}");
        let e = err(eds(
            json!({"typed_extension_protocol_options": {"envoy.filters.network.tcp_proxy": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "x"}}}),
        ));
        assert_eq!(
            e.field,
            "typed_extension_protocol_options[\"envoy.filters.network.tcp_proxy\"]"
        );
        // Deprecated cluster fields.
        let c = ok(eds(
            json!({"http2_protocol_options": {}, "max_requests_per_connection": 7}),
        ));
        assert_eq!(c.protocol, UpstreamProtocol::Http2);
        assert_eq!(c.max_requests_per_connection, Some(7));
        assert_eq!(
            err(eds(
                json!({"protocol_selection": "USE_DOWNSTREAM_PROTOCOL"})
            ))
            .field,
            "protocol_selection"
        );
    }

    #[test]
    fn breakers_outlier_panic_buffer() {
        let c = ok(eds(json!({
            "connect_timeout": "0.25s",
            "per_connection_buffer_limit_bytes": 32768,
            "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
            "circuit_breakers": {
                "thresholds": [
                    {"priority": "HIGH", "max_connections": 1},
                    {"max_connections": 10, "max_requests": 20, "retry_budget": {}},
                    {"max_connections": 99}
                ],
                "per_host_thresholds": [{"max_connections": 2}]
            },
            "outlier_detection": {"consecutive_5xx": 3, "interval": "1s", "enforcing_consecutive_gateway_failure": 100}
        })));
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.buffer_limit, 32768);
        assert_eq!(c.panic_threshold, 0.0);
        assert_eq!(
            c.circuit_breakers,
            CircuitBreakerThresholds {
                max_connections: 10,
                max_pending_requests: 1024,
                max_requests: 20,
                max_retries: 3,
                retry_budget: Some((20.0, 3)),
            }
        );
        assert_eq!(c.per_host_max_connections, Some(2));
        assert_eq!(
            c.outlier_detection,
            Some(OutlierConfig {
                consecutive_5xx: 3,
                interval: Duration::from_secs(1),
                enforcing_consecutive_gateway_failure: 100,
                ..OutlierConfig::default()
            })
        );
        let c = ok(eds(
            json!({"circuit_breakers": {"thresholds": [{"retry_budget": {"budget_percent": {"value": 50}, "min_retry_concurrency": 1}}]}}),
        ));
        assert_eq!(c.circuit_breakers.retry_budget, Some((50.0, 1)));
        assert_eq!(
            err(eds(
                json!({"outlier_detection": {"max_ejection_percent": 101}})
            ))
            .field,
            "outlier_detection.max_ejection_percent"
        );
        // Envoy: without max_ejection_time the cap is max(300 s, base_ejection_time) ...
        let c = ok(eds(
            json!({"outlier_detection": {"base_ejection_time": "400s"}}),
        ));
        let od = c.outlier_detection.expect("outlier detection");
        assert_eq!(od.max_ejection_time, std::time::Duration::from_secs(400));
        // ... but an explicit max below the base is an error.
        assert_eq!(
            err(eds(json!({"outlier_detection": {
                "base_ejection_time": "400s", "max_ejection_time": "300s"
            }})))
            .field,
            "outlier_detection.max_ejection_time"
        );
        assert_eq!(
            err(eds(json!({"outlier_detection": {"interval": "0s"}}))).field,
            "outlier_detection.interval"
        );
        assert_eq!(
            err(eds(
                json!({"common_lb_config": {"healthy_panic_threshold": {"value": 150}}})
            ))
            .field,
            "common_lb_config.healthy_panic_threshold"
        );
        assert_eq!(
            err(eds(json!({"connect_timeout": "0s"}))).field,
            "connect_timeout"
        );
    }

    #[test]
    fn transport_socket() {
        assert!(cluster(&parse(eds(json!({"transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}})))).expect("raw buffer").tls.is_none());
        let c = ok(eds(
            json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "sni": "x"}}}),
        ));
        let tls = c.tls.expect("TLS");
        assert_eq!(tls.sni.as_deref(), Some("x"));
        let e = err(eds(
            json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "c", "sds_config": {"path_config_source": {"path": "/x"}}}]}}}}),
        ));
        assert_eq!(
            e.to_string(),
            "cluster `payments`: transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: only ADS config sources are supported"
        );
        let e = err(eds(
            json!({"transport_socket": {"name": "envoy.transport_sockets.alts", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts", "handshaker_service": "x"}}}),
        ));
        assert_eq!(e.field, "transport_socket");
        let e = err(eds(
            json!({"transport_socket": {"name": "envoy.transport_sockets.tls"}}),
        ));
        assert_eq!(e.field, "transport_socket.typed_config");
        let e = err(eds(
            json!({"transport_socket_matches": [{"name": "m", "transport_socket": {"name": "envoy.transport_sockets.raw_buffer"}}]}),
        ));
        assert_eq!(e.field, "transport_socket_matches");
    }

    #[test]
    fn unimplemented_fields_are_named_and_cosmetic_ones_ignored() {
        let cases = [
            (
                json!({"health_checks": [{"timeout": "1s", "interval": "1s", "http_health_check": {"path": "/"}}]}),
                "health_checks",
            ),
            (
                json!({"lb_subset_config": {"subset_selectors": [{"keys": ["v"]}]}}),
                "lb_subset_config",
            ),
            (
                json!({"upstream_bind_config": {"source_address": {"address": "127.0.0.1", "port_value": 0}}}),
                "upstream_bind_config",
            ),
            (
                json!({"upstream_connection_options": {"tcp_keepalive": {}}}),
                "upstream_connection_options",
            ),
            (json!({"lrs_server": {"self": {}}}), "lrs_server"),
            (json!({"preconnect_policy": {}}), "preconnect_policy"),
            (
                json!({"common_lb_config": {"locality_weighted_lb_config": {}}}),
                "common_lb_config.locality_weighted_lb_config",
            ),
        ];
        for (extra, field) in cases {
            let e = err(eds(extra));
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.message, "not supported");
        }
        let c = ok(eds(json!({
            "alt_stat_name": "pay",
            "metadata": {"filter_metadata": {"x": {"a": 1}}},
            "track_cluster_stats": {"request_response_sizes": true},
            "lb_subset_config": {},
            "common_lb_config": {"update_merge_window": "2s"},
            "dns_lookup_family": "V6_ONLY"
        })));
        assert_eq!(c.name, "payments");
    }
}
