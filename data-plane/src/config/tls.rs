//! Upstream TLS: the cluster's `transport_socket` (`UpstreamTlsContext`) → [`UpstreamTls`], and
//! SDS `Secret`s → [`SecretConfig`].
//!
//! Pure conversion, like the rest of `config/`: `filename` data sources are kept as paths and
//! SDS references as names; `crate::tls` reads, parses and checks the material. Fields that
//! would change how the upstream is verified or what is presented, and that are not
//! implemented, are errors naming the field; tuning fields are ignored.

use super::ConfigError;
use super::error::{FieldError, Result, Under, reject, unsupported};
use super::matcher::string_matcher;
use super::types::{
    CertificateSource, DataSource, SanMatcher, SanType, TlsCertificateConfig, TlsVersion,
    UpstreamTls, ValidationContextConfig, ValidationSource,
};
use legate_proto::any::unpack;
use legate_proto::pb::envoy::config::core::v3::{
    ConfigSource, DataSource as PbDataSource, TransportSocket, config_source, data_source,
    transport_socket,
};
use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher,
    TlsCertificate, TlsParameters, UpstreamTlsContext, certificate_validation_context,
    common_tls_context, secret, subject_alt_name_matcher, tls_parameters,
};
use legate_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher as sm};

/// The `typed_config` type of Envoy's TLS transport socket for upstreams.
const UPSTREAM_TLS_CONTEXT: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// A cluster's `transport_socket`: `None` for raw buffer, the TLS context for
/// `envoy.transport_sockets.tls`; anything else is an error.
pub(crate) fn upstream_transport_socket(ts: &TransportSocket) -> Result<Option<UpstreamTls>> {
    let any = ts.config_type.as_ref().map(|c| match c {
        transport_socket::ConfigType::TypedConfig(any) => any,
    });
    let type_url = any.map_or("", |a| a.type_url.as_str());
    if type_url == RAW_BUFFER
        || (type_url.is_empty()
            && (ts.name == "envoy.transport_sockets.raw_buffer" || ts.name == "raw_buffer"))
    {
        return Ok(None);
    }
    match any {
        Some(any) if type_url == UPSTREAM_TLS_CONTEXT => {
            let ctx: UpstreamTlsContext =
                unpack(any).map_err(|e| FieldError::new("typed_config", e.to_string()))?;
            upstream_tls(&ctx).under("typed_config").map(Some)
        }
        None if ts.name == "envoy.transport_sockets.tls" || ts.name == "tls" => Err(
            FieldError::new("typed_config", "required (an UpstreamTlsContext)"),
        ),
        _ => {
            let what = if type_url.is_empty() {
                ts.name.as_str()
            } else {
                type_url
            };
            Err(FieldError::new(
                "",
                format!(
                    "transport socket `{what}` is not supported (only raw_buffer and an \
                     UpstreamTlsContext)"
                ),
            ))
        }
    }
}

/// Converts an `UpstreamTlsContext`.
pub(crate) fn upstream_tls(ctx: &UpstreamTlsContext) -> Result<UpstreamTls> {
    reject(ctx.auto_host_sni, "auto_host_sni")?;
    reject(ctx.auto_sni_san_validation, "auto_sni_san_validation")?;
    reject(ctx.allow_renegotiation, "allow_renegotiation")?;
    // `max_session_keys` and `enforce_rsa_key_usage` only tune the client; ignored.
    let sni = if ctx.sni.is_empty() {
        None
    } else {
        if rustls::pki_types::ServerName::try_from(ctx.sni.as_str()).is_err() {
            return Err(FieldError::new(
                "sni",
                format!("`{}` is not a valid server name", ctx.sni),
            ));
        }
        Some(ctx.sni.clone())
    };
    let common = ctx.common_tls_context.clone().unwrap_or_default();
    let (min_version, max_version, alpn, certificate, validation) =
        common_context(&common).under("common_tls_context")?;
    Ok(UpstreamTls {
        sni,
        alpn,
        min_version,
        max_version,
        certificate,
        validation,
    })
}

type Common = (
    TlsVersion,
    TlsVersion,
    Vec<String>,
    Option<CertificateSource>,
    ValidationSource,
);

#[allow(deprecated)]
fn common_context(c: &CommonTlsContext) -> Result<Common> {
    let (min_version, max_version) = tls_params(c.tls_params.as_ref()).under("tls_params")?;
    reject(
        c.tls_certificate_provider_instance.is_some(),
        "tls_certificate_provider_instance",
    )?;
    reject(
        c.tls_certificate_certificate_provider.is_some(),
        "tls_certificate_certificate_provider",
    )?;
    reject(
        c.tls_certificate_certificate_provider_instance.is_some(),
        "tls_certificate_certificate_provider_instance",
    )?;
    reject(
        c.custom_tls_certificate_selector.is_some(),
        "custom_tls_certificate_selector",
    )?;
    reject(c.custom_handshaker.is_some(), "custom_handshaker")?;
    reject(c.key_log.is_some(), "key_log")?;
    let certificate = match (
        c.tls_certificates.as_slice(),
        c.tls_certificate_sds_secret_configs.as_slice(),
    ) {
        ([], []) => None,
        ([cert], []) => Some(CertificateSource::Inline(
            tls_certificate(cert).under("tls_certificates[0]")?,
        )),
        ([], [sds]) => Some(CertificateSource::Sds(
            sds_name(sds).under("tls_certificate_sds_secret_configs[0]")?,
        )),
        ([_, _, ..], _) => {
            return Err(FieldError::new(
                "tls_certificates",
                "only a single TLS certificate is supported in client contexts",
            ));
        }
        (_, [_, _, ..]) => {
            return Err(FieldError::new(
                "tls_certificate_sds_secret_configs",
                "only a single TLS certificate is supported in client contexts",
            ));
        }
        ([_], [_]) => {
            return Err(FieldError::new(
                "tls_certificate_sds_secret_configs",
                "cannot be combined with tls_certificates",
            ));
        }
    };
    use common_tls_context::ValidationContextType as V;
    let validation = match &c.validation_context_type {
        None => ValidationSource::None,
        Some(V::ValidationContext(v)) => {
            ValidationSource::Inline(validation_context(v).under("validation_context")?)
        }
        Some(V::ValidationContextSdsSecretConfig(sds)) => ValidationSource::Sds {
            name: sds_name(sds).under("validation_context_sds_secret_config")?,
            default: ValidationContextConfig::default(),
        },
        Some(V::CombinedValidationContext(combined)) => {
            let field = "combined_validation_context";
            reject(
                combined.validation_context_certificate_provider.is_some(),
                &format!("{field}.validation_context_certificate_provider"),
            )?;
            reject(
                combined
                    .validation_context_certificate_provider_instance
                    .is_some(),
                &format!("{field}.validation_context_certificate_provider_instance"),
            )?;
            let default = validation_context(
                &combined
                    .default_validation_context
                    .clone()
                    .unwrap_or_default(),
            )
            .under(&format!("{field}.default_validation_context"))?;
            let sds = combined
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{field}.validation_context_sds_secret_config"),
                        "required",
                    )
                })?;
            ValidationSource::Sds {
                name: sds_name(sds)
                    .under(&format!("{field}.validation_context_sds_secret_config"))?,
                default,
            }
        }
        Some(V::ValidationContextCertificateProvider(_)) => {
            return Err(unsupported("validation_context_certificate_provider"));
        }
        Some(V::ValidationContextCertificateProviderInstance(_)) => {
            return Err(unsupported(
                "validation_context_certificate_provider_instance",
            ));
        }
    };
    if let ValidationSource::Inline(v) = &validation {
        san_needs_ca(v).under("validation_context")?;
    }
    for (i, p) in c.alpn_protocols.iter().enumerate() {
        if p.is_empty() || p.len() > 255 {
            return Err(FieldError::new(
                format!("alpn_protocols[{i}]"),
                "must be 1 to 255 bytes",
            ));
        }
    }
    Ok((
        min_version,
        max_version,
        c.alpn_protocols.clone(),
        certificate,
        validation,
    ))
}

/// Envoy refuses SAN matchers without a trusted CA (they would verify nothing).
pub(crate) fn san_needs_ca(v: &ValidationContextConfig) -> Result<()> {
    if !v.san_matchers.is_empty() && v.trusted_ca.is_none() {
        return Err(FieldError::new(
            "",
            "SAN-based verification of peer certificates without trusted CA is insecure and not \
             allowed",
        ));
    }
    Ok(())
}

/// `tls_params`: the version range (client defaults TLS 1.2 to TLS 1.2, as Envoy); cipher,
/// curve and signature-algorithm lists are not implemented.
fn tls_params(p: Option<&TlsParameters>) -> Result<(TlsVersion, TlsVersion)> {
    let Some(p) = p else {
        return Ok((TlsVersion::Tls12, TlsVersion::Tls12));
    };
    reject(!p.cipher_suites.is_empty(), "cipher_suites")?;
    reject(!p.ecdh_curves.is_empty(), "ecdh_curves")?;
    reject(!p.signature_algorithms.is_empty(), "signature_algorithms")?;
    reject(!p.compliance_policies.is_empty(), "compliance_policies")?;
    let version = |field: &str, v: i32| -> Result<TlsVersion> {
        use tls_parameters::TlsProtocol as P;
        match P::try_from(v) {
            Ok(P::TlsAuto | P::TlSv12) => Ok(TlsVersion::Tls12),
            Ok(P::TlSv13) => Ok(TlsVersion::Tls13),
            Ok(P::TlSv10 | P::TlSv11) => Err(FieldError::new(
                field,
                "TLS 1.0 and 1.1 are not supported (use TLSv1_2 or TLSv1_3)",
            )),
            Err(_) => Err(FieldError::new(field, format!("unknown value {v}"))),
        }
    };
    Ok((
        version(
            "tls_minimum_protocol_version",
            p.tls_minimum_protocol_version,
        )?,
        version(
            "tls_maximum_protocol_version",
            p.tls_maximum_protocol_version,
        )?,
    ))
}

/// An `SdsSecretConfig`: the name of a secret delivered over ADS.
fn sds_name(s: &SdsSecretConfig) -> Result<String> {
    if s.name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    match s
        .sds_config
        .as_ref()
        .and_then(|c: &ConfigSource| c.config_source_specifier.as_ref())
    {
        Some(config_source::ConfigSourceSpecifier::Ads(_)) => Ok(s.name.clone()),
        None => Err(FieldError::new(
            "sds_config",
            "required (ads: {}): static secrets are not supported",
        )),
        Some(_) => Err(FieldError::new(
            "sds_config",
            "only ADS config sources are supported",
        )),
    }
}

/// A `TlsCertificate` (chain and key).
fn tls_certificate(c: &TlsCertificate) -> Result<TlsCertificateConfig> {
    reject(c.private_key_provider.is_some(), "private_key_provider")?;
    reject(c.password.is_some(), "password")?;
    reject(c.pkcs12.is_some(), "pkcs12")?;
    // `watched_directory` (reload on change), `ocsp_staple` and `signed_certificate_timestamp`
    // (server side) have no effect on a client; ignored.
    let chain = data_source(c.certificate_chain.as_ref()).under("certificate_chain")?;
    let key = data_source(c.private_key.as_ref()).under("private_key")?;
    Ok(TlsCertificateConfig { chain, key })
}

fn data_source(d: Option<&PbDataSource>) -> Result<DataSource> {
    use data_source::Specifier as S;
    match d.and_then(|d| d.specifier.as_ref()) {
        None => Err(FieldError::new("", "required")),
        Some(S::Filename(f)) if f.is_empty() => {
            Err(FieldError::new("filename", "must not be empty"))
        }
        Some(S::Filename(f)) => Ok(DataSource::File(f.clone())),
        Some(S::InlineBytes(b)) => Ok(DataSource::Inline(b.clone())),
        Some(S::InlineString(s)) => Ok(DataSource::Inline(s.clone().into_bytes())),
        Some(S::EnvironmentVariable(v)) => Ok(DataSource::Env(v.clone())),
    }
}

/// A `CertificateValidationContext`.
#[allow(deprecated)]
fn validation_context(v: &CertificateValidationContext) -> Result<ValidationContextConfig> {
    reject(
        v.ca_certificate_provider_instance.is_some(),
        "ca_certificate_provider_instance",
    )?;
    reject(v.system_root_certs.is_some(), "system_root_certs")?;
    reject(
        !v.verify_certificate_spki.is_empty(),
        "verify_certificate_spki",
    )?;
    reject(
        !v.verify_certificate_hash.is_empty(),
        "verify_certificate_hash",
    )?;
    reject(v.crl.is_some(), "crl")?;
    reject(v.allow_expired_certificate, "allow_expired_certificate")?;
    reject(
        v.trust_chain_verification
            != certificate_validation_context::TrustChainVerification::VerifyTrustChain as i32,
        "trust_chain_verification",
    )?;
    reject(
        v.custom_validator_config.is_some(),
        "custom_validator_config",
    )?;
    reject(v.max_verify_depth.is_some(), "max_verify_depth")?;
    // `watched_directory`, `only_verify_leaf_cert_crl` (no CRL), `suppress_client_ca_list`
    // (server side) and `require_signed_certificate_timestamp` (not enforced by Envoy's client
    // either) are ignored.
    let trusted_ca = v
        .trusted_ca
        .as_ref()
        .map(|d| data_source(Some(d)))
        .transpose()
        .under("trusted_ca")?;
    let mut san_matchers = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        san_matchers.push(typed_san(m).under(&format!("match_typed_subject_alt_names[{i}]"))?);
    }
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let field = format!("match_subject_alt_names[{i}]");
        san_matchers.push(SanMatcher {
            san_type: None,
            matcher: string_matcher(&field, m)?,
            exact: exact_of(m),
        });
    }
    Ok(ValidationContextConfig {
        trusted_ca,
        san_matchers,
    })
}

fn exact_of(m: &StringMatcher) -> Option<String> {
    match &m.match_pattern {
        Some(sm::MatchPattern::Exact(s)) => Some(s.clone()),
        _ => None,
    }
}

fn typed_san(m: &SubjectAltNameMatcher) -> Result<SanMatcher> {
    use subject_alt_name_matcher::SanType as T;
    let san_type = match T::try_from(m.san_type) {
        Ok(T::Dns) => SanType::Dns,
        Ok(T::Uri) => SanType::Uri,
        Ok(T::Email) => SanType::Email,
        Ok(T::IpAddress) => SanType::IpAddress,
        Ok(T::OtherName) => return Err(unsupported("san_type")),
        Ok(T::Unspecified) => return Err(FieldError::new("san_type", "required")),
        Err(_) => {
            return Err(FieldError::new(
                "san_type",
                format!("unknown value {}", m.san_type),
            ));
        }
    };
    let Some(matcher) = &m.matcher else {
        return Err(FieldError::new("matcher", "required"));
    };
    Ok(SanMatcher {
        san_type: Some(san_type),
        matcher: string_matcher("matcher", matcher)?,
        exact: exact_of(matcher),
    })
}

/// What an SDS `Secret` carries, converted (material not read or parsed yet).
#[derive(Clone, Debug, PartialEq)]
pub enum SecretConfig {
    /// `tls_certificate`.
    Certificate(TlsCertificateConfig),
    /// `validation_context`.
    Validation(ValidationContextConfig),
    /// A kind the proxy does not use (`session_ticket_keys`, `generic_secret`): accepted, and
    /// an error only if a cluster references it.
    Other(&'static str),
}

/// Converts an SDS `Secret`. Errors read ``secret `name`: field: message``.
pub fn secret(s: &Secret) -> std::result::Result<SecretConfig, ConfigError> {
    let convert = || -> Result<SecretConfig> {
        match &s.r#type {
            None => Err(FieldError::new(
                "type",
                "one of tls_certificate or validation_context is required",
            )),
            Some(secret::Type::TlsCertificate(c)) => Ok(SecretConfig::Certificate(
                tls_certificate(c).under("tls_certificate")?,
            )),
            Some(secret::Type::ValidationContext(v)) => Ok(SecretConfig::Validation(
                validation_context(v).under("validation_context")?,
            )),
            Some(secret::Type::SessionTicketKeys(_)) => {
                Ok(SecretConfig::Other("session_ticket_keys"))
            }
            Some(secret::Type::GenericSecret(_)) => Ok(SecretConfig::Other("generic_secret")),
        }
    };
    convert().map_err(|e| e.into_config("secret", &s.name))
}

impl SanMatcher {
    /// True when `value`, a SAN of type `san_type` (an IP SAN in its text form), satisfies the
    /// matcher. Like Envoy, an `exact` criterion is matched against a DNS SAN with wildcard
    /// rules (`*.example.com` covers `a.example.com`, case-insensitively).
    pub fn matches(&self, san_type: SanType, value: &str) -> bool {
        if self.san_type.is_some_and(|t| t != san_type) {
            return false;
        }
        match (&self.exact, san_type) {
            (Some(exact), SanType::Dns) => dns_name_match(exact, value),
            _ => self.matcher.matches_value(value),
        }
    }
}

/// Envoy's `Utility::dnsNameMatch(dns_name, pattern)`.
pub fn dns_name_match(dns_name: &str, pattern: &str) -> bool {
    let name = dns_name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if name == pattern {
        return true;
    }
    let plen = pattern.len();
    if plen > 1 && pattern.starts_with("*.") && name.len() > plen - 1 {
        let off = name.len() - plen + 1;
        return !name[..off].contains('.') && name[off..] == pattern[1..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_proto::json::from_json;
    use legate_proto::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    use serde_json::{Value, json};

    fn parse(v: Value) -> UpstreamTlsContext {
        from_json(&v).expect("valid UpstreamTlsContext")
    }

    fn ok(v: Value) -> UpstreamTls {
        upstream_tls(&parse(v)).expect("valid")
    }

    fn err(v: Value) -> FieldError {
        upstream_tls(&parse(v)).expect_err("invalid")
    }

    #[test]
    fn sds_context_as_legate_cp_emits_it() {
        let t = ok(json!({
            "sni": "payments.internal",
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [{"name": "checkout/cert", "sds_config": {"ads": {}, "resource_api_version": "V3"}}],
                "combined_validation_context": {
                    "default_validation_context": {"match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": "spiffe://example.org/payments"}},
                        {"san_type": "DNS", "matcher": {"exact": "payments.internal"}}
                    ]},
                    "validation_context_sds_secret_config": {"name": "payments/ca", "sds_config": {"ads": {}}}
                }
            }
        }));
        assert_eq!(t.sni.as_deref(), Some("payments.internal"));
        assert_eq!(t.alpn, vec!["h2".to_string()]);
        assert_eq!(
            (t.min_version, t.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(
            t.certificate,
            Some(CertificateSource::Sds("checkout/cert".into()))
        );
        let ValidationSource::Sds { name, default } = &t.validation else {
            panic!("{:?}", t.validation)
        };
        assert_eq!(name, "payments/ca");
        assert_eq!(default.san_matchers.len(), 2);
        assert_eq!(default.san_matchers[0].san_type, Some(SanType::Uri));
        assert_eq!(
            t.sds_names().collect::<Vec<_>>(),
            ["checkout/cert", "payments/ca"]
        );
    }

    #[test]
    fn inline_context_bootstrap_style() {
        let t = ok(json!({
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": "/etc/c.pem"}, "private_key": {"inline_string": "KEY"}}],
                "validation_context": {"trusted_ca": {"filename": "/etc/ca.pem"}}
            }
        }));
        assert_eq!(t.sni, None);
        assert_eq!(
            (t.min_version, t.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls12)
        );
        assert_eq!(
            t.certificate,
            Some(CertificateSource::Inline(TlsCertificateConfig {
                chain: DataSource::File("/etc/c.pem".into()),
                key: DataSource::Inline(b"KEY".to_vec()),
            }))
        );
        assert!(matches!(
            &t.validation,
            ValidationSource::Inline(v) if v.trusted_ca == Some(DataSource::File("/etc/ca.pem".into()))
        ));
        // The key's bytes never show in Debug output.
        assert!(!format!("{t:?}").contains("KEY"));
        assert_eq!(t.sds_names().count(), 0);
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(json!({"common_tls_context": {"validation_context": {
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "a"}}]
        }}}));
        assert_eq!(e.field, "common_tls_context.validation_context");
        assert!(e.message.contains("without trusted CA"), "{e:?}");
        let e = err(
            json!({"common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "x"}]}}),
        );
        assert_eq!(
            e.field,
            "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config"
        );
        let e =
            err(json!({"common_tls_context": {"tls_params": {"cipher_suites": ["AES128-SHA"]}}}));
        assert_eq!(e.field, "common_tls_context.tls_params.cipher_suites");
        let e = err(
            json!({"common_tls_context": {"tls_params": {"tls_minimum_protocol_version": "TLSv1_0"}}}),
        );
        assert_eq!(
            e.field,
            "common_tls_context.tls_params.tls_minimum_protocol_version"
        );
        let e = err(json!({"common_tls_context": {"validation_context": {
            "trusted_ca": {"filename": "/ca"},
            "match_typed_subject_alt_names": [{"san_type": "OTHER_NAME", "matcher": {"exact": "a"}}]
        }}}));
        assert_eq!(
            e.field,
            "common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type"
        );
        let e = err(json!({"sni": "not a name!"}));
        assert_eq!(e.field, "sni");
        let e = err(json!({"common_tls_context": {"tls_certificates": [
            {"certificate_chain": {"filename": "/a"}, "private_key": {"filename": "/b"}},
            {"certificate_chain": {"filename": "/a"}, "private_key": {"filename": "/b"}}
        ]}}));
        assert_eq!(e.field, "common_tls_context.tls_certificates");
        let e = err(
            json!({"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/a"}}]}}),
        );
        assert_eq!(
            e.field,
            "common_tls_context.tls_certificates[0].private_key"
        );
    }

    #[test]
    fn san_matching_follows_envoy() {
        let m = |t: Option<SanType>, matcher: Value| {
            let m: StringMatcher = from_json(&matcher).expect("matcher");
            SanMatcher {
                san_type: t,
                matcher: string_matcher("m", &m).expect("valid"),
                exact: exact_of(&m),
            }
        };
        let dns = m(Some(SanType::Dns), json!({"exact": "api.example.com"}));
        assert!(dns.matches(SanType::Dns, "api.example.com"));
        assert!(dns.matches(SanType::Dns, "*.example.com"), "wildcard SAN");
        assert!(dns.matches(SanType::Dns, "API.example.com"));
        assert!(!dns.matches(SanType::Dns, "*.api.example.com"));
        assert!(
            !dns.matches(SanType::Uri, "api.example.com"),
            "type must match"
        );
        let uri = m(
            Some(SanType::Uri),
            json!({"prefix": "spiffe://example.org/"}),
        );
        assert!(uri.matches(SanType::Uri, "spiffe://example.org/payments"));
        assert!(!uri.matches(SanType::Uri, "spiffe://other.org/payments"));
        let any = m(None, json!({"exact": "10.0.0.1"}));
        assert!(any.matches(SanType::IpAddress, "10.0.0.1"));
        assert!(any.matches(SanType::Uri, "10.0.0.1"));
        assert!(dns_name_match("a.b.com", "*.b.com"));
        assert!(!dns_name_match("b.com", "*.b.com"));
        assert!(!dns_name_match("x.a.b.com", "*.b.com"));
    }
}
