//! `legate-cp bootstrap envoy`: an Envoy v3 bootstrap that takes everything from this control
//! plane over ADS. Built as a typed `Bootstrap` proto, so it is valid by construction, then
//! printed in Envoy's YAML mapping.

use legate_proto::any::pack;
use legate_proto::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use legate_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use legate_proto::pb::envoy::config::core::v3::Address;
use legate_proto::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    Http2ProtocolOptions, Node, SocketAddress, address, api_config_source::ApiType,
    config_source::ConfigSourceSpecifier, grpc_service, socket_address::PortSpecifier,
};
use legate_proto::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use legate_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher::SanType,
};
use legate_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::ExplicitHttpConfig,
    http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use legate_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use legate_proto::pb::google::protobuf::Duration;

/// The static cluster through which Envoy reaches this control plane.
pub const XDS_CLUSTER: &str = "legate_xds";

/// Options of `bootstrap envoy`.
pub struct EnvoyBootstrap {
    /// Ambassador name: becomes `node.cluster`.
    pub node: String,
    /// A unique suffix for `node.id`.
    pub id_suffix: String,
    /// Control-plane xDS address (host:port; a host may be a DNS name).
    pub xds_host: String,
    /// Control-plane xDS port.
    pub xds_port: u16,
    /// Envoy admin address.
    pub admin_host: String,
    /// Envoy admin port (0 lets the OS choose).
    pub admin_port: u16,
    /// Use DELTA_GRPC instead of GRPC.
    pub delta: bool,
    /// Reach the control plane over TLS (a `transport_socket` on the xDS cluster).
    pub xds_tls: Option<XdsClientTls>,
}

/// TLS towards the control plane, as files the data plane reads (`filename` data sources).
#[derive(Clone, Debug, Default)]
pub struct XdsClientTls {
    /// CA that verifies the control plane's certificate (`--xds-tls-ca`).
    pub ca: std::path::PathBuf,
    /// Client certificate and key for mTLS (`--xds-tls-cert`, `--xds-tls-key`).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// SNI sent to the control plane, also required as a DNS SAN of its certificate
    /// (`--xds-sni`).
    pub sni: Option<String>,
}

impl XdsClientTls {
    /// The xDS cluster's transport socket: an `UpstreamTlsContext` with `trusted_ca`, the client
    /// certificate when given, ALPN `h2`, and the SNI (checked as a DNS SAN) when given.
    pub fn transport_socket(&self) -> TransportSocket {
        let file = |p: &std::path::Path| DataSource {
            specifier: Some(data_source::Specifier::Filename(p.display().to_string())),
            ..Default::default()
        };
        let sni = self.sni.clone().unwrap_or_default();
        let context = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: self
                    .client
                    .iter()
                    .map(|(cert, key)| TlsCertificate {
                        certificate_chain: Some(file(cert)),
                        private_key: Some(file(key)),
                        ..Default::default()
                    })
                    .collect(),
                validation_context_type: Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: Some(file(&self.ca)),
                            match_typed_subject_alt_names: self
                                .sni
                                .iter()
                                .map(|name| SubjectAltNameMatcher {
                                    san_type: SanType::Dns as i32,
                                    matcher: Some(StringMatcher {
                                        match_pattern: Some(string_matcher::MatchPattern::Exact(
                                            name.clone(),
                                        )),
                                        ignore_case: false,
                                    }),
                                    oid: String::new(),
                                })
                                .collect(),
                            ..Default::default()
                        },
                    ),
                ),
                alpn_protocols: vec!["h2".to_string()],
                ..Default::default()
            }),
            sni,
            ..Default::default()
        };
        TransportSocket {
            name: crate::translate::TLS_TRANSPORT_SOCKET.to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&context))),
        }
    }
}

fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

impl EnvoyBootstrap {
    /// The bootstrap proto.
    pub fn build(&self) -> Bootstrap {
        let is_ip = self.xds_host.parse::<std::net::IpAddr>().is_ok();
        let discovery = if is_ip {
            cluster::DiscoveryType::Static
        } else {
            cluster::DiscoveryType::StrictDns
        };
        let h2 = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        let xds_cluster = Cluster {
            name: XDS_CLUSTER.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
            connect_timeout: Some(Duration {
                seconds: 1,
                nanos: 0,
            }),
            typed_extension_protocol_options: [(
                crate::translate::HTTP_PROTOCOL_OPTIONS.to_string(),
                pack(&h2),
            )]
            .into_iter()
            .collect(),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: XDS_CLUSTER.into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket(&self.xds_host, self.xds_port)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            transport_socket: self.xds_tls.as_ref().map(XdsClientTls::transport_socket),
            ..Default::default()
        };
        let api_type = if self.delta {
            ApiType::DeltaGrpc
        } else {
            ApiType::Grpc
        };
        Bootstrap {
            node: Some(Node {
                id: format!("{}-{}", self.node, self.id_suffix),
                cluster: self.node.clone(),
                ..Default::default()
            }),
            admin: Some(Admin {
                address: Some(socket(&self.admin_host, self.admin_port)),
                ..Default::default()
            }),
            static_resources: Some(bootstrap::StaticResources {
                clusters: vec![xds_cluster],
                ..Default::default()
            }),
            dynamic_resources: Some(bootstrap::DynamicResources {
                ads_config: Some(ApiConfigSource {
                    api_type: api_type as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    set_node_on_first_message_only: true,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: XDS_CLUSTER.into(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                cds_config: Some(ads()),
                lds_config: Some(ads()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The bootstrap as YAML (Envoy's mapping), with a comment saying how it was made.
    pub fn to_yaml(&self) -> anyhow::Result<String> {
        let json = legate_proto::json::to_json(&self.build())?;
        let yaml = serde_yaml::to_string(&json)?;
        Ok(format!(
            "# Envoy bootstrap for ambassador `{}`, generated by `legate-cp bootstrap envoy`.\n{yaml}",
            self.node
        ))
    }
}
