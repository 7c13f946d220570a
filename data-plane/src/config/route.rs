//! `RouteConfiguration` → [`RouteTable`], and what the request path asks of it: virtual-host
//! selection, route matching, weighted cluster picks and `prefix_rewrite`.

use super::error::{
    ConfigError, FieldError, Result, Under, duration, opt_duration, positive_duration, reject,
    unsupported,
};
use super::matcher::{header_matcher, route_match};
use super::types::{
    ClusterTarget, DEFAULT_BACKOFF_BASE, DEFAULT_ROUTE_TIMEOUT, ForwardAction, HostRewrite,
    RetryOn, RetryPolicy, RouteAction, RouteEntry, RouteMatcher, RouteTable, VirtualHost,
};
use bytes::Bytes;
use http::{HeaderMap, Method};
use legate_proto::pb::envoy::config::core::v3::{RoutingPriority, data_source};
use legate_proto::pb::envoy::config::route::v3 as pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Envoy's default `max_direct_response_body_size_bytes`.
const DEFAULT_MAX_DIRECT_BODY: u32 = 4096;
/// The retry host predicate we implement.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// Converts an RDS `RouteConfiguration`.
pub fn route_table(rc: &pb::RouteConfiguration) -> std::result::Result<RouteTable, ConfigError> {
    convert_table(rc).map_err(|e| e.into_config("route configuration", &rc.name))
}

/// Converts a route configuration; errors are relative to it (also used for inline
/// `route_config` in listeners).
pub(crate) fn convert_table(rc: &pb::RouteConfiguration) -> Result<RouteTable> {
    reject(rc.vhds.is_some(), "vhds")?;
    reject(
        !rc.internal_only_headers.is_empty(),
        "internal_only_headers",
    )?;
    reject(
        !rc.response_headers_to_add.is_empty(),
        "response_headers_to_add",
    )?;
    reject(
        !rc.response_headers_to_remove.is_empty(),
        "response_headers_to_remove",
    )?;
    reject(
        !rc.request_headers_to_add.is_empty(),
        "request_headers_to_add",
    )?;
    reject(
        !rc.request_headers_to_remove.is_empty(),
        "request_headers_to_remove",
    )?;
    reject(
        !rc.cluster_specifier_plugins.is_empty(),
        "cluster_specifier_plugins",
    )?;
    reject(
        !rc.request_mirror_policies.is_empty(),
        "request_mirror_policies",
    )?;
    reject(
        rc.ignore_port_in_host_matching,
        "ignore_port_in_host_matching",
    )?;
    reject(!rc.vhost_header.is_empty(), "vhost_header")?;
    reject(
        rc.ignore_path_parameters_in_path_matching,
        "ignore_path_parameters_in_path_matching",
    )?;
    reject(
        !rc.typed_per_filter_config.is_empty(),
        "typed_per_filter_config",
    )?;
    reject(!rc.route_specifiers.is_empty(), "route_specifiers")?;
    let body_limit = rc
        .max_direct_response_body_size_bytes
        .map_or(DEFAULT_MAX_DIRECT_BODY, |v| v.value);
    // Envoy rejects a domain that appears twice, in one virtual host or across them.
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut virtual_hosts = Vec::with_capacity(rc.virtual_hosts.len());
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let field = format!("virtual_hosts[{i}]");
        for (j, d) in vh.domains.iter().enumerate() {
            if let Some(other) = seen.insert(d.to_ascii_lowercase(), &vh.name) {
                return Err(FieldError::new(
                    format!("{field}.domains[{j}]"),
                    format!("duplicate domain `{d}` (also in virtual host `{other}`)"),
                ));
            }
        }
        virtual_hosts.push(virtual_host(vh, body_limit).under(&field)?);
    }
    Ok(RouteTable {
        name: rc.name.clone(),
        virtual_hosts,
    })
}

fn virtual_host(vh: &pb::VirtualHost, body_limit: u32) -> Result<VirtualHost> {
    if vh.name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    if vh.domains.is_empty() {
        return Err(FieldError::new(
            "domains",
            "at least one domain is required",
        ));
    }
    reject(vh.matcher.is_some(), "matcher")?;
    reject(
        vh.require_tls != pb::virtual_host::TlsRequirementType::None as i32,
        "require_tls",
    )?;
    reject(!vh.rate_limits.is_empty(), "rate_limits")?;
    reject(
        !vh.request_headers_to_add.is_empty(),
        "request_headers_to_add",
    )?;
    reject(
        !vh.request_headers_to_remove.is_empty(),
        "request_headers_to_remove",
    )?;
    reject(
        !vh.response_headers_to_add.is_empty(),
        "response_headers_to_add",
    )?;
    reject(
        !vh.response_headers_to_remove.is_empty(),
        "response_headers_to_remove",
    )?;
    #[allow(deprecated)]
    let (cors, buffer) = (
        vh.cors.is_some(),
        vh.per_request_buffer_limit_bytes.is_some(),
    );
    reject(cors, "cors")?;
    reject(buffer, "per_request_buffer_limit_bytes")?;
    reject(
        !vh.typed_per_filter_config.is_empty(),
        "typed_per_filter_config",
    )?;
    reject(
        vh.include_attempt_count_in_response,
        "include_attempt_count_in_response",
    )?;
    reject(
        vh.retry_policy_typed_config.is_some(),
        "retry_policy_typed_config",
    )?;
    reject(vh.hedge_policy.is_some(), "hedge_policy")?;
    reject(
        vh.include_is_timeout_retry_header,
        "include_is_timeout_retry_header",
    )?;
    reject(
        vh.request_body_buffer_limit.is_some(),
        "request_body_buffer_limit",
    )?;
    reject(
        !vh.request_mirror_policies.is_empty(),
        "request_mirror_policies",
    )?;
    reject(!vh.route_specifiers.is_empty(), "route_specifiers")?;
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(j, r)| route(r, body_limit).under(&format!("routes[{j}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes,
        retry_policy: vh
            .retry_policy
            .as_ref()
            .map(retry_policy)
            .transpose()
            .under("retry_policy")?,
        include_attempt_count: vh.include_request_attempt_count,
    })
}

fn route(r: &pb::Route, body_limit: u32) -> Result<RouteEntry> {
    let Some(m) = &r.r#match else {
        return Err(FieldError::new("match", "required"));
    };
    let matcher = route_match("match", m)?;
    reject(
        !r.typed_per_filter_config.is_empty(),
        "typed_per_filter_config",
    )?;
    reject(
        !r.request_headers_to_add.is_empty(),
        "request_headers_to_add",
    )?;
    reject(
        !r.request_headers_to_remove.is_empty(),
        "request_headers_to_remove",
    )?;
    reject(
        !r.response_headers_to_add.is_empty(),
        "response_headers_to_add",
    )?;
    reject(
        !r.response_headers_to_remove.is_empty(),
        "response_headers_to_remove",
    )?;
    #[allow(deprecated)]
    let buffer = r.per_request_buffer_limit_bytes.is_some();
    reject(buffer, "per_request_buffer_limit_bytes")?;
    reject(
        r.request_body_buffer_limit.is_some(),
        "request_body_buffer_limit",
    )?;
    reject(!r.route_specifiers.is_empty(), "route_specifiers")?;
    let action = match &r.action {
        None => {
            return Err(FieldError::new(
                "",
                "an action is required (route or direct_response)",
            ));
        }
        Some(pb::route::Action::Route(a)) => {
            RouteAction::Forward(Arc::new(forward(a).under("route")?))
        }
        Some(pb::route::Action::DirectResponse(d)) => {
            direct_response(d, body_limit).under("direct_response")?
        }
        Some(pb::route::Action::Redirect(_)) => {
            return Err(FieldError::new("redirect", "not supported yet"));
        }
        Some(pb::route::Action::FilterAction(_)) => return Err(unsupported("filter_action")),
        Some(pb::route::Action::NonForwardingAction(_)) => {
            return Err(unsupported("non_forwarding_action"));
        }
    };
    Ok(RouteEntry {
        name: r.name.clone(),
        matcher,
        action,
    })
}

fn direct_response(d: &pb::DirectResponseAction, body_limit: u32) -> Result<RouteAction> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| {
            FieldError::new(
                "status",
                format!("must be between 100 and 599, got {}", d.status),
            )
        })?;
    reject(d.body_format.is_some(), "body_format")?;
    let body = match &d.body {
        None => None,
        Some(ds) => Some(match &ds.specifier {
            Some(data_source::Specifier::InlineString(s)) => Bytes::from(s.clone()),
            Some(data_source::Specifier::InlineBytes(b)) => Bytes::from(b.clone()),
            Some(data_source::Specifier::Filename(_)) => {
                return Err(FieldError::new(
                    "body.filename",
                    "not supported (use inline_string or inline_bytes)",
                ));
            }
            Some(data_source::Specifier::EnvironmentVariable(_)) => {
                return Err(FieldError::new(
                    "body.environment_variable",
                    "not supported (use inline_string or inline_bytes)",
                ));
            }
            None => return Err(FieldError::new("body", "a data source is required")),
        }),
    };
    if let Some(b) = &body
        && b.len() > body_limit as usize
    {
        return Err(FieldError::new(
            "body",
            format!(
                "response body size is {} bytes; maximum is {body_limit}",
                b.len()
            ),
        ));
    }
    Ok(RouteAction::Direct { status, body })
}

fn forward(a: &pb::RouteAction) -> Result<ForwardAction> {
    use pb::route_action::ClusterSpecifier as C;
    use pb::route_action::HostRewriteSpecifier as H;
    let target = match &a.cluster_specifier {
        None => {
            return Err(FieldError::new(
                "",
                "a cluster is required (cluster or weighted_clusters)",
            ));
        }
        Some(C::Cluster(name)) if name.is_empty() => {
            return Err(FieldError::new("cluster", "must not be empty"));
        }
        Some(C::Cluster(name)) => ClusterTarget::Single(name.clone()),
        Some(C::WeightedClusters(w)) => weighted(w).under("weighted_clusters")?,
        Some(C::ClusterHeader(_)) => return Err(unsupported("cluster_header")),
        Some(C::ClusterSpecifierPlugin(_)) => return Err(unsupported("cluster_specifier_plugin")),
        Some(C::InlineClusterSpecifierPlugin(_)) => {
            return Err(unsupported("inline_cluster_specifier_plugin"));
        }
    };
    reject(
        a.cluster_not_found_response_code
            != pb::route_action::ClusterNotFoundResponseCode::ServiceUnavailable as i32,
        "cluster_not_found_response_code",
    )?;
    reject(a.metadata_match.is_some(), "metadata_match")?;
    reject(a.regex_rewrite.is_some(), "regex_rewrite")?;
    reject(a.path_rewrite_policy.is_some(), "path_rewrite_policy")?;
    reject(!a.path_rewrite.is_empty(), "path_rewrite")?;
    reject(a.append_x_forwarded_host, "append_x_forwarded_host")?;
    reject(a.flush_timeout.is_some(), "flush_timeout")?;
    reject(
        a.retry_policy_typed_config.is_some(),
        "retry_policy_typed_config",
    )?;
    reject(
        !a.request_mirror_policies.is_empty(),
        "request_mirror_policies",
    )?;
    reject(a.priority != RoutingPriority::Default as i32, "priority")?;
    reject(!a.rate_limits.is_empty(), "rate_limits")?;
    #[allow(deprecated)]
    {
        reject(a.cors.is_some(), "cors")?;
        reject(a.max_grpc_timeout.is_some(), "max_grpc_timeout")?;
        reject(a.grpc_timeout_offset.is_some(), "grpc_timeout_offset")?;
        reject(
            a.internal_redirect_action
                != pb::route_action::InternalRedirectAction::PassThroughInternalRedirect as i32,
            "internal_redirect_action",
        )?;
    }
    reject(!a.upgrade_configs.is_empty(), "upgrade_configs")?;
    reject(
        a.internal_redirect_policy.is_some(),
        "internal_redirect_policy",
    )?;
    reject(a.hedge_policy.is_some(), "hedge_policy")?;
    reject(
        a.max_stream_duration.as_ref().is_some_and(|m| {
            m.max_stream_duration.is_some()
                || m.grpc_timeout_header_max.is_some()
                || m.grpc_timeout_header_offset.is_some()
        }),
        "max_stream_duration",
    )?;
    let host_rewrite = match &a.host_rewrite_specifier {
        None => HostRewrite::None,
        Some(H::HostRewriteLiteral(h)) if h.is_empty() => HostRewrite::None,
        Some(H::HostRewriteLiteral(h)) => HostRewrite::Literal(h.clone()),
        Some(H::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
        Some(H::AutoHostRewrite(_)) => HostRewrite::None,
        Some(H::HostRewriteHeader(_)) => return Err(unsupported("host_rewrite_header")),
        Some(H::HostRewritePathRegex(_)) => return Err(unsupported("host_rewrite_path_regex")),
        Some(H::HostRewrite(_)) => return Err(unsupported("host_rewrite")),
    };
    let hash_headers = a
        .hash_policy
        .iter()
        .enumerate()
        .map(|(k, h)| {
            hash_header(h, k + 1 == a.hash_policy.len()).under(&format!("hash_policy[{k}]"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ForwardAction {
        target,
        prefix_rewrite: Some(a.prefix_rewrite.clone()).filter(|p| !p.is_empty()),
        host_rewrite,
        timeout: match &a.timeout {
            None => DEFAULT_ROUTE_TIMEOUT,
            Some(d) => duration("timeout", d)?,
        },
        // `Some(ZERO)` is meaningful: it disables the HCM's stream idle timeout for the route.
        idle_timeout: opt_duration("idle_timeout", a.idle_timeout.as_ref())?,
        retry_policy: a
            .retry_policy
            .as_ref()
            .map(retry_policy)
            .transpose()
            .under("retry_policy")?,
        hash_headers,
    })
}

fn weighted(w: &pb::WeightedCluster) -> Result<ClusterTarget> {
    if w.clusters.is_empty() {
        return Err(FieldError::new(
            "clusters",
            "at least one cluster is required",
        ));
    }
    reject(
        w.random_value_specifier.is_some(),
        match &w.random_value_specifier {
            Some(pb::weighted_cluster::RandomValueSpecifier::HeaderName(_)) => "header_name",
            _ => "use_hash_policy",
        },
    )?;
    let mut clusters = Vec::with_capacity(w.clusters.len());
    let mut total: u64 = 0;
    for (k, c) in w.clusters.iter().enumerate() {
        let f = |name: &str| format!("clusters[{k}].{name}");
        reject(!c.cluster_header.is_empty(), &f("cluster_header"))?;
        if c.name.is_empty() {
            return Err(FieldError::new(f("name"), "must not be empty"));
        }
        let Some(weight) = c.weight else {
            return Err(FieldError::new(f("weight"), "required"));
        };
        reject(c.metadata_match.is_some(), &f("metadata_match"))?;
        reject(
            !c.request_headers_to_add.is_empty(),
            &f("request_headers_to_add"),
        )?;
        reject(
            !c.request_headers_to_remove.is_empty(),
            &f("request_headers_to_remove"),
        )?;
        reject(
            !c.response_headers_to_add.is_empty(),
            &f("response_headers_to_add"),
        )?;
        reject(
            !c.response_headers_to_remove.is_empty(),
            &f("response_headers_to_remove"),
        )?;
        reject(
            !c.typed_per_filter_config.is_empty(),
            &f("typed_per_filter_config"),
        )?;
        reject(
            c.host_rewrite_specifier.is_some(),
            &f("host_rewrite_literal"),
        )?;
        total += u64::from(weight.value);
        clusters.push((c.name.clone(), weight.value));
    }
    if total == 0 {
        return Err(FieldError::new(
            "clusters",
            "the sum of weights must be greater than 0",
        ));
    }
    #[allow(deprecated)]
    if let Some(t) = w.total_weight
        && t.value > 0
        && u64::from(t.value) != total
    {
        return Err(FieldError::new(
            "total_weight",
            format!("the weights sum to {total}, not {}", t.value),
        ));
    }
    Ok(ClusterTarget::Weighted(clusters, total))
}

fn hash_header(h: &pb::route_action::HashPolicy, last: bool) -> Result<String> {
    use pb::route_action::hash_policy::PolicySpecifier as P;
    reject(h.terminal && !last, "terminal")?;
    match &h.policy_specifier {
        Some(P::Header(header)) => {
            if header.header_name.is_empty() {
                return Err(FieldError::new("header.header_name", "must not be empty"));
            }
            reject(header.regex_rewrite.is_some(), "header.regex_rewrite")?;
            Ok(header.header_name.to_ascii_lowercase())
        }
        Some(P::Cookie(_)) => Err(unsupported("cookie")),
        Some(P::ConnectionProperties(_)) => Err(unsupported("connection_properties")),
        Some(P::QueryParameter(_)) => Err(unsupported("query_parameter")),
        Some(P::FilterState(_)) => Err(unsupported("filter_state")),
        None => Err(FieldError::new("", "a policy specifier is required")),
    }
}

/// Parses `retry_on`: a comma-separated list (whitespace around names ignored, as Envoy does).
pub(crate) fn retry_on(s: &str) -> std::result::Result<RetryOn, String> {
    let mut on = RetryOn::default();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "5xx" => on.five_xx = true,
            "gateway-error" => on.gateway_error = true,
            "reset" => on.reset = true,
            "reset-before-request" => on.reset_before_request = true,
            "connect-failure" => on.connect_failure = true,
            "retriable-4xx" => on.retriable_4xx = true,
            "refused-stream" => on.refused_stream = true,
            "retriable-status-codes" => on.retriable_status_codes = true,
            "retriable-headers" => on.retriable_headers = true,
            "envoy-ratelimited" => on.envoy_ratelimited = true,
            "cancelled" => on.grpc_cancelled = true,
            "deadline-exceeded" => on.grpc_deadline_exceeded = true,
            "internal" => on.grpc_internal = true,
            "resource-exhausted" => on.grpc_resource_exhausted = true,
            "unavailable" => on.grpc_unavailable = true,
            // HTTP/3 only: no upstream HTTP/3 here, so it can never apply.
            "http3-post-connect-failure" => {}
            other => return Err(format!("unknown retry condition `{other}`")),
        }
    }
    Ok(on)
}

fn retry_policy(p: &pb::RetryPolicy) -> Result<RetryPolicy> {
    let on = retry_on(&p.retry_on).map_err(|m| FieldError::new("retry_on", m))?;
    reject(p.retry_priority.is_some(), "retry_priority")?;
    reject(
        !p.retry_options_predicates.is_empty(),
        "retry_options_predicates",
    )?;
    reject(
        p.rate_limited_retry_back_off.is_some(),
        "rate_limited_retry_back_off",
    )?;
    reject(
        !p.retriable_request_headers.is_empty(),
        "retriable_request_headers",
    )?;
    reject(p.refresh_cluster_on_retry, "refresh_cluster_on_retry")?;
    let mut previous_hosts = false;
    for (k, pred) in p.retry_host_predicate.iter().enumerate() {
        let type_url = match &pred.config_type {
            Some(pb::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => {
                any.type_url.as_str()
            }
            None => "",
        };
        if type_url == PREVIOUS_HOSTS_TYPE || (type_url.is_empty() && pred.name == PREVIOUS_HOSTS) {
            previous_hosts = true;
        } else {
            return Err(FieldError::new(
                format!("retry_host_predicate[{k}]"),
                format!(
                    "`{}` is not supported (only {PREVIOUS_HOSTS})",
                    if type_url.is_empty() {
                        &pred.name
                    } else {
                        type_url
                    }
                ),
            ));
        }
    }
    let (backoff_base, backoff_max) = match &p.retry_back_off {
        None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10),
        Some(b) => {
            let Some(base) = &b.base_interval else {
                return Err(FieldError::new("retry_back_off.base_interval", "required"));
            };
            let base = positive_duration("retry_back_off.base_interval", base)?;
            let max = match &b.max_interval {
                None => base.saturating_mul(10),
                Some(m) => positive_duration("retry_back_off.max_interval", m)?,
            };
            if max < base {
                return Err(FieldError::new(
                    "retry_back_off.max_interval",
                    format!("{max:?} is less than base_interval {base:?}"),
                ));
            }
            (base, max)
        }
    };
    let retriable_headers = p
        .retriable_headers
        .iter()
        .enumerate()
        .map(|(k, h)| header_matcher(&format!("retriable_headers[{k}]"), h))
        .collect::<Result<Vec<_>>>()?;
    // Envoy treats a zero per-try timeout as "none".
    let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
    Ok(RetryPolicy {
        retry_on: on,
        num_retries: p.num_retries.map_or(1, |v| v.value),
        per_try_timeout: nonzero(opt_duration("per_try_timeout", p.per_try_timeout.as_ref())?),
        per_try_idle_timeout: nonzero(opt_duration(
            "per_try_idle_timeout",
            p.per_try_idle_timeout.as_ref(),
        )?),
        // Codes outside u16 can never match a response: dropping them changes nothing.
        retriable_status_codes: p
            .retriable_status_codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        backoff_base,
        backoff_max,
        previous_hosts,
        host_selection_max_attempts: match p.host_selection_retry_max_attempts {
            n if n <= 0 => 1,
            n => u32::try_from(n).unwrap_or(u32::MAX),
        },
        retriable_headers,
    })
}

/// `host` ends with `suffix`, ASCII case-insensitively.
fn ends_with_ci(host: &str, suffix: &str) -> bool {
    host.len()
        .checked_sub(suffix.len())
        .and_then(|start| host.as_bytes().get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
}

/// `host` starts with `prefix`, ASCII case-insensitively.
fn starts_with_ci(host: &str, prefix: &str) -> bool {
    host.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

impl RouteTable {
    /// Envoy's virtual-host selection for an authority (the `Host` header, port included):
    /// exact domain, then the longest matching suffix wildcard (`*.foo.com`, `*-bar.foo.com`),
    /// then the longest matching prefix wildcard (`foo.*`), then `*`. Case-insensitive; a
    /// wildcard must match at least one character. The port is not stripped. An empty
    /// authority goes straight to `*`.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        if authority.is_empty() {
            return self
                .virtual_hosts
                .iter()
                .find(|vh| vh.domains.iter().any(|d| d == "*"));
        }
        let mut suffix: Option<(usize, &VirtualHost)> = None;
        let mut prefix: Option<(usize, &VirtualHost)> = None;
        let mut default: Option<&VirtualHost> = None;
        for vh in &self.virtual_hosts {
            for domain in &vh.domains {
                if domain == "*" {
                    default = default.or(Some(vh));
                } else if let Some(s) = domain.strip_prefix('*') {
                    if s.len() < authority.len()
                        && ends_with_ci(authority, s)
                        && suffix.is_none_or(|(len, _)| s.len() > len)
                    {
                        suffix = Some((s.len(), vh));
                    }
                } else if let Some(p) = domain.strip_suffix('*') {
                    if p.len() < authority.len()
                        && starts_with_ci(authority, p)
                        && prefix.is_none_or(|(len, _)| p.len() > len)
                    {
                        prefix = Some((p.len(), vh));
                    }
                } else if domain.eq_ignore_ascii_case(authority) {
                    return Some(vh);
                }
            }
        }
        suffix.or(prefix).map(|(_, vh)| vh).or(default)
    }

    /// Envoy's virtual-host selection, then the first route of that virtual host that matches
    /// (path without query string, then header matchers). `None` is Envoy's 404.
    pub fn select(
        &self,
        authority: &str,
        path_and_query: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<(&VirtualHost, &RouteEntry)> {
        let vh = self.virtual_host(authority)?;
        let route = vh.routes.iter().find(|r| {
            r.matcher
                .matches(authority, path_and_query, method, headers)
        })?;
        Some((vh, route))
    }
}

impl ForwardAction {
    /// The upstream path after `prefix_rewrite` for a request matched by `matcher`: the matched
    /// part (the configured prefix or path; the whole path for regex routes) is replaced and the
    /// rest, query string included, is kept. `None` when there is no `prefix_rewrite` (or the
    /// matcher does not match).
    pub fn rewrite_path(&self, matcher: &RouteMatcher, path_and_query: &str) -> Option<String> {
        let rewrite = self.prefix_rewrite.as_deref()?;
        let len = matcher.matched_len(path_and_query)?;
        let rest = path_and_query.get(len..)?;
        let mut out = String::with_capacity(rewrite.len() + rest.len());
        out.push_str(rewrite);
        out.push_str(rest);
        Some(out)
    }
}

impl ClusterTarget {
    /// The cluster for this request: the single cluster, or a weighted pick with `random`
    /// (Envoy's `random % total`, walking the clusters in order). Clusters of weight 0 are
    /// never picked.
    pub fn pick(&self, random: u64) -> &str {
        match self {
            ClusterTarget::Single(name) => name,
            ClusterTarget::Weighted(clusters, total) => {
                if *total == 0 {
                    return clusters.first().map_or("", |(name, _)| name);
                }
                let selected = random % total;
                let mut end = 0u64;
                for (name, weight) in clusters {
                    end += u64::from(*weight);
                    if selected < end {
                        return name;
                    }
                }
                clusters.last().map_or("", |(name, _)| name)
            }
        }
    }

    /// Every cluster this target may pick (for "does the cluster exist" checks).
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        let (single, weighted) = match self {
            ClusterTarget::Single(name) => (Some(name.as_str()), &[][..]),
            ClusterTarget::Weighted(clusters, _) => (None, clusters.as_slice()),
        };
        single
            .into_iter()
            .chain(weighted.iter().map(|(name, _)| name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{HeaderMatchKind, HeaderMatcher, PathMatch};
    use http::HeaderValue;
    use legate_proto::json::from_json;
    use serde_json::{Value, json};

    fn parse(v: Value) -> pb::RouteConfiguration {
        from_json(&v).expect("valid RouteConfiguration JSON")
    }

    fn table(v: Value) -> RouteTable {
        route_table(&parse(v)).expect("valid route configuration")
    }

    fn err(v: Value) -> ConfigError {
        route_table(&parse(v)).expect_err("invalid route configuration")
    }

    /// A table with one virtual host holding `route`.
    fn one_route(route: Value) -> Value {
        json!({"name": "rc", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [route]}]})
    }

    fn forward_of(t: &RouteTable) -> &ForwardAction {
        match &t.virtual_hosts[0].routes[0].action {
            RouteAction::Forward(f) => f,
            other => panic!("expected forward, got {other:?}"),
        }
    }

    fn get(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        t.select(host, path, &Method::GET, &HeaderMap::new())
            .map(|(vh, r)| format!("{}/{}", vh.name, r.name))
    }

    #[test]
    fn defaults_resolved() {
        let t = table(one_route(
            json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}}),
        ));
        assert_eq!(t.name, "rc");
        let vh = &t.virtual_hosts[0];
        assert!(vh.retry_policy.is_none() && !vh.include_attempt_count);
        let r = &vh.routes[0];
        assert!(r.matcher.case_sensitive);
        assert!(matches!(&r.matcher.path, PathMatch::Prefix(p) if p == "/"));
        let f = forward_of(&t);
        assert!(matches!(&f.target, ClusterTarget::Single(c) if c == "a"));
        assert_eq!(f.timeout, Duration::from_secs(15));
        assert_eq!(f.prefix_rewrite, None);
        assert_eq!(f.host_rewrite, HostRewrite::None);
        assert_eq!(f.idle_timeout, None);
        assert!(f.retry_policy.is_none() && f.hash_headers.is_empty());

        let t = table(one_route(json!({"match": {"prefix": "/"}, "route": {
            "cluster": "a", "timeout": "0s", "idle_timeout": "0s", "prefix_rewrite": "/x",
            "host_rewrite_literal": "up.example", "hash_policy": [{"header": {"header_name": "X-User"}}]
        }})));
        let f = forward_of(&t);
        assert_eq!(f.timeout, Duration::ZERO, "0 disables the route timeout");
        assert_eq!(f.idle_timeout, Some(Duration::ZERO));
        assert_eq!(f.prefix_rewrite.as_deref(), Some("/x"));
        assert_eq!(f.host_rewrite, HostRewrite::Literal("up.example".into()));
        assert_eq!(f.hash_headers, vec!["x-user".to_string()]);
        let t = table(one_route(
            json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "auto_host_rewrite": true}}),
        ));
        assert_eq!(forward_of(&t).host_rewrite, HostRewrite::Auto);
    }

    #[test]
    fn retry_policy_defaults_and_parsing() {
        let t = table(json!({"name": "rc", "virtual_hosts": [{
            "name": "vh", "domains": ["*"], "include_request_attempt_count": true,
            "retry_policy": {"retry_on": "5xx"},
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": {
                "retry_on": "gateway-error, connect-failure,retriable-status-codes,reset,reset-before-request,retriable-4xx,refused-stream,retriable-headers,envoy-ratelimited,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
                "num_retries": 4, "per_try_timeout": "0.5s", "per_try_idle_timeout": "2s",
                "retriable_status_codes": [503, 409],
                "retry_back_off": {"base_interval": "0.1s"},
                "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                "host_selection_retry_max_attempts": 3,
                "retriable_headers": [{"name": "X-Retry", "present_match": true}]
            }}}]
        }]}));
        let vh = &t.virtual_hosts[0];
        assert!(vh.include_attempt_count);
        assert_eq!(
            vh.retry_policy,
            Some(RetryPolicy {
                retry_on: RetryOn {
                    five_xx: true,
                    ..Default::default()
                },
                num_retries: 1,
                per_try_timeout: None,
                per_try_idle_timeout: None,
                retriable_status_codes: vec![],
                backoff_base: Duration::from_millis(25),
                backoff_max: Duration::from_millis(250),
                previous_hosts: false,
                host_selection_max_attempts: 1,
                retriable_headers: vec![],
            })
        );
        let rp = forward_of(&t).retry_policy.clone().expect("route policy");
        assert_eq!(
            rp.retry_on,
            RetryOn {
                five_xx: false,
                gateway_error: true,
                reset: true,
                reset_before_request: true,
                connect_failure: true,
                retriable_4xx: true,
                refused_stream: true,
                retriable_status_codes: true,
                retriable_headers: true,
                envoy_ratelimited: true,
                grpc_cancelled: true,
                grpc_deadline_exceeded: true,
                grpc_internal: true,
                grpc_resource_exhausted: true,
                grpc_unavailable: true,
            }
        );
        assert_eq!(rp.num_retries, 4);
        assert_eq!(rp.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(rp.per_try_idle_timeout, Some(Duration::from_secs(2)));
        assert_eq!(rp.retriable_status_codes, vec![503, 409]);
        assert_eq!(rp.backoff_base, Duration::from_millis(100));
        assert_eq!(rp.backoff_max, Duration::from_secs(1));
        assert!(rp.previous_hosts);
        assert_eq!(rp.host_selection_max_attempts, 3);
        assert_eq!(
            rp.retriable_headers,
            vec![HeaderMatcher {
                name: "x-retry".into(),
                kind: HeaderMatchKind::Present(true),
                invert: false
            }]
        );
    }

    #[test]
    fn retry_policy_errors() {
        let with = |rp: Value| {
            err(one_route(
                json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": rp}}),
            ))
        };
        let e = with(json!({"retry_on": "5xx,sometimes"}));
        assert_eq!(
            e.field,
            "virtual_hosts[0].routes[0].route.retry_policy.retry_on"
        );
        assert!(e.message.contains("sometimes"), "{e}");
        let e = with(
            json!({"retry_on": "5xx", "retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"}}),
        );
        assert_eq!(
            e.field,
            "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.max_interval"
        );
        let e = with(
            json!({"retry_on": "5xx", "retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]}),
        );
        assert_eq!(
            e.field,
            "virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate[0]"
        );
        let e = with(
            json!({"retry_on": "5xx", "retry_priority": {"name": "envoy.retry_priorities.previous_priorities"}}),
        );
        assert!(e.field.ends_with("retry_policy.retry_priority"), "{e}");
    }

    #[test]
    fn action_errors_name_the_field() {
        let cases = [
            (
                json!({"match": {"prefix": "/"}, "redirect": {"path_redirect": "/x"}}),
                "virtual_hosts[0].routes[0].redirect",
            ),
            (
                json!({"match": {"prefix": "/"}, "route": {"cluster_header": "x-cluster"}}),
                "virtual_hosts[0].routes[0].route.cluster_header",
            ),
            (
                json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}}}),
                "virtual_hosts[0].routes[0].route.regex_rewrite",
            ),
            (
                json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "host_rewrite_header": "x"}}),
                "virtual_hosts[0].routes[0].route.host_rewrite_header",
            ),
            (
                json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "hash_policy": [{"cookie": {"name": "c"}}]}}),
                "virtual_hosts[0].routes[0].route.hash_policy[0].cookie",
            ),
            (
                json!({"match": {"prefix": "/", "query_parameters": [{"name": "q", "present_match": true}]}, "route": {"cluster": "a"}}),
                "virtual_hosts[0].routes[0].match.query_parameters",
            ),
            (
                json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 0}]}}}),
                "virtual_hosts[0].routes[0].route.weighted_clusters.clusters",
            ),
            (
                json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [{"name": "a"}]}}}),
                "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].weight",
            ),
            (
                json!({"match": {"prefix": "/"}, "direct_response": {"status": 700}}),
                "virtual_hosts[0].routes[0].direct_response.status",
            ),
            (
                json!({"match": {"prefix": "/"}}),
                "virtual_hosts[0].routes[0]",
            ),
            (
                json!({"route": {"cluster": "a"}}),
                "virtual_hosts[0].routes[0].match",
            ),
        ];
        for (r, field) in cases {
            let e = err(one_route(r));
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.kind, "route configuration");
            assert_eq!(e.name, "rc");
        }
        let e = err(one_route(
            json!({"match": {"prefix": "/"}, "redirect": {"path_redirect": "/x"}}),
        ));
        assert_eq!(
            e.to_string(),
            "route configuration `rc`: virtual_hosts[0].routes[0].redirect: not supported yet"
        );
    }

    #[test]
    fn direct_response() {
        let t = table(one_route(
            json!({"match": {"path": "/health"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}),
        ));
        match &t.virtual_hosts[0].routes[0].action {
            RouteAction::Direct { status, body } => {
                assert_eq!(*status, 200);
                assert_eq!(body.as_deref(), Some(&b"ok"[..]));
            }
            other => panic!("{other:?}"),
        }
        let t = table(one_route(
            json!({"match": {"path": "/x"}, "direct_response": {"status": 404, "body": {"inline_bytes": "aGk="}}}),
        ));
        assert!(
            matches!(&t.virtual_hosts[0].routes[0].action, RouteAction::Direct { status: 404, body: Some(b) } if b.as_ref() == b"hi")
        );
        let big = "x".repeat(5000);
        let e = err(one_route(
            json!({"match": {"path": "/x"}, "direct_response": {"status": 200, "body": {"inline_string": big}}}),
        ));
        assert_eq!(e.field, "virtual_hosts[0].routes[0].direct_response.body");
        let e = err(one_route(
            json!({"match": {"path": "/x"}, "direct_response": {"status": 200, "body": {"filename": "/etc/x"}}}),
        ));
        assert_eq!(
            e.field,
            "virtual_hosts[0].routes[0].direct_response.body.filename"
        );
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let t = table(one_route(
            json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                {"name": "a", "weight": 1}, {"name": "zero", "weight": 0}, {"name": "b", "weight": 3}
            ]}}}),
        ));
        let target = &forward_of(&t).target;
        assert!(matches!(target, ClusterTarget::Weighted(_, 4)));
        assert_eq!(target.pick(0), "a");
        assert_eq!(target.pick(1), "b");
        assert_eq!(target.pick(3), "b");
        assert_eq!(target.pick(4), "a");
        let mut counts: HashMap<&str, u64> = HashMap::new();
        // A cheap deterministic spread of random values (an LCG).
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..40_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *counts.entry(target.pick(x >> 11)).or_default() += 1;
        }
        assert_eq!(counts.get("zero"), None);
        let a = counts["a"] as f64;
        let b = counts["b"] as f64;
        assert!((a / 40_000.0 - 0.25).abs() < 0.02, "a={a} b={b}");
        assert!((b / 40_000.0 - 0.75).abs() < 0.02, "a={a} b={b}");
        assert_eq!(
            target.clusters().collect::<Vec<_>>(),
            vec!["a", "zero", "b"]
        );
        assert_eq!(ClusterTarget::Single("s".into()).pick(99), "s");
    }

    #[test]
    fn domain_precedence() {
        let rc = json!({"name": "rc", "virtual_hosts": [
            {"name": "default", "domains": ["*"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
            {"name": "prefix", "domains": ["foo.*"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
            {"name": "longer-prefix", "domains": ["foo.bar.*"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
            {"name": "suffix", "domains": ["*.com"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
            {"name": "longer-suffix", "domains": ["*-bar.foo.com", "*.foo.com"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
            {"name": "exact", "domains": ["foo.com", "Foo.Com:8080"], "routes": [{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "c"}}]}
        ]});
        let t = table(rc);
        let vh = |h: &str| t.virtual_host(h).map(|v| v.name.as_str());
        assert_eq!(vh("foo.com"), Some("exact"));
        assert_eq!(vh("FOO.COM"), Some("exact"));
        assert_eq!(vh("foo.com:8080"), Some("exact"));
        assert_eq!(vh("a.foo.com"), Some("longer-suffix"));
        assert_eq!(vh("a-bar.foo.com"), Some("longer-suffix"));
        assert_eq!(vh("x.com"), Some("suffix"));
        // Suffix beats prefix.
        assert_eq!(vh("foo.bar.com"), Some("suffix"));
        assert_eq!(vh("foo.bar.org"), Some("longer-prefix"));
        assert_eq!(vh("foo.org"), Some("prefix"));
        // A wildcard must match at least one character.
        assert_eq!(vh(".com"), Some("default"));
        assert_eq!(vh("foo."), Some("default"));
        // The port is not stripped: `foo.com:9090` is not `foo.com`.
        assert_eq!(vh("foo.com:9090"), Some("prefix"));
        assert_eq!(vh("elsewhere"), Some("default"));
        assert_eq!(vh(""), Some("default"));
        assert_eq!(get(&t, "elsewhere", "/x"), Some("default/r".into()));
    }

    #[test]
    fn no_default_means_no_match_and_duplicates_are_rejected() {
        let t = table(json!({"name": "rc", "virtual_hosts": [
            {"name": "a", "domains": ["a"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}
        ]}));
        assert!(t.virtual_host("b").is_none());
        assert!(
            t.select("b", "/", &Method::GET, &HeaderMap::new())
                .is_none()
        );
        let e = err(json!({"name": "rc", "virtual_hosts": [
            {"name": "a", "domains": ["x.com"]},
            {"name": "b", "domains": ["y.com", "X.com"]}
        ]}));
        assert_eq!(e.field, "virtual_hosts[1].domains[1]");
        assert!(e.message.contains("`a`"), "{e}");
        let e = err(json!({"name": "rc", "virtual_hosts": [{"name": "a", "domains": ["*", "*"]}]}));
        assert_eq!(e.field, "virtual_hosts[0].domains[1]");
        assert_eq!(
            err(json!({"name": "rc", "virtual_hosts": [{"name": "a", "domains": []}]})).field,
            "virtual_hosts[0].domains"
        );
        assert_eq!(
            err(json!({"name": "rc", "virtual_hosts": [{"name": "a", "domains": ["*"], "require_tls": "ALL"}]})).field,
            "virtual_hosts[0].require_tls"
        );
    }

    #[test]
    fn route_order_first_match_wins() {
        let t = table(
            json!({"name": "rc", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [
                {"name": "exact", "match": {"path": "/api"}, "route": {"cluster": "c"}},
                {"name": "api", "match": {"prefix": "/api/"}, "route": {"cluster": "c"}},
                {"name": "shadowed", "match": {"prefix": "/api/v2"}, "route": {"cluster": "c"}},
                {"name": "sep", "match": {"path_separated_prefix": "/docs"}, "route": {"cluster": "c"}},
                {"name": "regex", "match": {"safe_regex": {"regex": "/v[0-9]+/.*"}}, "route": {"cluster": "c"}},
                {"name": "ci", "match": {"prefix": "/CASE", "case_sensitive": false}, "route": {"cluster": "c"}}
            ]}]}),
        );
        assert_eq!(get(&t, "h", "/api?x=1"), Some("vh/exact".into()));
        assert_eq!(get(&t, "h", "/api/v2/x"), Some("vh/api".into()));
        assert_eq!(get(&t, "h", "/docs"), Some("vh/sep".into()));
        assert_eq!(get(&t, "h", "/docs/a"), Some("vh/sep".into()));
        assert_eq!(get(&t, "h", "/docs?q"), Some("vh/sep".into()));
        assert_eq!(get(&t, "h", "/docsx"), None);
        assert_eq!(get(&t, "h", "/v3/x"), Some("vh/regex".into()));
        assert_eq!(get(&t, "h", "/case/y"), Some("vh/ci".into()));
        assert_eq!(get(&t, "h", "/other"), None);
    }

    #[test]
    fn header_matchers_select_routes() {
        let t = table(
            json!({"name": "rc", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [
                {"name": "canary", "match": {"prefix": "/", "headers": [
                    {"name": "x-canary", "string_match": {"exact": "1"}},
                    {"name": ":method", "string_match": {"exact": "GET"}}
                ]}, "route": {"cluster": "canary"}},
                {"name": "not-internal", "match": {"prefix": "/", "headers": [
                    {"name": "x-internal", "present_match": true, "invert_match": true}
                ]}, "route": {"cluster": "public"}},
                {"name": "rest", "match": {"prefix": "/"}, "route": {"cluster": "internal"}}
            ]}]}),
        );
        let pick = |method: Method, headers: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(*k, HeaderValue::from_static(v));
            }
            t.select("h", "/", &method, &map)
                .map(|(_, r)| r.name.clone())
        };
        assert_eq!(
            pick(Method::GET, &[("x-canary", "1")]).as_deref(),
            Some("canary")
        );
        assert_eq!(
            pick(Method::POST, &[("x-canary", "1")]).as_deref(),
            Some("not-internal")
        );
        assert_eq!(pick(Method::GET, &[]).as_deref(), Some("not-internal"));
        assert_eq!(
            pick(Method::GET, &[("x-internal", "yes")]).as_deref(),
            Some("rest")
        );
    }

    #[test]
    fn rewrite_keeps_query() {
        let t = table(
            json!({"name": "rc", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [
                {"match": {"prefix": "/payments/"}, "route": {"cluster": "p", "prefix_rewrite": "/"}},
                {"match": {"path": "/payments"}, "route": {"cluster": "p", "prefix_rewrite": "/"}},
                {"match": {"path_separated_prefix": "/api"}, "route": {"cluster": "p", "prefix_rewrite": "/v2"}},
                {"match": {"prefix": "/CI/", "case_sensitive": false}, "route": {"cluster": "p", "prefix_rewrite": "/ci/"}},
                {"match": {"safe_regex": {"regex": "/re/.*"}}, "route": {"cluster": "p", "prefix_rewrite": "/fixed"}},
                {"match": {"prefix": "/plain"}, "route": {"cluster": "p"}}
            ]}]}),
        );
        let rewrite = |path: &str| {
            let (_, r) = t.select("h", path, &Method::GET, &HeaderMap::new())?;
            match &r.action {
                RouteAction::Forward(f) => f.rewrite_path(&r.matcher, path),
                RouteAction::Direct { .. } => None,
            }
        };
        assert_eq!(
            rewrite("/payments/x/y?a=1&b=2").as_deref(),
            Some("/x/y?a=1&b=2")
        );
        assert_eq!(rewrite("/payments?a=1").as_deref(), Some("/?a=1"));
        assert_eq!(rewrite("/payments").as_deref(), Some("/"));
        assert_eq!(
            rewrite("/api/users?id=3").as_deref(),
            Some("/v2/users?id=3")
        );
        assert_eq!(rewrite("/api?id=3").as_deref(), Some("/v2?id=3"));
        assert_eq!(rewrite("/ci/Thing").as_deref(), Some("/ci/Thing"));
        assert_eq!(rewrite("/re/a/b?q").as_deref(), Some("/fixed?q"));
        assert_eq!(rewrite("/plain/x"), None, "no prefix_rewrite");
    }

    /// The table legate-cp emits for an ambassador with services `payments` and `orders`
    /// (control-plane/src/translate/route.rs), built from Envoy JSON.
    fn legate_cp_table() -> RouteTable {
        let service_vh = |svc: &str| {
            json!({"name": svc, "domains": [svc, format!("{svc}:*")], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": svc, "timeout": "3s",
                    "retry_policy": {"retry_on": "5xx,connect-failure", "num_retries": 2}}}
            ]})
        };
        let catch_all = |svc: &str| {
            vec![
                json!({"match": {"prefix": format!("/{svc}/")}, "route": {"cluster": svc, "prefix_rewrite": "/"}}),
                json!({"match": {"path": format!("/{svc}")}, "route": {"cluster": svc, "prefix_rewrite": "/"}}),
            ]
        };
        let mut routes = vec![
            json!({"match": {"prefix": "/checkout"}, "route": {"weighted_clusters": {"clusters": [
                {"name": "payments", "weight": 90}, {"name": "orders", "weight": 10}
            ]}}}),
        ];
        routes.extend(catch_all("payments"));
        routes.extend(catch_all("orders"));
        table(json!({
            "name": "edge",
            "virtual_hosts": [
                service_vh("payments"),
                service_vh("orders"),
                {"name": "edge", "domains": ["*"], "routes": routes}
            ]
        }))
    }

    #[test]
    fn legate_cp_route_configuration_selects() {
        let t = legate_cp_table();
        let sel = |host: &str, path: &str| {
            t.select(host, path, &Method::GET, &HeaderMap::new())
                .map(|(vh, r)| match &r.action {
                    RouteAction::Forward(f) => (
                        vh.name.clone(),
                        f.target.pick(0).to_string(),
                        f.rewrite_path(&r.matcher, path)
                            .unwrap_or_else(|| path.to_string()),
                    ),
                    RouteAction::Direct { .. } => panic!("no direct responses here"),
                })
        };
        let s = |a: &str, b: &str, c: &str| Some((a.to_string(), b.to_string(), c.to_string()));
        assert_eq!(
            sel("payments", "/anything?x=1"),
            s("payments", "payments", "/anything?x=1")
        );
        assert_eq!(sel("payments:8080", "/x"), s("payments", "payments", "/x"));
        assert_eq!(sel("PAYMENTS:8080", "/x"), s("payments", "payments", "/x"));
        assert_eq!(sel("orders", "/"), s("orders", "orders", "/"));
        assert_eq!(
            sel("edge.local", "/payments/x?y=2"),
            s("edge", "payments", "/x?y=2")
        );
        assert_eq!(sel("edge.local", "/payments"), s("edge", "payments", "/"));
        assert_eq!(
            sel("localhost:10000", "/orders/list"),
            s("edge", "orders", "/list")
        );
        assert_eq!(
            sel("localhost:10000", "/checkout/cart"),
            s("edge", "payments", "/checkout/cart")
        );
        assert_eq!(sel("edge.local", "/nothing"), None);
        assert_eq!(sel("edge.local", "/paymentsx"), None);
        // Per-service policy reached through the service virtual host.
        let (_, r) = t
            .select("payments", "/", &Method::GET, &HeaderMap::new())
            .expect("route");
        let RouteAction::Forward(f) = &r.action else {
            panic!("forward expected")
        };
        assert_eq!(f.timeout, Duration::from_secs(3));
        let rp = f.retry_policy.as_ref().expect("retry policy");
        assert!(rp.retry_on.five_xx && rp.retry_on.connect_failure);
        assert_eq!(rp.num_retries, 2);
    }

    #[test]
    fn legate_cp_translation_round_trips() {
        // The exact RouteConfiguration message shape the control plane builds in Rust.
        use pb::{route, route_action, route_match};
        let r = |p: route_match::PathSpecifier, rewrite: &str| pb::Route {
            r#match: Some(pb::RouteMatch {
                path_specifier: Some(p),
                ..Default::default()
            }),
            action: Some(route::Action::Route(pb::RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("payments".into())),
                prefix_rewrite: rewrite.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let rc = pb::RouteConfiguration {
            name: "amb".into(),
            virtual_hosts: vec![
                pb::VirtualHost {
                    name: "payments".into(),
                    domains: vec!["payments".into(), "payments:*".into()],
                    routes: vec![r(route_match::PathSpecifier::Prefix("/".into()), "")],
                    ..Default::default()
                },
                pb::VirtualHost {
                    name: "amb".into(),
                    domains: vec!["*".into()],
                    routes: vec![
                        r(route_match::PathSpecifier::Prefix("/payments/".into()), "/"),
                        r(route_match::PathSpecifier::Path("/payments".into()), "/"),
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = route_table(&rc).expect("valid");
        let name = |h: &str, p: &str| {
            t.select(h, p, &Method::GET, &HeaderMap::new())
                .map(|(vh, _)| vh.name.clone())
        };
        assert_eq!(name("payments", "/x").as_deref(), Some("payments"));
        assert_eq!(name("payments:8080", "/x").as_deref(), Some("payments"));
        assert_eq!(name("other", "/payments/x").as_deref(), Some("amb"));
        assert_eq!(name("other", "/nothing"), None);
    }
}
