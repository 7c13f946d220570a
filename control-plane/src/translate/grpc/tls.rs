//! A TLS service as proxyless gRPC clients take it (gRFC A29): the cluster's
//! `UpstreamTlsContext` names certificate provider instances of the client's own bootstrap,
//! never an SDS secret and never inline key material (gRPC has no SDS).
//!
//! - `tls_certificate_provider_instance` when the service has `cert`/`key` (mTLS), and
//!   `validation_context.ca_certificate_provider_instance` always: both the instance
//!   [`CERTIFICATE_PROVIDER`] (`default`) that `legate-cp bootstrap grpc --cert-dir` declares
//!   with the `file_watcher` plugin. The application presents its own certificate and trusts
//!   its own CA: the files the YAML names are the sidecars' (they live where the control plane
//!   runs) and decide only whether the upstream is verified and whether a client certificate
//!   is presented. `certificate_name` stays empty (`file_watcher` ignores it).
//! - `verify_san` → `match_subject_alt_names`, exact matchers: gRPC does not read
//!   `match_typed_subject_alt_names`, and compares each matcher with every SAN of the
//!   upstream's certificate, whatever its type (a DNS wildcard SAN matches as in Envoy).
//! - `sni` → `sni`: clients of gRFC A29 ignore it, clients of gRFC A101 send it.
//! - Left out: `min_version` (gRPC NACKs `tls_params`) and `alpn` (gRPC always speaks h2).
//!
//! gRPC NACKs a TLS context without a CA provider, and cannot leave an upstream unverified, so a
//! service with `tls` but no `ca` is not offered to gRPC clients (see [`unverifiable`]).

use crate::grpc_bootstrap::CERTIFICATE_PROVIDER;
use crate::model::{SanMatcher, Tls};
use crate::translate::TLS_TRANSPORT_SOCKET;
use legate_proto::any::pack;
use legate_proto::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use legate_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

/// Why a TLS service cannot be offered to gRPC clients, if it cannot: without `ca` the YAML
/// asks for an unverified upstream, which gRPC cannot do (it NACKs a context without a CA).
pub fn unverifiable(tls: &Tls) -> Option<&'static str> {
    tls.ca.is_none().then_some(
        "its `tls` has no `ca`: gRPC clients always verify the upstream (gRFC A29), so an \
         unverified TLS upstream is not offered to them",
    )
}

/// The cluster's transport socket for a service with `tls` (and a `ca`).
pub fn transport_socket(tls: &Tls) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            &upstream_tls_context(tls),
        ))),
    }
}

/// The A29 `UpstreamTlsContext` of a TLS service.
pub fn upstream_tls_context(tls: &Tls) -> UpstreamTlsContext {
    #[allow(deprecated)] // gRPC reads only the untyped SAN matchers (gRFC A29).
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(provider()),
        match_subject_alt_names: tls.verify_san.iter().map(san_matcher).collect(),
        ..Default::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: tls.identity.as_ref().map(|_| provider()),
            validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
            ..Default::default()
        }),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn provider() -> CertificateProviderPluginInstance {
    CertificateProviderPluginInstance {
        instance_name: CERTIFICATE_PROVIDER.to_string(),
        certificate_name: String::new(),
    }
}

fn san_matcher(san: &SanMatcher) -> StringMatcher {
    let value = match san {
        SanMatcher::Uri(v) | SanMatcher::Dns(v) => v.clone(),
        SanMatcher::Ip(ip) => ip.to_string(),
    };
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(value)),
        ignore_case: false,
    }
}
