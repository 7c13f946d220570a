//! The proxy's validated configuration: what the request path reads.
//!
//! Every value here was converted from an Envoy resource by the sibling modules
//! (`cluster.rs`, `endpoint.rs`, `listener.rs`, `route.rs`), with Envoy's defaults resolved, so
//! the request path never consults an Envoy proto and never re-validates. Conversion failures
//! become NACKs naming the resource and the field.

use regex::Regex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default cluster connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's default retry back-off base interval.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A listener with an HTTP connection manager.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Listener name.
    pub name: String,
    /// Bound address.
    pub address: SocketAddr,
    /// The HCM's `stat_prefix` (stats `http.<prefix>.*`).
    pub stat_prefix: String,
    /// The listener's own `stat_prefix` (stats `listener.<prefix>.*`); empty: the bound
    /// address, as Envoy names it (`127.0.0.1_10000`).
    pub listener_stat_prefix: String,
    /// Where the routes come from.
    pub routes: RouteSource,
    /// Accepted downstream protocols.
    pub codec: Codec,
    /// HCM `stream_idle_timeout` (Envoy default 5 min); `None` disables it.
    pub stream_idle_timeout: Option<Duration>,
    /// HCM `request_timeout`; `None` (Envoy's default) disables it.
    pub request_timeout: Option<Duration>,
    /// HCM `request_headers_timeout`; `None` (Envoy's default) disables it.
    pub request_headers_timeout: Option<Duration>,
    /// HCM `common_http_protocol_options.max_stream_duration`; `None` (Envoy's default)
    /// disables it.
    pub max_stream_duration: Option<Duration>,
    /// The HCM's limits on a downstream connection (`common_http_protocol_options`,
    /// `drain_timeout`).
    pub connection: ConnectionLimits,
    /// The HCM `server_name` (Envoy default `envoy`), written as the `server` response header
    /// as `headers.server` says.
    pub server_name: String,
    /// The HCM's header options: request ids, `via`, the `server` header and the host's
    /// normalization before routing.
    pub headers: HeaderOptions,
    /// The HCM `internal_address_config`; `None` (unset) makes no request internal.
    pub internal_address: Option<InternalAddressConfig>,
}

/// Envoy's default downstream (and upstream) connection idle timeout.
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default HCM `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's default `max_headers_count`.
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;
/// Envoy's default HCM `max_request_headers_kb` (60 KiB), in bytes.
pub const DEFAULT_MAX_REQUEST_HEADERS_BYTES: usize = 60 * 1024;

/// The connection manager's limits on one downstream connection, with Envoy's defaults: its
/// `common_http_protocol_options` (but `max_stream_duration`, a stream's), `drain_timeout` and
/// `max_request_headers_kb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `idle_timeout` (default 1 h): how long a connection may carry no request; `None` (`0s`)
    /// disables it.
    pub idle_timeout: Option<Duration>,
    /// `max_connection_duration`: the connection is drained that long after it was accepted;
    /// `None` (the default, or `0s`) disables it.
    pub max_connection_duration: Option<Duration>,
    /// `max_requests_per_connection`: the connection closes after this many requests; `None`
    /// (the default, or 0) means no limit.
    pub max_requests: Option<u32>,
    /// `drain_timeout` (default 5 s): how long a draining connection stays open for requests
    /// in flight (and, over HTTP/1.1, for the client to close it first).
    pub drain_timeout: Duration,
    /// `max_headers_count` (default 100): a request with more headers is refused (431).
    pub max_headers: u32,
    /// The HCM's `max_request_headers_kb` (default 60), in bytes: HTTP/1.1 counts the request
    /// line, the header lines and the blank line; HTTP/2 the header list as RFC 9113 sizes it
    /// (each field's name and value plus 32).
    pub max_request_headers_bytes: usize,
    /// `headers_with_underscores_action` (default: allow).
    pub underscores: UnderscoresAction,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            idle_timeout: Some(DEFAULT_CONNECTION_IDLE_TIMEOUT),
            max_connection_duration: None,
            max_requests: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_headers: DEFAULT_MAX_HEADERS_COUNT,
            max_request_headers_bytes: DEFAULT_MAX_REQUEST_HEADERS_BYTES,
            underscores: UnderscoresAction::Allow,
        }
    }
}

/// The connection manager's header options, with Envoy's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderOptions {
    /// `generate_request_id` (default true): an `x-request-id` is added to a request that has
    /// none.
    pub generate_request_id: bool,
    /// `always_set_request_id_in_response`: the request's `x-request-id` is copied into the
    /// response.
    pub request_id_in_response: bool,
    /// `via`: appended to the `via` header of each request and response (a valid header value).
    pub via: Option<String>,
    /// `server_header_transformation`.
    pub server_header: ServerHeader,
    /// `strip_trailing_host_dot`: `host.` becomes `host` (`host.:80`, `host:80`) before routing.
    pub strip_trailing_host_dot: bool,
    /// `strip_matching_host_port` / `strip_any_host_port`.
    pub strip_port: StripPort,
    /// `add_user_agent`: `x-envoy-downstream-service-cluster` (and `user-agent` when a request
    /// has none) set to the local node's cluster, `x-envoy-downstream-service-node` to its id.
    pub add_user_agent: bool,
}

impl Default for HeaderOptions {
    fn default() -> Self {
        HeaderOptions {
            generate_request_id: true,
            request_id_in_response: false,
            via: None,
            server_header: ServerHeader::Overwrite,
            strip_trailing_host_dot: false,
            strip_port: StripPort::None,
            add_user_agent: false,
        }
    }
}

/// `server_header_transformation`: what becomes of the `server` response header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerHeader {
    /// Set it to `server_name` (Envoy's default).
    #[default]
    Overwrite,
    /// Set it to `server_name` only when the upstream's response has none.
    AppendIfAbsent,
    /// Leave it as the response has it (or without one).
    PassThrough,
}

/// Which port the connection manager strips from the host before routing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StripPort {
    /// None (Envoy's default).
    #[default]
    None,
    /// `strip_matching_host_port`: the port when it is the listener's.
    Matching,
    /// `strip_any_host_port`: any port.
    Any,
}

/// `headers_with_underscores_action`: what becomes of a request header whose name has an
/// underscore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnderscoresAction {
    /// Forward it (Envoy's default).
    #[default]
    Allow,
    /// Refuse the request (HTTP/1.1: 400; HTTP/2: the stream is reset).
    RejectRequest,
    /// Drop the header and forward the rest.
    DropHeader,
}

/// The HCM's `internal_address_config`: which addresses make a request *internal*. Only
/// internal requests may steer the router with `x-envoy-*` headers (`x-envoy-retry-on`, …);
/// see `proxy::internal` for the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InternalAddressConfig {
    /// `cidr_ranges`. Empty: Envoy's built-in internal addresses (RFC 1918, `127.0.0.1`,
    /// `fd00::/8`, `::1`).
    pub cidr_ranges: Vec<CidrRange>,
}

/// An IP prefix (`config.core.v3.CidrRange`), its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidrRange {
    /// The network address.
    pub prefix: std::net::IpAddr,
    /// Prefix length in bits (at most 32 for IPv4, 128 for IPv6).
    pub len: u8,
}

impl CidrRange {
    /// The range `prefix/len`; `None` when `len` is too long for the address family.
    pub fn new(prefix: std::net::IpAddr, len: u32) -> Option<CidrRange> {
        use std::net::IpAddr;
        match prefix {
            IpAddr::V4(a) if len <= 32 => Some(CidrRange {
                prefix: IpAddr::V4((u32::from(a) & mask32(len)).into()),
                len: len as u8,
            }),
            IpAddr::V6(a) if len <= 128 => Some(CidrRange {
                prefix: IpAddr::V6((u128::from(a) & mask128(len)).into()),
                len: len as u8,
            }),
            _ => None,
        }
    }

    /// True when `ip` is in the range (an IPv4 address never matches an IPv6 range, nor the
    /// other way round, as in Envoy).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let len = u32::from(self.len);
        match (self.prefix, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => u32::from(a) & mask32(len) == u32::from(p),
            (IpAddr::V6(p), IpAddr::V6(a)) => u128::from(a) & mask128(len) == u128::from(p),
            _ => false,
        }
    }
}

fn mask32(len: u32) -> u32 {
    u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0)
}

fn mask128(len: u32) -> u128 {
    u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0)
}

/// Downstream codec (`HttpConnectionManager.codec_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 and h2c (prior knowledge), detected per connection.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Route source of a listener.
#[derive(Clone, Debug)]
pub enum RouteSource {
    /// RDS: the route configuration with this name.
    Rds(String),
    /// An inline `route_config`.
    Inline(Arc<RouteTable>),
}

/// A route configuration.
#[derive(Clone, Debug)]
pub struct RouteTable {
    /// `RouteConfiguration.name`.
    pub name: String,
    /// Virtual hosts in configuration order.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A virtual host.
#[derive(Clone, Debug)]
pub struct VirtualHost {
    /// Name (for stats and debugging).
    pub name: String,
    /// Domains as written (`*`, `*.foo.com`, `foo.*`, `foo.com`, `foo.com:8080`).
    pub domains: Vec<String>,
    /// Routes, first match wins.
    pub routes: Vec<RouteEntry>,
    /// Virtual-host retry policy, used by routes that have none.
    pub retry_policy: Option<RetryPolicy>,
    /// `include_request_attempt_count`: send `x-envoy-attempt-count` upstream.
    pub include_attempt_count: bool,
}

/// One route.
#[derive(Clone, Debug)]
pub struct RouteEntry {
    /// Route name (may be empty).
    pub name: String,
    /// The match.
    pub matcher: RouteMatcher,
    /// What to do with a match.
    pub action: RouteAction,
}

/// Route match criteria.
#[derive(Clone, Debug)]
pub struct RouteMatcher {
    /// Path criterion.
    pub path: PathMatch,
    /// `case_sensitive` (default true) for prefix and path.
    pub case_sensitive: bool,
    /// All must match.
    pub headers: Vec<HeaderMatcher>,
}

/// Path criterion of a route.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path` (exact, query excluded).
    Exact(String),
    /// `safe_regex`, matched against the whole path (query excluded).
    Regex(Regex),
    /// `path_separated_prefix`: `/foo` matches `/foo`, `/foo/…`, `/foo?…`, not `/foobar`.
    SeparatedPrefix(String),
}

/// A header matcher (`HeaderMatcher`).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatcher {
    /// Lower-case header name (`:authority`, `:method`, `:path` are pseudo-headers).
    pub name: String,
    /// The criterion.
    pub kind: HeaderMatchKind,
    /// `invert_match`.
    pub invert: bool,
}

/// Header match criteria.
#[derive(Clone, Debug)]
pub enum HeaderMatchKind {
    /// Header present (any value).
    Present(bool),
    /// Exact value (`string_match.exact` or legacy `exact_match`).
    Exact(String),
    /// Prefix.
    Prefix(String),
    /// Suffix.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Full-match regex.
    Regex(Regex),
    /// Integer range [start, end).
    Range(i64, i64),
}

impl PartialEq for HeaderMatchKind {
    fn eq(&self, other: &Self) -> bool {
        use HeaderMatchKind::*;
        match (self, other) {
            (Present(a), Present(b)) => a == b,
            (Exact(a), Exact(b))
            | (Prefix(a), Prefix(b))
            | (Suffix(a), Suffix(b))
            | (Contains(a), Contains(b)) => a == b,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            (Range(a, b), Range(c, d)) => a == c && b == d,
            _ => false,
        }
    }
}

/// What a route does.
#[derive(Clone, Debug)]
pub enum RouteAction {
    /// Forward upstream.
    Forward(Arc<ForwardAction>),
    /// `direct_response`.
    Direct {
        /// Status code.
        status: u16,
        /// Body (inline string or bytes).
        body: Option<bytes::Bytes>,
    },
}

/// `RouteAction` (the forwarding kind).
#[derive(Clone, Debug)]
pub struct ForwardAction {
    /// Target cluster(s).
    pub target: ClusterTarget,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// Host rewriting.
    pub host_rewrite: HostRewrite,
    /// Route timeout over all attempts; `Duration::ZERO` disables it. Default 15 s.
    pub timeout: Duration,
    /// `idle_timeout` of the stream, if set.
    pub idle_timeout: Option<Duration>,
    /// Route retry policy (falls back to the virtual host's when `None`).
    pub retry_policy: Option<RetryPolicy>,
    /// Hash policies present (for ring_hash/maglev): header names to hash.
    pub hash_headers: Vec<String>,
}

/// Cluster selection.
#[derive(Clone, Debug)]
pub enum ClusterTarget {
    /// One cluster.
    Single(String),
    /// `weighted_clusters`: (name, weight), plus the total.
    Weighted(Vec<(String, u32)>, u64),
}

/// Host header rewriting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRewrite {
    /// Keep the downstream host.
    None,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite`: the chosen upstream host's address (or DNS name).
    Auto,
}

/// Retry policy, with Envoy's defaults resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryPolicy {
    /// `retry_on`, parsed.
    pub retry_on: RetryOn,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    /// `per_try_timeout`.
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`.
    pub per_try_idle_timeout: Option<Duration>,
    /// `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Back-off base (default 25 ms).
    pub backoff_base: Duration,
    /// Back-off max (default 10 × base).
    pub backoff_max: Duration,
    /// `retry_host_predicate` has `envoy.retry_host_predicates.previous_hosts`.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1).
    pub host_selection_max_attempts: u32,
    /// `retriable_headers`: response headers that make a response retriable (name, matcher).
    pub retriable_headers: Vec<HeaderMatcher>,
}

/// The parsed `retry_on` conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`.
    pub five_xx: bool,
    /// `gateway-error` (502, 503, 504).
    pub gateway_error: bool,
    /// `reset`.
    pub reset: bool,
    /// `reset-before-request`.
    pub reset_before_request: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `retriable-4xx` (409).
    pub retriable_4xx: bool,
    /// `refused-stream`.
    pub refused_stream: bool,
    /// `retriable-status-codes`.
    pub retriable_status_codes: bool,
    /// `retriable-headers`.
    pub retriable_headers: bool,
    /// `envoy-ratelimited`.
    pub envoy_ratelimited: bool,
    /// gRPC `cancelled`.
    pub grpc_cancelled: bool,
    /// gRPC `deadline-exceeded`.
    pub grpc_deadline_exceeded: bool,
    /// gRPC `internal`.
    pub grpc_internal: bool,
    /// gRPC `resource-exhausted`.
    pub grpc_resource_exhausted: bool,
    /// gRPC `unavailable`.
    pub grpc_unavailable: bool,
}

/// A cluster, with Envoy's defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// How endpoints are found.
    pub discovery: Discovery,
    /// Load-balancing policy.
    pub lb: LbPolicy,
    /// `connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// Upstream HTTP protocol.
    pub protocol: UpstreamProtocol,
    /// Default-priority circuit-breaker thresholds.
    pub circuit_breakers: CircuitBreakerThresholds,
    /// Outlier detection, when configured.
    pub outlier_detection: Option<OutlierConfig>,
    /// `common_lb_config.healthy_panic_threshold` in percent (default 50).
    pub panic_threshold: f64,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB): bounds retry buffering.
    pub buffer_limit: u32,
    /// Upstream connection idle timeout (`common_http_protocol_options.idle_timeout`, default 1 h).
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection`, if set.
    pub max_requests_per_connection: Option<u32>,
    /// Per-host `max_connections` (from `circuit_breakers.per_host_thresholds`).
    pub per_host_max_connections: Option<u32>,
    /// Upstream TLS (`transport_socket` `envoy.transport_sockets.tls`); `None` is plaintext.
    pub tls: Option<UpstreamTls>,
}

/// An `UpstreamTlsContext`, with Envoy's defaults resolved. Pure configuration: files are not
/// read and SDS secrets not resolved here (`crate::tls` does that).
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTls {
    /// `sni`: the server name sent in the handshake; `None` sends none (Envoy's default).
    pub sni: Option<String>,
    /// `common_tls_context.alpn_protocols`; empty = by the cluster's protocol (`h2` or
    /// `http/1.1`), as Envoy's connection pools do.
    pub alpn: Vec<String>,
    /// `tls_params.tls_minimum_protocol_version` (client default TLS 1.2).
    pub min_version: TlsVersion,
    /// `tls_params.tls_maximum_protocol_version` (client default TLS 1.2, as Envoy).
    pub max_version: TlsVersion,
    /// The client certificate presented, if any.
    pub certificate: Option<CertificateSource>,
    /// How the server certificate is verified.
    pub validation: ValidationSource,
}

impl UpstreamTls {
    /// The SDS secret names this context references (certificate, then validation context).
    pub fn sds_names(&self) -> impl Iterator<Item = &str> {
        let cert = match &self.certificate {
            Some(CertificateSource::Sds(name)) => Some(name.as_str()),
            _ => None,
        };
        let validation = match &self.validation {
            ValidationSource::Sds { name, .. } => Some(name.as_str()),
            _ => None,
        };
        cert.into_iter().chain(validation)
    }
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Where the client certificate comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum CertificateSource {
    /// `common_tls_context.tls_certificates[0]`.
    Inline(TlsCertificateConfig),
    /// `common_tls_context.tls_certificate_sds_secret_configs[0].name` (over ADS).
    Sds(String),
}

/// A `TlsCertificate`: chain and private key.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsCertificateConfig {
    /// `certificate_chain` (PEM).
    pub chain: DataSource,
    /// `private_key` (PEM).
    pub key: DataSource,
}

/// Envoy's `DataSource`. Inline bytes are never printed (`Debug` shows their length).
#[derive(Clone, PartialEq)]
pub enum DataSource {
    /// `filename`: read when the TLS context is built.
    File(String),
    /// `inline_bytes` or `inline_string`.
    Inline(Vec<u8>),
    /// `environment_variable`: read when the TLS context is built.
    Env(String),
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::File(p) => f.debug_tuple("File").field(p).finish(),
            DataSource::Inline(b) => write!(f, "Inline(<{} bytes>)", b.len()),
            DataSource::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

/// How the upstream certificate is verified.
#[derive(Clone, Debug, PartialEq)]
pub enum ValidationSource {
    /// No validation context: the upstream certificate is not verified (Envoy's behaviour).
    None,
    /// `common_tls_context.validation_context`.
    Inline(ValidationContextConfig),
    /// `validation_context_sds_secret_config`, or `combined_validation_context` (whose
    /// `default_validation_context` is merged under the secret's, as Envoy merges them).
    Sds {
        /// The secret name (over ADS).
        name: String,
        /// `combined_validation_context.default_validation_context` (empty otherwise).
        default: ValidationContextConfig,
    },
}

/// A `CertificateValidationContext`, reduced to what is implemented.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValidationContextConfig {
    /// `trusted_ca` (PEM bundle). Without it the upstream certificate is not verified.
    pub trusted_ca: Option<DataSource>,
    /// `match_typed_subject_alt_names` (and the deprecated `match_subject_alt_names`, which
    /// applies to every SAN type): any match passes.
    pub san_matchers: Vec<SanMatcher>,
}

/// One `SubjectAltNameMatcher`.
#[derive(Clone, Debug, PartialEq)]
pub struct SanMatcher {
    /// The SAN type it applies to; `None` (from `match_subject_alt_names`) = DNS, URI, email
    /// and IP alike.
    pub san_type: Option<SanType>,
    /// The string criterion (an IP SAN is matched as its text form).
    pub matcher: HeaderMatchKind,
    /// An `exact` criterion (Envoy matches it against a DNS SAN with wildcard rules).
    pub exact: Option<String>,
}

/// A SAN type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanType {
    /// `DNS`.
    Dns,
    /// `URI` (SPIFFE IDs).
    Uri,
    /// `EMAIL`.
    Email,
    /// `IP_ADDRESS`.
    IpAddress,
}

/// Endpoint discovery of a cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Discovery {
    /// STATIC: endpoints from the inline load assignment.
    Static(Vec<EndpointConfig>),
    /// STRICT_DNS (LOGICAL_DNS treated alike): names resolved periodically.
    StrictDns {
        /// (host, port, weight) per endpoint.
        targets: Vec<DnsTarget>,
        /// `dns_refresh_rate` (default 5 s).
        refresh: Duration,
        /// Prefer IPv4 (`V4_ONLY`/`V4_PREFERRED`), as opposed to AUTO/V6.
        prefer_v4: bool,
    },
    /// EDS: endpoints arrive as a ClusterLoadAssignment named this.
    Eds {
        /// `eds_cluster_config.service_name`, or the cluster name.
        service_name: String,
    },
}

/// One STRICT_DNS target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight (default 1).
    pub weight: u32,
}

/// One endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointConfig {
    /// Address.
    pub address: SocketAddr,
    /// Load-balancing weight (endpoint weight, default 1).
    pub weight: u32,
    /// Locality weight of its locality (default 1).
    pub locality_weight: u32,
    /// Priority (0 is highest).
    pub priority: u32,
    /// Health from EDS.
    pub health: EndpointHealth,
}

/// EDS health status, reduced to what load balancing needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointHealth {
    /// HEALTHY or UNKNOWN: eligible.
    Healthy,
    /// DEGRADED: used only if nothing healthy.
    Degraded,
    /// UNHEALTHY, DRAINING, TIMEOUT: not used.
    Unhealthy,
}

/// Upstream HTTP protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (h2c).
    Http2,
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    /// ROUND_ROBIN (weighted).
    RoundRobin,
    /// LEAST_REQUEST (P2C, weighted).
    LeastRequest,
    /// RANDOM.
    Random,
    /// RING_HASH.
    RingHash {
        /// `minimum_ring_size` (default 1024).
        min_ring_size: u64,
        /// `maximum_ring_size` (default 8M).
        max_ring_size: u64,
    },
    /// MAGLEV (table size 65537).
    Maglev,
}

/// Circuit-breaker thresholds (Envoy defaults 1024/1024/1024/3).
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitBreakerThresholds {
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_pending_requests`.
    pub max_pending_requests: u32,
    /// `max_requests`.
    pub max_requests: u32,
    /// `max_retries`.
    pub max_retries: u32,
    /// `retry_budget`: (budget percent, min retry concurrency); overrides `max_retries`.
    pub retry_budget: Option<(f64, u32)>,
}

impl Default for CircuitBreakerThresholds {
    fn default() -> Self {
        CircuitBreakerThresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

/// Outlier detection with Envoy's defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// `consecutive_5xx` (5).
    pub consecutive_5xx: u32,
    /// `consecutive_gateway_failure` (5).
    pub consecutive_gateway_failure: u32,
    /// `consecutive_local_origin_failure` (5).
    pub consecutive_local_origin_failure: u32,
    /// `interval` (10 s).
    pub interval: Duration,
    /// `base_ejection_time` (30 s).
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (300 s).
    pub max_ejection_time: Duration,
    /// `max_ejection_percent` (10).
    pub max_ejection_percent: u32,
    /// `enforcing_consecutive_5xx` (100).
    pub enforcing_consecutive_5xx: u32,
    /// `enforcing_consecutive_gateway_failure` (0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// `enforcing_consecutive_local_origin_failure` (100).
    pub enforcing_consecutive_local_origin_failure: u32,
    /// `enforcing_success_rate` (100).
    pub enforcing_success_rate: u32,
    /// `success_rate_minimum_hosts` (5).
    pub success_rate_minimum_hosts: u32,
    /// `success_rate_request_volume` (100).
    pub success_rate_request_volume: u32,
    /// `success_rate_stdev_factor` (1900).
    pub success_rate_stdev_factor: u32,
    /// `failure_percentage_threshold` (85).
    pub failure_percentage_threshold: u32,
    /// `enforcing_failure_percentage` (0).
    pub enforcing_failure_percentage: u32,
    /// `failure_percentage_minimum_hosts` (5).
    pub failure_percentage_minimum_hosts: u32,
    /// `failure_percentage_request_volume` (50).
    pub failure_percentage_request_volume: u32,
    /// `split_external_local_origin_errors` (false).
    pub split_external_local_origin_errors: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            split_external_local_origin_errors: false,
        }
    }
}
