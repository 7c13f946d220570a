//! Envoy v3 bootstrap loading and validation.
//!
//! `legate-proxy` reads the same bootstrap file as Envoy 1.40: `-c` (YAML, JSON or binary
//! `.pb`), with `--config-yaml` merged over it the way Envoy merges it (a protobuf merge:
//! scalars and oneofs in the overlay win, messages merge field by field, lists are appended,
//! maps merge by key). Both are decoded through Envoy's JSON mapping into the typed
//! `Bootstrap` proto, so every Envoy spelling (proto names and camelCase) is accepted and an
//! unknown field is an error naming its path. The result is then checked against the subset
//! `legate-proxy` implements: what it cannot honour and that would change how traffic flows is
//! an error; what only affects observability or tuning is a [`Warning`]; `layered_runtime` is
//! ignored silently.
//!
//! Static clusters and listeners are passed through as Envoy protos: the proxy's `config`
//! module validates them (as it validates ADS resources). Only the ADS cluster is checked
//! here, because it must exist and speak HTTP/2 before anything else can work.
//!
//! # Classification
//!
//! | bootstrap field | handling |
//! |---|---|
//! | `node` | used; `--service-node`/`--service-cluster`/`--service-zone` override `id`/`cluster`/`locality.zone` (as Envoy); `id` and `cluster` are required when ADS is used |
//! | `node_context_params` | warning (only for `xdstp://` names) |
//! | `admin.address` | used: a `socket_address` with an IP literal and `port_value` (0 = any port); `pipe`, `named_port`, `resolver_name`, UDP, a network namespace → error |
//! | `admin.access_log`, `admin.access_log_path`, `admin.profile_path`, `admin.socket_options`, `admin.ignore_global_conn_limit` | warning (ignored) |
//! | `admin.allow_paths` | error (an admin path allow-list cannot be honoured; ignoring it would expose more) |
//! | `static_resources.clusters` | used (validated by the proxy's config module); names must be non-empty and unique |
//! | `static_resources.clusters[*].transport_socket` | raw buffer, or an `UpstreamTlsContext` (`crate::tls`): `tls_certificates` / `validation_context` with `filename`, inline or environment sources, read at startup; SDS references over ADS, except for the ADS cluster itself, whose TLS must be inline (it carries the secrets) |
//! | `static_resources.listeners` | used (validated by the proxy's config module); names must be unique |
//! | `static_resources.secrets`, `certificate_provider_instances` | error: not supported yet |
//! | `dynamic_resources.ads_config` | used: `api_type` `GRPC` or `DELTA_GRPC`, `transport_api_version` `V3` (or unset, which Envoy reads as V3), exactly one `grpc_services` entry with `envoy_grpc` naming a static cluster that speaks HTTP/2; anything else → error |
//! | `ads_config`: `google_grpc`, `initial_metadata`, `config_validators`, `cluster_names` | error |
//! | `ads_config`: `rate_limit_settings`, `grpc_services[0].timeout`/`retry_policy`, `envoy_grpc.authority`/`retry_policy`/`max_receive_message_length`/`skip_envoy_headers` | warning (ignored) |
//! | `ads_config`: `refresh_delay`, `request_timeout` | ignored silently (REST only, as in Envoy) |
//! | `dynamic_resources.cds_config`, `lds_config` | must be `ads: {}` (needs `ads_config`) → anything else is an error; `initial_fetch_timeout`, `authorities` → warning |
//! | `dynamic_resources.cds_resources_locator`, `lds_resources_locator` | error (`xdstp://` not supported) |
//! | `layered_runtime` | ignored silently |
//! | `stats_sinks`, `stats_config`, `stats_flush_interval`, `stats_flush_on_admin`, `stats_eviction_interval`, `stats_server_version_override`, `deferred_stat_options`, `enable_dispatcher_stats` | warning (stats tuning/export) |
//! | `tracing`, `hds_config`, `cluster_manager.load_stats_config`, `cluster_manager.outlier_detection` (event log) | warning (observability/reporting only) |
//! | `cluster_manager.local_cluster_name` | warning (zone-aware routing is not implemented; requests are still served) |
//! | `cluster_manager.enable_deferred_cluster_creation` | warning |
//! | `cluster_manager.upstream_bind_config` | error (source address binding) |
//! | `watchdog`, `watchdogs`, `fatal_actions`, `overload_manager`, `memory_allocator_manager`, `enable_worker_cpu_affinity` | warning (process protection/tuning) |
//! | `flags_path`, `perf_tracing_file_path`, `application_log_config`, `inline_headers`, `default_regex_engine`, `grpc_async_client_manager_config`, `listener_manager`, `xds_config_tracker_extension`, `use_tcp_for_dns_lookups` | warning |
//! | `config_sources`, `default_config_source` | warning (only for `xdstp://` names) |
//! | `header_prefix` | error (would rename every `x-envoy-*` header) |
//! | `dns_resolution_config`, `typed_dns_resolver_config` | error (custom DNS resolvers: the system resolver is used) |
//! | `bootstrap_extensions`, `xds_delegate_extension` | error (extensions that can change behaviour) |
//! | `default_socket_interface` | error unless unset or Envoy's default socket interface |
//!
//! Unknown fields are errors, or warnings with `--allow-unknown-static-fields`.
//! One deliberate divergence: Envoy starts with an ADS cluster that is not HTTP/2 and then
//! never gets a response; `legate-proxy` refuses it up front.

mod locate;
mod source;
mod validate;

#[cfg(test)]
mod tests;

use crate::cli::Options;
use legate_proto::pb::envoy::config::bootstrap::v3::Bootstrap;
use legate_proto::pb::envoy::config::cluster::v3::Cluster;
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::envoy::config::listener::v3::Listener;
use prost::Message;
use std::net::SocketAddr;

/// What the proxy needs from the bootstrap.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// The node sent to the control plane, with `--service-node`, `--service-cluster` and
    /// `--service-zone` applied.
    pub node: Node,
    /// `admin.address` (port 0 = let the OS choose); `None` without an admin address.
    pub admin: Option<SocketAddr>,
    /// `static_resources.clusters`, as written (validated later by the proxy's config module).
    pub static_clusters: Vec<Cluster>,
    /// `static_resources.listeners`, as written (validated later by the proxy's config module).
    pub static_listeners: Vec<Listener>,
    /// `dynamic_resources.ads_config`, if the proxy subscribes over ADS.
    pub ads: Option<AdsConfig>,
    /// `dynamic_resources.cds_config` is `ads: {}`.
    pub cds_via_ads: bool,
    /// `dynamic_resources.lds_config` is `ads: {}`.
    pub lds_via_ads: bool,
    /// The whole bootstrap as Envoy sees it: `--config-yaml` merged over the file, `node`
    /// replaced by [`BootstrapConfig::node`] (for `/config_dump`'s `BootstrapConfigDump`).
    pub bootstrap: Bootstrap,
}

impl BootstrapConfig {
    /// [`BootstrapConfig::bootstrap`] in Envoy's JSON mapping (proto field names, defaults
    /// omitted), as `/config_dump` shows it. Decodes a descriptor pool for the call (a
    /// [`Codec`](legate_proto::json::Codec)): call it once and keep the result.
    pub fn to_json(&self) -> serde_json::Value {
        // Every message here came from the descriptor pool's own types; encoding cannot fail.
        legate_proto::json::Codec::new()
            .to_json(&self.bootstrap)
            .unwrap_or_default()
    }
}

/// `dynamic_resources.ads_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdsConfig {
    /// `grpc_services[0].envoy_grpc.cluster_name`: a static cluster that speaks HTTP/2.
    pub cluster_name: String,
    /// `api_type: DELTA_GRPC` (incremental xDS) rather than `GRPC` (state of the world).
    pub delta: bool,
    /// `set_node_on_first_message_only`: send `node` on the first request of a stream only.
    pub set_node_on_first_message_only: bool,
}

/// Something in the bootstrap that `legate-proxy` ignores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The field's path in the bootstrap, e.g. `admin.access_log`.
    pub field: String,
    /// What happens to it.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a bootstrap was rejected.
///
/// Displayed as `<source>: <field>: <message>`, or `<source>: <message>` when the problem is
/// not in one field, for example:
///
/// ```text
/// bootstrap: dynamic_resources.ads_config.api_type: REST is not supported (use GRPC or DELTA_GRPC)
/// /etc/envoy/bootstrap.yaml: unknown field `statc_resources` (did you mean `static_resources`?)
/// /etc/envoy/bootstrap.yaml:3:1: did not find expected ',' or '}', while parsing a flow mapping …
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapError {
    /// Where the configuration came from: the `-c` path (with `:line:col` for a syntax error),
    /// `--config-yaml`, `<path> + --config-yaml` once both are merged, or `bootstrap` for
    /// [`from_value`].
    pub source: String,
    /// The field's path in the bootstrap, e.g. `dynamic_resources.ads_config.api_type` or
    /// `static_resources.clusters[0]`; empty when the problem is the document as a whole (an
    /// unknown top-level field, a syntax error, no configuration at all).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.field, self.message)
        }
    }
}

impl std::error::Error for BootstrapError {}

/// The source label of [`from_value`] and [`from_proto`].
pub const VALUE_SOURCE: &str = "bootstrap";

/// Loads the bootstrap named by `-c` and/or `--config-yaml` (merged as Envoy merges them), and
/// checks it. Errors name the file (with line and column for a syntax error) and the field.
/// With neither flag (or both empty, as Envoy treats them) it is an error.
pub fn load(opts: &Options) -> Result<(BootstrapConfig, Vec<Warning>), BootstrapError> {
    let path = opts
        .config_path
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty());
    let file = path.map(source::read_file).transpose()?;
    assemble(file, opts)
}

/// Checks a bootstrap already read into Envoy's JSON mapping (as from a YAML or JSON file).
/// `--config-path` is not read; `--config-yaml`, if set, is merged over `value` as [`load`]
/// merges it over the file. Errors have the source [`VALUE_SOURCE`].
pub fn from_value(
    value: serde_json::Value,
    opts: &Options,
) -> Result<(BootstrapConfig, Vec<Warning>), BootstrapError> {
    assemble(
        Some(source::Document::json(VALUE_SOURCE.to_string(), value)),
        opts,
    )
}

/// Checks a typed bootstrap (for example one built by `legate-cp`). `--config-yaml` is not
/// merged; the node flags apply.
pub fn from_proto(
    bootstrap: Bootstrap,
    opts: &Options,
) -> Result<(BootstrapConfig, Vec<Warning>), BootstrapError> {
    let mut warnings = Vec::new();
    let config = validate::check(bootstrap, opts, VALUE_SOURCE, &mut warnings)?;
    Ok((config, warnings))
}

/// Decodes the file (if any) and `--config-yaml` (if any), merges them and checks the result.
fn assemble(
    file: Option<source::Document>,
    opts: &Options,
) -> Result<(BootstrapConfig, Vec<Warning>), BootstrapError> {
    let overlay = opts
        .config_yaml
        .as_deref()
        .filter(|y| !y.trim().is_empty())
        .map(source::read_config_yaml)
        .transpose()?;
    let allow_unknown = opts.allow_unknown_static_fields();
    let mut warnings = Vec::new();
    // The descriptor pool lives for this function only: the proxy does not keep it.
    let codec = legate_proto::json::Codec::new();
    let (bootstrap, label) = match (file, overlay) {
        (None, None) => {
            return Err(BootstrapError {
                source: VALUE_SOURCE.to_string(),
                field: String::new(),
                message: "at least one of --config-path (-c) or --config-yaml is required"
                    .to_string(),
            });
        }
        (Some(doc), None) | (None, Some(doc)) => {
            let bootstrap = doc.decode(&codec, allow_unknown, &mut warnings)?;
            (bootstrap, doc.source)
        }
        (Some(base), Some(overlay)) => {
            let mut bootstrap = base.decode(&codec, allow_unknown, &mut warnings)?;
            let over = overlay.decode(&codec, allow_unknown, &mut warnings)?;
            // Envoy: `bootstrap.MergeFrom(bootstrap_override)`; merging the encoded overlay is
            // the same operation (set scalars and oneofs win, messages merge, lists append).
            bootstrap
                .merge(over.encode_to_vec().as_slice())
                .map_err(|e| BootstrapError {
                    source: format!("{} + {}", base.source, overlay.source),
                    field: String::new(),
                    message: format!("cannot merge --config-yaml: {e}"),
                })?;
            (bootstrap, format!("{} + {}", base.source, overlay.source))
        }
    };
    drop(codec);
    let config = validate::check(bootstrap, opts, &label, &mut warnings)?;
    Ok((config, warnings))
}
