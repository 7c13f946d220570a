//! Service TLS → the cluster's `UpstreamTlsContext` and the SDS `Secret`s it names.
//!
//! Secret naming: every TLS service `<svc>` gets its own secrets, `<svc>/cert` (the client
//! certificate chain and key, when `cert`/`key` are set) and `<svc>/ca` (the trusted CA, when
//! `ca` is set). Names follow the service, not the content, so a rotation changes the secrets'
//! content and versions but never the cluster that names them: clusters keep their version and
//! Envoy keeps its connection pools. Two services with the same files get two secrets with the
//! same bytes; the snapshot cache encodes equal content once, so this costs a name, not a copy.
//! Both are delivered over ADS (`sds_config: { ads: {} }`).
//!
//! The cluster always offers TLS 1.3 (`tls_maximum_protocol_version: TLSv1_3`; Envoy's client
//! default stops at 1.2, rustls' does not), so that Envoy and legate-proxy negotiate alike.

use super::util::ads_config_source;
use crate::model::{SanMatcher, Service, Tls, TlsVersion};
use legate_proto::any::pack;
use legate_proto::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher,
    TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context, secret,
    subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
};
use legate_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

/// The transport socket name Envoy knows TLS by.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The SDS name of a service's client certificate and key: `<svc>/cert`.
pub fn cert_secret_name(service: &str) -> String {
    format!("{service}/cert")
}

/// The SDS name of a service's trusted CA: `<svc>/ca`.
pub fn ca_secret_name(service: &str) -> String {
    format!("{service}/ca")
}

/// The cluster's transport socket, for a service with `tls`.
pub fn transport_socket(svc: &Service, tls: &Tls) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            &upstream_tls_context(svc, tls),
        ))),
    }
}

/// The `UpstreamTlsContext` of a TLS service.
pub fn upstream_tls_context(svc: &Service, tls: &Tls) -> UpstreamTlsContext {
    let mut common = CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: match tls.min_version {
                None => TlsProtocol::TlsAuto,
                Some(TlsVersion::Tls12) => TlsProtocol::TlSv12,
                Some(TlsVersion::Tls13) => TlsProtocol::TlSv13,
            } as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        alpn_protocols: tls.alpn.clone(),
        ..Default::default()
    };
    if tls.identity.is_some() {
        common.tls_certificate_sds_secret_configs = vec![sds(cert_secret_name(&svc.name))];
    }
    if tls.ca.is_some() {
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: tls
                            .verify_san
                            .iter()
                            .map(san_matcher)
                            .collect(),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(ca_secret_name(&svc.name))),
                    ..Default::default()
                },
            ),
        );
    }
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// The secrets a TLS service's cluster names: `<svc>/cert` and `<svc>/ca`, where configured.
pub fn secrets(svc: &Service) -> Vec<Secret> {
    let Some(tls) = &svc.tls else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(id) = &tls.identity {
        out.push(Secret {
            name: cert_secret_name(&svc.name),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&id.cert.pem)),
                private_key: Some(inline(id.key.expose())),
                ..Default::default()
            })),
        });
    }
    if let Some(ca) = &tls.ca {
        out.push(Secret {
            name: ca_secret_name(&svc.name),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(&ca.pem)),
                    ..Default::default()
                },
            )),
        });
    }
    out
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads_config_source()),
    }
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}

fn san_matcher(san: &SanMatcher) -> SubjectAltNameMatcher {
    let (san_type, value) = match san {
        SanMatcher::Uri(v) => (SanType::Uri, v.clone()),
        SanMatcher::Dns(v) => (SanType::Dns, v.clone()),
        // Envoy compares the certificate's IP SAN in its canonical text form, which is also how
        // Rust prints an address (RFC 5952 for IPv6).
        SanMatcher::Ip(ip) => (SanType::IpAddress, ip.to_string()),
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(value)),
            ignore_case: false,
        }),
        oid: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{InitOptions, init};
    use crate::config::load_str;
    use crate::model::Config;
    use legate_proto::any::unpack;
    use legate_proto::pb::envoy::config::cluster::v3::Cluster;
    use legate_proto::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;

    /// Loads `yaml` next to a fresh `certs/` (payments, checkout).
    fn load(yaml: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        init(&InitOptions::new(
            dir.path().join("certs"),
            "example.org",
            &["payments", "checkout"],
        ))
        .unwrap();
        let config = load_str(&dir.path().join("svc.yaml"), yaml).unwrap_or_else(|e| {
            panic!("{}", e.iter().map(ToString::to_string).collect::<String>())
        });
        (dir, config)
    }

    fn tls_context(c: &Cluster) -> UpstreamTlsContext {
        let socket = c.transport_socket.as_ref().expect("transport socket");
        assert_eq!(socket.name, "envoy.transport_sockets.tls");
        match &socket.config_type {
            Some(transport_socket::ConfigType::TypedConfig(any)) => unpack(any).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn is_ads(sds: &SdsSecretConfig) -> bool {
        matches!(
            sds.sds_config
                .as_ref()
                .and_then(|c| c.config_source_specifier.as_ref()),
            Some(ConfigSourceSpecifier::Ads(_))
        )
    }

    const YAML: &str = r#"
services:
  payments:
    endpoints: [127.0.0.1:9001]
    protocol: grpc
    tls:
      ca: certs/ca.pem
      cert: certs/checkout.pem
      key: certs/checkout.key
      sni: payments.internal
      verify_san: [spiffe://example.org/ns/default/sa/payments, payments.internal, "::1"]
      min_version: "1.3"
  ledger:
    endpoints: [127.0.0.1:9002]
    tls: { ca: certs/ca.pem }
  plain:
    endpoints: [127.0.0.1:9003]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
  reports:
    listen: 127.0.0.1:10001
    services: [plain]
"#;

    #[test]
    fn a_tls_service_gets_an_upstream_tls_context_naming_its_sds_secrets() {
        let (_dir, config) = load(YAML);
        let ctx = tls_context(&crate::translate::cluster(&config.services["payments"]));
        assert_eq!(ctx.sni, "payments.internal");
        let common = ctx.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, vec!["h2"]);
        let params = common.tls_params.expect("tls params");
        assert_eq!(
            params.tls_minimum_protocol_version,
            TlsProtocol::TlSv13 as i32
        );
        assert_eq!(
            params.tls_maximum_protocol_version,
            TlsProtocol::TlSv13 as i32
        );
        assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
        let cert = &common.tls_certificate_sds_secret_configs[0];
        assert_eq!(cert.name, "payments/cert");
        assert!(is_ads(cert));
        assert!(common.tls_certificates.is_empty());
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
            common.validation_context_type
        else {
            panic!("expected a combined validation context");
        };
        let ca = combined
            .validation_context_sds_secret_config
            .expect("ca sds");
        assert_eq!(ca.name, "payments/ca");
        assert!(is_ads(&ca));
        let default = combined.default_validation_context.expect("default");
        assert!(default.trusted_ca.is_none(), "the CA comes over SDS only");
        let sans: Vec<(i32, String)> = default
            .match_typed_subject_alt_names
            .iter()
            .map(|m| {
                let matcher = m.matcher.as_ref().expect("matcher");
                assert!(!matcher.ignore_case);
                match &matcher.match_pattern {
                    Some(string_matcher::MatchPattern::Exact(v)) => (m.san_type, v.clone()),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            sans,
            vec![
                (
                    SanType::Uri as i32,
                    "spiffe://example.org/ns/default/sa/payments".to_string()
                ),
                (SanType::Dns as i32, "payments.internal".to_string()),
                (SanType::IpAddress as i32, "::1".to_string()),
            ]
        );
    }

    #[test]
    fn defaults_ca_only_and_plain_services() {
        let (_dir, config) = load(YAML);
        // http1 offers http/1.1; no SNI, no client certificate, no min version.
        let ctx = tls_context(&crate::translate::cluster(&config.services["ledger"]));
        assert_eq!(ctx.sni, "");
        let common = ctx.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, vec!["http/1.1"]);
        assert_eq!(
            common
                .tls_params
                .expect("params")
                .tls_minimum_protocol_version,
            TlsProtocol::TlsAuto as i32
        );
        assert!(common.tls_certificate_sds_secret_configs.is_empty());
        assert!(common.validation_context_type.is_some());
        assert_eq!(secrets(&config.services["ledger"]).len(), 1);
        // No TLS: no transport socket (plaintext), no secrets.
        let plain = crate::translate::cluster(&config.services["plain"]);
        assert!(plain.transport_socket.is_none());
        assert!(secrets(&config.services["plain"]).is_empty());
    }

    #[test]
    fn secrets_carry_the_files_and_go_to_the_ambassadors_that_call_the_service() {
        let (dir, config) = load(YAML);
        let read = |f: &str| std::fs::read(dir.path().join("certs").join(f)).unwrap();
        let got = secrets(&config.services["payments"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "payments/cert");
        let Some(secret::Type::TlsCertificate(tc)) = &got[0].r#type else {
            panic!("{:?}", got[0].name);
        };
        let inline = |d: &Option<DataSource>| match d.as_ref().and_then(|d| d.specifier.as_ref()) {
            Some(data_source::Specifier::InlineBytes(b)) => b.clone(),
            _ => panic!("expected inline bytes"),
        };
        assert_eq!(inline(&tc.certificate_chain), read("checkout.pem"));
        assert_eq!(inline(&tc.private_key), read("checkout.key"));
        assert_eq!(got[1].name, "payments/ca");
        let Some(secret::Type::ValidationContext(vc)) = &got[1].r#type else {
            panic!("{:?}", got[1].name);
        };
        assert_eq!(inline(&vc.trusted_ca), read("ca.pem"));

        let checkout = crate::translate::ambassador(&config, &config.ambassadors["checkout"]);
        let names: Vec<&str> = checkout.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ledger/ca", "payments/cert", "payments/ca"]);
        // Debug of the resources names the secrets but shows no key.
        let debug = format!("{checkout:?}");
        assert!(debug.contains("payments/cert") && !debug.contains("PRIVATE KEY"));
        let reports = crate::translate::ambassador(&config, &config.ambassadors["reports"]);
        assert!(reports.secrets.is_empty());
    }

    #[test]
    fn translation_is_deterministic() {
        let (_dir, config) = load(YAML);
        let amb = &config.ambassadors["checkout"];
        assert_eq!(
            crate::translate::ambassador(&config, amb),
            crate::translate::ambassador(&config, amb)
        );
    }
}
