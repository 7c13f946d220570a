//! The typed, validated service model.
//!
//! Everything the YAML loader (`crate::config`) accepts ends up here, and translation
//! (`crate::translate`) reads nothing else. A value of [`Config`] is always valid: names are
//! resolved, numbers are in range, and every cross-reference points at something that exists.
//!
//! `Option` fields are "the file was silent": translation then leaves the Envoy field unset so that
//! Envoy's own default applies (and legate-proxy applies the same default).

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where a YAML node came from: `file:line:col`, 1-based.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// The file, as the user named it (or as found in the directory).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// The whole configuration: every service and every ambassador.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    /// Services by name. A service name is also its Envoy cluster name.
    pub services: BTreeMap<String, Service>,
    /// Ambassadors (one per application) by name.
    pub ambassadors: BTreeMap<String, Ambassador>,
}

/// One upstream service (an Envoy cluster).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Service {
    /// The service name (the key under `services:`).
    pub name: String,
    /// At least one endpoint.
    pub endpoints: Vec<Endpoint>,
    /// Wire protocol towards the upstream.
    pub protocol: Protocol,
    /// `connect_timeout`; Envoy's default is 5 s.
    #[serde(with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Load-balancing policy; Envoy's default is round robin.
    pub lb: LbPolicy,
    /// Route timeout. `Some(ZERO)` disables it; `None` keeps Envoy's 15 s.
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Retry policy on the routes to this service; `None` means no retries (Envoy's default).
    pub retries: Option<RetryPolicy>,
    /// Circuit-breaker thresholds (default priority).
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Outlier detection; `None` means off, as in Envoy.
    pub outlier_detection: Option<OutlierDetection>,
    /// `common_lb_config.healthy_panic_threshold` in percent, 0–100; Envoy's default is 50.
    pub healthy_panic_threshold: Option<f64>,
    /// Outbound (m)TLS towards the upstream.
    pub tls: Option<Tls>,
    /// Where the service is defined.
    #[serde(skip)]
    pub location: Location,
}

impl Service {
    /// True when any endpoint is a DNS name, which makes the cluster STRICT_DNS.
    pub fn uses_dns(&self) -> bool {
        self.endpoints
            .iter()
            .any(|e| matches!(e.host, Host::Dns(_)))
    }
}

/// The host part of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name, resolved by the data plane (STRICT_DNS).
    Dns(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// IP literal or DNS name.
    pub host: Host,
    /// TCP port.
    pub port: u16,
    /// Load-balancing weight, 1 when unset.
    pub weight: u32,
}

/// Upstream protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 (Envoy's default).
    #[default]
    Http1,
    /// HTTP/2 (h2c, or h2 over TLS).
    Http2,
    /// gRPC: HTTP/2, with gRPC retry names.
    Grpc,
}

impl Protocol {
    /// True for HTTP/2-based protocols.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// Load-balancing policy (Envoy's `Cluster.LbPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// ROUND_ROBIN (Envoy's default).
    #[default]
    RoundRobin,
    /// LEAST_REQUEST (power of two choices).
    LeastRequest,
    /// RANDOM.
    Random,
    /// RING_HASH.
    RingHash,
    /// MAGLEV.
    Maglev,
}

/// Retry policy (Envoy's `RetryPolicy`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// `num_retries`; Envoy's default is 1.
    pub attempts: Option<u32>,
    /// `retry_on` names, as written (validated against Envoy's and gRPC's lists).
    pub on: Vec<String>,
    /// `retriable_status_codes`; non-empty implies `retriable-status-codes` in `retry_on`.
    pub status_codes: Vec<u16>,
    /// `per_try_timeout`.
    #[serde(with = "opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`.
    #[serde(with = "opt_duration")]
    pub per_try_idle_timeout: Option<Duration>,
    /// `retry_host_predicate: [envoy.retry_host_predicates.previous_hosts]`: a retry avoids the
    /// hosts already tried.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts`; Envoy's default is 1. Only with `previous_hosts`.
    pub host_selection_attempts: Option<u32>,
    /// `retriable_headers`; non-empty implies `retriable-headers` in `retry_on`.
    pub retriable_headers: Vec<RetriableHeader>,
    /// `retry_back_off`.
    pub backoff: Option<Backoff>,
    /// Retry budget, set on the cluster's circuit breakers.
    pub budget: Option<RetryBudget>,
}

/// A response header that makes a response retriable (Envoy's `HeaderMatcher`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetriableHeader {
    /// The header name, lower-case.
    pub name: String,
    /// `None`: the header is present (`present_match`); `Some`: its value is exactly this
    /// (`string_match.exact`).
    pub value: Option<String>,
}

/// Exponential backoff between retries (Envoy's `RetryBackOff`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backoff {
    /// `base_interval`.
    #[serde(with = "duration")]
    pub base: Duration,
    /// `max_interval`; Envoy's default is 10 × base.
    #[serde(with = "opt_duration")]
    pub max: Option<Duration>,
}

/// Retry budget (Envoy's `CircuitBreakers.Thresholds.RetryBudget`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryBudget {
    /// `budget_percent`, 0–100; Envoy's default is 20.
    pub percent: Option<f64>,
    /// `min_retry_concurrency`; Envoy's default is 3.
    pub min_concurrency: Option<u32>,
}

/// Circuit-breaker thresholds for the default priority. Unset fields keep Envoy's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CircuitBreaker {
    /// `max_connections` (default 1024).
    pub max_connections: Option<u32>,
    /// `max_pending_requests` (default 1024).
    pub max_pending_requests: Option<u32>,
    /// `max_requests` (default 1024).
    pub max_requests: Option<u32>,
    /// `max_retries` (default 3).
    pub max_retries: Option<u32>,
    /// `per_host_thresholds[].max_connections` (default unlimited); Envoy honours only this
    /// field per host.
    pub max_connections_per_host: Option<u32>,
}

/// Outlier detection (Envoy's `OutlierDetection`). Unset fields keep Envoy's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (default 5).
    pub consecutive_5xx: Option<u32>,
    /// `consecutive_gateway_failure` (default 5). When written, it is also enforced
    /// (`enforcing_consecutive_gateway_failure: 100`) unless `enforcing` says otherwise; Envoy's
    /// default enforcement is 0.
    pub consecutive_gateway_failure: Option<u32>,
    /// `interval` (default 10 s).
    #[serde(with = "opt_duration")]
    pub interval: Option<Duration>,
    /// `base_ejection_time` (default 30 s).
    #[serde(with = "opt_duration")]
    pub base_ejection_time: Option<Duration>,
    /// `max_ejection_time` (default 300 s).
    #[serde(with = "opt_duration")]
    pub max_ejection_time: Option<Duration>,
    /// `max_ejection_percent` (default 10).
    pub max_ejection_percent: Option<u32>,
    /// Success-rate ejection.
    pub success_rate: Option<SuccessRate>,
    /// Failure-percentage ejection. When written, it is also enforced
    /// (`enforcing_failure_percentage: 100`) unless `enforcing` says otherwise; Envoy's default
    /// enforcement is 0.
    pub failure_percentage: Option<FailurePercentage>,
    /// `split_external_local_origin_errors` (default false): count local-origin failures
    /// (connect failures, timeouts, resets) apart from the upstream's own errors.
    pub split_local_origin_errors: bool,
    /// `consecutive_local_origin_failure` (default 5); only with `split_local_origin_errors`.
    pub consecutive_local_origin_failure: Option<u32>,
    /// The `enforcing_*` percentages, where the file sets them.
    pub enforcing: Enforcing,
}

/// Outlier-detection enforcement percentages (0–100): the chance that a detected outlier is
/// actually ejected. `None` keeps the default (Envoy's, or 100 where Legate enforces a written
/// detector; see [`OutlierDetection`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Enforcing {
    /// `enforcing_consecutive_5xx` (Envoy default 100).
    pub consecutive_5xx: Option<u32>,
    /// `enforcing_consecutive_gateway_failure` (Envoy default 0).
    pub consecutive_gateway_failure: Option<u32>,
    /// `enforcing_consecutive_local_origin_failure` (Envoy default 100).
    pub consecutive_local_origin_failure: Option<u32>,
    /// `enforcing_success_rate` (Envoy default 100).
    pub success_rate: Option<u32>,
    /// `enforcing_failure_percentage` (Envoy default 0).
    pub failure_percentage: Option<u32>,
}

/// Success-rate outlier detection settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SuccessRate {
    /// `success_rate_minimum_hosts` (default 5).
    pub minimum_hosts: Option<u32>,
    /// `success_rate_request_volume` (default 100).
    pub request_volume: Option<u32>,
    /// `success_rate_stdev_factor` (default 1900, i.e. 1.9).
    pub stdev_factor: Option<u32>,
}

/// Failure-percentage outlier detection settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FailurePercentage {
    /// `failure_percentage_threshold` (default 85).
    pub threshold: Option<u32>,
    /// `failure_percentage_minimum_hosts` (default 5).
    pub minimum_hosts: Option<u32>,
    /// `failure_percentage_request_volume` (default 50).
    pub request_volume: Option<u32>,
}

/// Outbound TLS settings of a service (Envoy's `UpstreamTlsContext`).
///
/// The loader reads and checks the files, so the model holds their bytes: translation does no
/// I/O, and a rotation (new bytes, same paths) is a model change like any other. Key bytes live in
/// [`PrivateKeyPem`], which neither `Debug` nor `Serialize` ever prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tls {
    /// CA bundle that verifies the upstream; without it the upstream is not verified (as Envoy).
    pub ca: Option<PemFile>,
    /// Client certificate and key, for mTLS.
    pub identity: Option<Identity>,
    /// SNI sent to the upstream; none is sent when unset (as Envoy).
    pub sni: Option<String>,
    /// Accepted subject alternative names of the upstream; any match passes. Needs `ca`.
    pub verify_san: Vec<SanMatcher>,
    /// Lowest TLS version; Envoy's default (TLS 1.2) when unset.
    pub min_version: Option<TlsVersion>,
    /// ALPN protocols offered, in order. Never empty: when the file is silent the loader puts
    /// the service protocol's own (`h2` for http2 and grpc, `http/1.1` for http1).
    pub alpn: Vec<String>,
}

/// A PEM file of certificates, as read by the loader.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The file, resolved against the YAML file's directory.
    pub path: PathBuf,
    /// Its content: one or more `CERTIFICATE` blocks, checked to parse.
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("version", &self.version())
            .finish()
    }
}

impl PemFile {
    /// A content version (xxh3-64 of the bytes, 16 hex digits): changes when the file rotates.
    pub fn version(&self) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&self.pem))
    }
}

impl Serialize for PemFile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PemFile", 2)?;
        st.serialize_field("path", &self.path)?;
        st.serialize_field("version", &self.version())?;
        st.end()
    }
}

/// A client certificate chain and its private key (checked to belong together).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Certificate chain, leaf first.
    pub cert: PemFile,
    /// Private key file; only its path is ever shown.
    pub key: PrivateKeyPem,
}

/// A private key as read from its file. `Debug` and `Serialize` show the path only; the bytes
/// are reachable through [`PrivateKeyPem::expose`], whose callers put them in an SDS secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem {
    path: PathBuf,
    pem: Vec<u8>,
}

impl PrivateKeyPem {
    /// A key read from `path`.
    pub fn new(path: PathBuf, pem: Vec<u8>) -> Self {
        PrivateKeyPem { path, pem }
    }

    /// Where the key was read from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The key's PEM bytes. Only SDS secrets may carry them.
    pub fn expose(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKeyPem")
            .field("path", &self.path)
            .field("pem", &"[redacted]")
            .finish()
    }
}

impl Serialize for PrivateKeyPem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PrivateKeyPem", 1)?;
        st.serialize_field("path", &self.path)?;
        st.end()
    }
}

/// One accepted subject alternative name (Envoy's `SubjectAltNameMatcher` with an exact match).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SanMatcher {
    /// A URI SAN, e.g. a SPIFFE ID `spiffe://example.org/ns/default/sa/payments`.
    Uri(String),
    /// A DNS SAN (a wildcard certificate SAN matches as in Envoy).
    Dns(String),
    /// An IP address SAN.
    Ip(IpAddr),
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// One ambassador: the outbound proxy of one application.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ambassador {
    /// The ambassador name, matched against `node.cluster`, then `node.id`.
    pub name: String,
    /// The listener address the application calls.
    pub listen: SocketAddr,
    /// The services it may call, sorted; every service when the file is silent.
    pub services: Vec<String>,
    /// Explicit routes, tried before the default ones.
    pub routes: Vec<Route>,
    /// `include_request_attempt_count` on every virtual host: send `x-envoy-attempt-count`
    /// upstream (Envoy's default is off).
    pub attempt_count_header: bool,
    /// Where the ambassador is defined.
    #[serde(skip)]
    pub location: Location,
}

/// An explicit route of an ambassador.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    /// How requests are matched.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Where matched requests go.
    pub action: RouteAction,
    /// Replacement for the matched prefix (`prefix_rewrite`).
    pub rewrite: Option<String>,
    /// Where the route is written.
    #[serde(skip)]
    pub location: Location,
}

/// Path match of an explicit route.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMatch {
    /// Path prefix.
    Prefix(String),
    /// Exact path.
    Path(String),
}

/// Target of an explicit route.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// One service.
    Service(String),
    /// Weighted split between services, in file order.
    Split(Vec<(String, u32)>),
}

impl RouteAction {
    /// The services this action sends traffic to.
    pub fn services(&self) -> Vec<&str> {
        match self {
            RouteAction::Service(s) => vec![s.as_str()],
            RouteAction::Split(parts) => parts.iter().map(|(s, _)| s.as_str()).collect(),
        }
    }
}

/// Formats a duration the way the YAML writes it (`250ms`, `2s`, `1m`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let ms = d.as_millis();
    if nanos == 0 {
        "0s".to_string()
    } else if !nanos.is_multiple_of(1_000) {
        format!("{nanos}ns")
    } else if !nanos.is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}
