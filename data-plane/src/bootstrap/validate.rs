//! Checking a decoded bootstrap against what `legate-proxy` supports (see the table in
//! `mod.rs`) and extracting a [`BootstrapConfig`].

use super::{AdsConfig, BootstrapConfig, BootstrapError, Warning};
use crate::cli::Options;
use legate_proto::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use legate_proto::pb::envoy::config::cluster::v3::Cluster;
use legate_proto::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, Locality, Node, address, api_config_source::ApiType,
    config_source::ConfigSourceSpecifier, grpc_service::TargetSpecifier,
    socket_address::PortSpecifier, socket_address::Protocol,
};
use legate_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use prost::Name;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Envoy's default socket interface: the only one accepted.
const DEFAULT_SOCKET_INTERFACE: &str =
    "envoy.extensions.network.socket_interface.default_socket_interface";

/// The `typed_extension_protocol_options` key for HTTP upstream options.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Collects errors (the first one wins) and warnings with their source.
struct Checker<'a> {
    source: &'a str,
    warnings: &'a mut Vec<Warning>,
}

impl Checker<'_> {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> BootstrapError {
        BootstrapError {
            source: self.source.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A warning when `set`.
    fn warn_if(&mut self, set: bool, field: &str, message: &str) {
        if set {
            self.warn(field, message);
        }
    }

    /// An error when `set`.
    fn reject_if(&self, set: bool, field: &str, message: &str) -> Result<(), BootstrapError> {
        if set {
            Err(self.error(field, message))
        } else {
            Ok(())
        }
    }
}

/// Checks `b`; `source` labels errors. Warnings are appended to `warnings`.
pub(super) fn check(
    b: Bootstrap,
    opts: &Options,
    source: &str,
    warnings: &mut Vec<Warning>,
) -> Result<BootstrapConfig, BootstrapError> {
    let mut c = Checker { source, warnings };
    unsupported(&b, &mut c)?;
    let node = node(b.node.clone().unwrap_or_default(), opts);
    let admin = match &b.admin {
        Some(admin) => self::admin(admin, &mut c)?,
        None => None,
    };
    let statics = b.static_resources.clone().unwrap_or_default();
    static_names(&statics, &c)?;
    let dynamic = b.dynamic_resources.clone().unwrap_or_default();
    c.reject_if(
        !dynamic.cds_resources_locator.is_empty(),
        "dynamic_resources.cds_resources_locator",
        "xdstp:// resource locators are not supported; use cds_config: {ads: {}}",
    )?;
    c.reject_if(
        !dynamic.lds_resources_locator.is_empty(),
        "dynamic_resources.lds_resources_locator",
        "xdstp:// resource locators are not supported; use lds_config: {ads: {}}",
    )?;
    let ads = match &dynamic.ads_config {
        Some(api) => Some(ads_config(api, &statics.clusters, &mut c)?),
        None => None,
    };
    let cds_via_ads = match &dynamic.cds_config {
        Some(cs) => via_ads(cs, "dynamic_resources.cds_config", ads.is_some(), &mut c)?,
        None => false,
    };
    let lds_via_ads = match &dynamic.lds_config {
        Some(cs) => via_ads(cs, "dynamic_resources.lds_config", ads.is_some(), &mut c)?,
        None => false,
    };
    if ads.is_some() {
        // Envoy: "ads: node 'id' and 'cluster' are required".
        c.reject_if(
            node.id.is_empty(),
            "node.id",
            "required with ADS: set it in `node` or with --service-node",
        )?;
        c.reject_if(
            node.cluster.is_empty(),
            "node.cluster",
            "required with ADS: set it in `node` or with --service-cluster",
        )?;
    }
    let mut bootstrap = b;
    bootstrap.node = Some(node.clone());
    Ok(BootstrapConfig {
        node,
        admin,
        static_clusters: statics.clusters,
        static_listeners: statics.listeners,
        ads,
        cds_via_ads,
        lds_via_ads,
        bootstrap,
    })
}

/// The node with the command-line overrides, as Envoy applies them (a non-empty flag wins).
fn node(mut node: Node, opts: &Options) -> Node {
    let set = |flag: &Option<String>| {
        flag.as_deref()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(id) = set(&opts.service_node) {
        node.id = id;
    }
    if let Some(cluster) = set(&opts.service_cluster) {
        node.cluster = cluster;
    }
    if let Some(zone) = set(&opts.service_zone) {
        node.locality.get_or_insert_with(Locality::default).zone = zone;
    }
    node
}

/// Top-level fields outside the supported subset: errors or warnings (see `mod.rs`).
#[allow(deprecated)] // Envoy still reads these fields.
fn unsupported(b: &Bootstrap, c: &mut Checker<'_>) -> Result<(), BootstrapError> {
    const NOT_YET: &str = "not supported yet";
    let statics = b.static_resources.clone().unwrap_or_default();
    c.reject_if(
        !statics.secrets.is_empty(),
        "static_resources.secrets",
        NOT_YET,
    )?;
    c.reject_if(
        !b.certificate_provider_instances.is_empty(),
        "certificate_provider_instances",
        NOT_YET,
    )?;
    c.reject_if(
        !b.header_prefix.is_empty(),
        "header_prefix",
        "not supported: headers keep the `x-envoy-` prefix",
    )?;
    c.reject_if(
        b.dns_resolution_config.is_some(),
        "dns_resolution_config",
        "not supported: STRICT_DNS clusters use the system resolver",
    )?;
    c.reject_if(
        b.typed_dns_resolver_config.is_some(),
        "typed_dns_resolver_config",
        "not supported: STRICT_DNS clusters use the system resolver",
    )?;
    c.reject_if(
        !b.bootstrap_extensions.is_empty(),
        "bootstrap_extensions",
        "not supported",
    )?;
    c.reject_if(
        b.xds_delegate_extension.is_some(),
        "xds_delegate_extension",
        "not supported",
    )?;
    c.reject_if(
        !b.default_socket_interface.is_empty()
            && b.default_socket_interface != DEFAULT_SOCKET_INTERFACE,
        "default_socket_interface",
        "not supported: only Envoy's default socket interface is available",
    )?;
    if let Some(cm) = &b.cluster_manager {
        c.reject_if(
            cm.upstream_bind_config.is_some(),
            "cluster_manager.upstream_bind_config",
            "not supported: upstream connections use the system's source address",
        )?;
        c.warn_if(
            !cm.local_cluster_name.is_empty(),
            "cluster_manager.local_cluster_name",
            "ignored: zone-aware routing is not implemented",
        );
        c.warn_if(
            cm.outlier_detection.is_some(),
            "cluster_manager.outlier_detection",
            "ignored: outlier ejection events are not logged",
        );
        c.warn_if(
            cm.load_stats_config.is_some(),
            "cluster_manager.load_stats_config",
            "ignored: load reports (LRS) are not sent",
        );
        c.warn_if(
            cm.enable_deferred_cluster_creation,
            "cluster_manager.enable_deferred_cluster_creation",
            "ignored",
        );
    }
    let ignored = [
        (!b.node_context_params.is_empty(), "node_context_params"),
        (b.hds_config.is_some(), "hds_config"),
        (!b.flags_path.is_empty(), "flags_path"),
        (!b.stats_sinks.is_empty(), "stats_sinks"),
        (b.deferred_stat_options.is_some(), "deferred_stat_options"),
        (b.stats_config.is_some(), "stats_config"),
        (b.stats_flush_interval.is_some(), "stats_flush_interval"),
        (b.stats_flush.is_some(), "stats_flush_on_admin"),
        (b.stats_eviction.is_some(), "stats_eviction_interval"),
        (
            b.stats_server_version_override.is_some(),
            "stats_server_version_override",
        ),
        (b.enable_dispatcher_stats, "enable_dispatcher_stats"),
        (b.watchdog.is_some(), "watchdog"),
        (b.watchdogs.is_some(), "watchdogs"),
        (b.tracing.is_some(), "tracing"),
        (b.overload_manager.is_some(), "overload_manager"),
        (b.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups"),
        (!b.fatal_actions.is_empty(), "fatal_actions"),
        (!b.config_sources.is_empty(), "config_sources"),
        (b.default_config_source.is_some(), "default_config_source"),
        (!b.inline_headers.is_empty(), "inline_headers"),
        (
            !b.perf_tracing_file_path.is_empty(),
            "perf_tracing_file_path",
        ),
        (b.default_regex_engine.is_some(), "default_regex_engine"),
        (
            b.xds_config_tracker_extension.is_some(),
            "xds_config_tracker_extension",
        ),
        (b.listener_manager.is_some(), "listener_manager"),
        (b.application_log_config.is_some(), "application_log_config"),
        (
            b.grpc_async_client_manager_config.is_some(),
            "grpc_async_client_manager_config",
        ),
        (
            b.memory_allocator_manager.is_some(),
            "memory_allocator_manager",
        ),
        (b.enable_worker_cpu_affinity, "enable_worker_cpu_affinity"),
    ];
    for (set, field) in ignored {
        c.warn_if(set, field, "ignored: not supported by legate-proxy");
    }
    // `layered_runtime` is ignored silently.
    Ok(())
}

/// `admin`: the address; the rest is ignored (with warnings) or rejected.
#[allow(deprecated)] // Envoy still reads these fields.
fn admin(admin: &Admin, c: &mut Checker<'_>) -> Result<Option<SocketAddr>, BootstrapError> {
    c.reject_if(
        !admin.allow_paths.is_empty(),
        "admin.allow_paths",
        "not supported: every admin path is served",
    )?;
    c.warn_if(
        !admin.access_log.is_empty(),
        "admin.access_log",
        "ignored: admin requests are not logged",
    );
    c.warn_if(
        !admin.access_log_path.is_empty(),
        "admin.access_log_path",
        "ignored: admin requests are not logged",
    );
    c.warn_if(
        !admin.profile_path.is_empty(),
        "admin.profile_path",
        "ignored: no CPU profiler",
    );
    c.warn_if(
        !admin.socket_options.is_empty(),
        "admin.socket_options",
        "ignored",
    );
    c.warn_if(
        admin.ignore_global_conn_limit,
        "admin.ignore_global_conn_limit",
        "ignored: there is no global connection limit",
    );
    let Some(address) = admin.address.as_ref().and_then(|a| a.address.as_ref()) else {
        return Ok(None);
    };
    let sa = match address {
        address::Address::SocketAddress(sa) => sa,
        address::Address::Pipe(_) => {
            return Err(c.error(
                "admin.address.pipe",
                "unix domain sockets are not supported; use socket_address",
            ));
        }
        address::Address::EnvoyInternalAddress(_) => {
            return Err(c.error(
                "admin.address.envoy_internal_address",
                "not supported; use socket_address",
            ));
        }
    };
    const FIELD: &str = "admin.address.socket_address";
    c.reject_if(
        sa.protocol != Protocol::Tcp as i32,
        &format!("{FIELD}.protocol"),
        "the admin listener is TCP",
    )?;
    c.reject_if(
        !sa.resolver_name.is_empty(),
        &format!("{FIELD}.resolver_name"),
        "custom resolvers are not supported",
    )?;
    c.reject_if(
        !sa.network_namespace_filepath.is_empty(),
        &format!("{FIELD}.network_namespace_filepath"),
        "network namespaces are not supported",
    )?;
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        c.error(
            format!("{FIELD}.address"),
            format!("`{}` is not an IP address", sa.address),
        )
    })?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(port)) => u16::try_from(port).map_err(|_| {
            c.error(
                format!("{FIELD}.port_value"),
                format!("{port} is not a port (0..=65535)"),
            )
        })?,
        Some(PortSpecifier::NamedPort(_)) => {
            return Err(c.error(
                format!("{FIELD}.named_port"),
                "not supported; use port_value",
            ));
        }
        None => {
            return Err(c.error(
                format!("{FIELD}.port_value"),
                "required (0 lets the OS choose)",
            ));
        }
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Cluster names must be non-empty and unique; listener names unique when given.
fn static_names(
    statics: &bootstrap::StaticResources,
    c: &Checker<'_>,
) -> Result<(), BootstrapError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, cluster) in statics.clusters.iter().enumerate() {
        let field = format!("static_resources.clusters[{i}].name");
        c.reject_if(cluster.name.is_empty(), &field, "required")?;
        if let Some(first) = seen.insert(&cluster.name, i) {
            return Err(c.error(
                field,
                format!(
                    "duplicate cluster `{}` (also static_resources.clusters[{first}])",
                    cluster.name
                ),
            ));
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, listener) in statics.listeners.iter().enumerate() {
        if listener.name.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(&listener.name, i) {
            return Err(c.error(
                format!("static_resources.listeners[{i}].name"),
                format!(
                    "duplicate listener `{}` (also static_resources.listeners[{first}])",
                    listener.name
                ),
            ));
        }
    }
    Ok(())
}

/// `dynamic_resources.ads_config`.
fn ads_config(
    api: &ApiConfigSource,
    clusters: &[Cluster],
    c: &mut Checker<'_>,
) -> Result<AdsConfig, BootstrapError> {
    const FIELD: &str = "dynamic_resources.ads_config";
    let delta = match ApiType::try_from(api.api_type) {
        Ok(ApiType::Grpc) => false,
        Ok(ApiType::DeltaGrpc) => true,
        #[allow(deprecated)]
        Ok(ApiType::DeprecatedAndUnavailableDoNotUse) => {
            return Err(c.error(format!("{FIELD}.api_type"), "required: GRPC or DELTA_GRPC"));
        }
        Ok(other) => {
            return Err(c.error(
                format!("{FIELD}.api_type"),
                format!(
                    "{} is not supported (use GRPC or DELTA_GRPC)",
                    other.as_str_name()
                ),
            ));
        }
        Err(_) => {
            return Err(c.error(
                format!("{FIELD}.api_type"),
                format!("unknown value {}", api.api_type),
            ));
        }
    };
    transport_version(
        api.transport_api_version,
        &format!("{FIELD}.transport_api_version"),
        c,
    )?;
    c.reject_if(
        !api.cluster_names.is_empty(),
        &format!("{FIELD}.cluster_names"),
        "not used with gRPC: name the cluster in grpc_services[0].envoy_grpc.cluster_name",
    )?;
    c.reject_if(
        !api.config_validators.is_empty(),
        &format!("{FIELD}.config_validators"),
        "not supported",
    )?;
    c.warn_if(
        api.rate_limit_settings.is_some(),
        &format!("{FIELD}.rate_limit_settings"),
        "ignored: discovery requests are not rate limited",
    );
    if api.grpc_services.len() != 1 {
        return Err(c.error(
            format!("{FIELD}.grpc_services"),
            format!(
                "exactly one gRPC service is required (found {})",
                api.grpc_services.len()
            ),
        ));
    }
    let service = &api.grpc_services[0];
    let field = format!("{FIELD}.grpc_services[0]");
    c.reject_if(
        !service.initial_metadata.is_empty(),
        &format!("{field}.initial_metadata"),
        NOT_YET,
    )?;
    c.warn_if(
        service.timeout.is_some(),
        &format!("{field}.timeout"),
        "ignored: the ADS stream has no deadline",
    );
    c.warn_if(
        service.retry_policy.is_some(),
        &format!("{field}.retry_policy"),
        "ignored: the ADS stream reconnects with its own back-off",
    );
    let envoy_grpc = match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(g)) => g,
        Some(TargetSpecifier::GoogleGrpc(_)) => {
            return Err(c.error(
                format!("{field}.google_grpc"),
                "not supported; use envoy_grpc: {cluster_name: <a static cluster>}",
            ));
        }
        None => {
            return Err(c.error(
                format!("{field}.envoy_grpc"),
                "required: envoy_grpc: {cluster_name: <a static cluster>}",
            ));
        }
    };
    let field = format!("{field}.envoy_grpc");
    c.warn_if(
        !envoy_grpc.authority.is_empty(),
        &format!("{field}.authority"),
        "ignored: the cluster name is the :authority",
    );
    c.warn_if(
        envoy_grpc.retry_policy.is_some(),
        &format!("{field}.retry_policy"),
        "ignored: the ADS stream reconnects with its own back-off",
    );
    c.warn_if(
        envoy_grpc.max_receive_message_length.is_some(),
        &format!("{field}.max_receive_message_length"),
        "ignored",
    );
    c.warn_if(
        envoy_grpc.skip_envoy_headers,
        &format!("{field}.skip_envoy_headers"),
        "ignored",
    );
    let name = &envoy_grpc.cluster_name;
    let field = format!("{field}.cluster_name");
    c.reject_if(name.is_empty(), &field, "required")?;
    let Some((index, cluster)) = clusters.iter().enumerate().find(|(_, k)| &k.name == name) else {
        return Err(c.error(
            field,
            format!("`{name}` is not a cluster in static_resources.clusters"),
        ));
    };
    speaks_http2(cluster, index, c)?;
    Ok(AdsConfig {
        cluster_name: name.clone(),
        delta,
        set_node_on_first_message_only: api.set_node_on_first_message_only,
    })
}

const NOT_YET: &str = "not supported yet";

/// `transport_api_version` / `resource_api_version`: V3, or AUTO (unset), which Envoy 1.40
/// reads as V3.
fn transport_version(version: i32, field: &str, c: &Checker<'_>) -> Result<(), BootstrapError> {
    match ApiVersion::try_from(version) {
        Ok(ApiVersion::V3 | ApiVersion::Auto) => Ok(()),
        #[allow(deprecated)]
        Ok(ApiVersion::V2) => Err(c.error(field, "V2 is not supported; use V3")),
        Err(_) => Err(c.error(field, format!("unknown value {version}"))),
    }
}

/// The ADS cluster must speak HTTP/2: gRPC needs it.
#[allow(deprecated)] // Envoy still reads these fields.
fn speaks_http2(cluster: &Cluster, index: usize, c: &Checker<'_>) -> Result<(), BootstrapError> {
    let field = format!("static_resources.clusters[{index}]");
    if cluster.http2_protocol_options.is_some() {
        return Ok(());
    }
    let options = cluster
        .typed_extension_protocol_options
        .iter()
        .find(|(key, any)| {
            key.as_str() == HTTP_PROTOCOL_OPTIONS || any.type_url == HttpProtocolOptions::type_url()
        });
    let need = format!(
        "the ADS cluster `{}` must use HTTP/2 (gRPC): set \
         typed_extension_protocol_options[\"{HTTP_PROTOCOL_OPTIONS}\"]\
         .explicit_http_config.http2_protocol_options",
        cluster.name
    );
    let Some((key, any)) = options else {
        return Err(c.error(field, need));
    };
    let field = format!("{field}.typed_extension_protocol_options[{key:?}]");
    let options: HttpProtocolOptions =
        legate_proto::any::unpack(any).map_err(|e| c.error(field.clone(), format!("{e}")))?;
    let explicit = match options.upstream_protocol_options {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => explicit,
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            return Err(c.error(format!("{field}.auto_config"), need));
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
            return Err(c.error(format!("{field}.use_downstream_protocol_config"), need));
        }
        None => return Err(c.error(field, need)),
    };
    match explicit.protocol_config {
        Some(ProtocolConfig::Http2ProtocolOptions(_)) => Ok(()),
        Some(ProtocolConfig::HttpProtocolOptions(_)) => Err(c.error(
            format!("{field}.explicit_http_config.http_protocol_options"),
            need,
        )),
        Some(ProtocolConfig::Http3ProtocolOptions(_)) => Err(c.error(
            format!("{field}.explicit_http_config.http3_protocol_options"),
            need,
        )),
        None => Err(c.error(format!("{field}.explicit_http_config"), need)),
    }
}

/// `cds_config` / `lds_config`: only `ads: {}` (with an `ads_config`).
fn via_ads(
    cs: &ConfigSource,
    field: &str,
    has_ads: bool,
    c: &mut Checker<'_>,
) -> Result<bool, BootstrapError> {
    let other = match &cs.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => None,
        #[allow(deprecated)]
        Some(ConfigSourceSpecifier::Path(_)) => Some("`path`"),
        Some(ConfigSourceSpecifier::PathConfigSource(_)) => Some("`path_config_source`"),
        Some(ConfigSourceSpecifier::ApiConfigSource(_)) => Some("`api_config_source`"),
        Some(ConfigSourceSpecifier::Self_(_)) => Some("`self`"),
        None => Some("an empty config source"),
    };
    if let Some(other) = other {
        return Err(c.error(
            field,
            format!("only `ads: {{}}` is supported (found {other})"),
        ));
    }
    c.reject_if(!has_ads, field, "`ads` needs dynamic_resources.ads_config")?;
    transport_version(
        cs.resource_api_version,
        &format!("{field}.resource_api_version"),
        c,
    )?;
    c.warn_if(
        cs.initial_fetch_timeout.is_some(),
        &format!("{field}.initial_fetch_timeout"),
        "ignored",
    );
    c.warn_if(
        !cs.authorities.is_empty(),
        &format!("{field}.authorities"),
        "ignored: only for xdstp:// names",
    );
    Ok(true)
}
