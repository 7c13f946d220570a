//! Conversion errors, and the small validation helpers every converter shares.
//!
//! Converters work with [`FieldError`] (a field path relative to the message being converted)
//! and prefix the path as the error travels up; the public entry points turn it into a
//! [`ConfigError`] naming the resource.

use legate_proto::pb::envoy::config::core::v3::{ConfigSource, config_source};
use legate_proto::pb::envoy::r#type::v3::Percent;
use legate_proto::pb::google::protobuf::Duration as PbDuration;
use std::fmt;
use std::time::Duration;

/// A conversion failure, naming the resource and the offending field.
///
/// Displays as ``<kind> `<name>`: <field path>: <message>``, e.g.
/// ``cluster `payments`: lb_policy: CLUSTER_PROVIDED is not supported``.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Resource kind: `cluster`, `load assignment`, `listener` or `route configuration`.
    pub kind: &'static str,
    /// Resource name (as received; may be empty when the name itself is the problem).
    pub name: String,
    /// Field path inside the resource (`filter_chains[0].filters[0].typed_config`); empty when
    /// the resource as a whole is at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} `{}`: {}", self.kind, self.name, self.message)
        } else {
            write!(
                f,
                "{} `{}`: {}: {}",
                self.kind, self.name, self.field, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// An error inside a resource: a field path relative to the message being converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// Field path, relative.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error at `field`.
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error seen from the enclosing message: `parent` is prefixed to the path.
    pub(crate) fn under(mut self, parent: &str) -> Self {
        if parent.is_empty() {
            return self;
        }
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }

    /// Names the resource.
    pub(crate) fn into_config(self, kind: &'static str, name: &str) -> ConfigError {
        ConfigError {
            kind,
            name: name.to_string(),
            field: self.field,
            message: self.message,
        }
    }
}

/// Result of a conversion step.
pub(crate) type Result<T> = std::result::Result<T, FieldError>;

/// Adds a parent field to the path of an error.
pub(crate) trait Under<T> {
    /// Prefixes `parent` to the error's field path.
    fn under(self, parent: &str) -> Result<T>;
}

impl<T> Under<T> for Result<T> {
    fn under(self, parent: &str) -> Result<T> {
        self.map_err(|e| e.under(parent))
    }
}

/// "`field`: not supported".
pub(crate) fn unsupported(field: &str) -> FieldError {
    FieldError::new(field, "not supported")
}

/// Fails with "not supported" at `field` when `set` holds.
pub(crate) fn reject(set: bool, field: &str) -> Result<()> {
    if set { Err(unsupported(field)) } else { Ok(()) }
}

/// A protobuf duration as a std duration; negative or malformed durations are errors.
pub(crate) fn duration(field: &str, d: &PbDuration) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(FieldError::new(field, "must not be negative"));
    }
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| FieldError::new(field, "invalid duration (nanos out of range)"))?;
    // `seconds >= 0` was checked above.
    Ok(Duration::new(d.seconds.unsigned_abs(), nanos))
}

/// An optional duration.
pub(crate) fn opt_duration(field: &str, d: Option<&PbDuration>) -> Result<Option<Duration>> {
    d.map(|d| duration(field, d)).transpose()
}

/// A duration that must be strictly positive (`gt: {}` in Envoy's validation rules).
pub(crate) fn positive_duration(field: &str, d: &PbDuration) -> Result<Duration> {
    let v = duration(field, d)?;
    if v.is_zero() {
        return Err(FieldError::new(field, "must be greater than 0"));
    }
    Ok(v)
}

/// An optional duration where zero means "disabled" (`None`), with `default` when unset.
pub(crate) fn timeout_or(
    field: &str,
    d: Option<&PbDuration>,
    default: Option<Duration>,
) -> Result<Option<Duration>> {
    match d {
        None => Ok(default),
        Some(d) => {
            let v = duration(field, d)?;
            Ok(if v.is_zero() { None } else { Some(v) })
        }
    }
}

/// A `envoy.type.v3.Percent` (0–100).
pub(crate) fn percent(field: &str, p: &Percent) -> Result<f64> {
    if !p.value.is_finite() || !(0.0..=100.0).contains(&p.value) {
        return Err(FieldError::new(
            field,
            format!("must be between 0 and 100, got {}", p.value),
        ));
    }
    Ok(p.value)
}

/// A percentage carried in a `UInt32Value` (`lte: 100`).
pub(crate) fn percent_u32(field: &str, value: Option<u32>, default: u32) -> Result<u32> {
    let v = value.unwrap_or(default);
    if v > 100 {
        return Err(FieldError::new(
            field,
            format!("must be at most 100, got {v}"),
        ));
    }
    Ok(v)
}

/// Requires a config source that means "the ADS stream" (`ads: {}`); absent is accepted when
/// `optional`.
pub(crate) fn ads_source(field: &str, source: Option<&ConfigSource>, optional: bool) -> Result<()> {
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(config_source::ConfigSourceSpecifier::Ads(_)) => Ok(()),
        None if optional => Ok(()),
        None => Err(FieldError::new(field, "required (ads: {})")),
        Some(other) => {
            #[allow(deprecated)]
            let kind = match other {
                config_source::ConfigSourceSpecifier::Path(_)
                | config_source::ConfigSourceSpecifier::PathConfigSource(_) => "path",
                config_source::ConfigSourceSpecifier::ApiConfigSource(_) => "api_config_source",
                config_source::ConfigSourceSpecifier::Self_(_) => "self",
                config_source::ConfigSourceSpecifier::Ads(_) => "ads",
            };
            Err(FieldError::new(
                field,
                format!("only ADS config sources are supported, got {kind}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_field() {
        let e = FieldError::new("lb_policy", "CLUSTER_PROVIDED is not supported")
            .into_config("cluster", "payments");
        assert_eq!(
            e.to_string(),
            "cluster `payments`: lb_policy: CLUSTER_PROVIDED is not supported"
        );
        let e = FieldError::new("", "boom").into_config("listener", "l");
        assert_eq!(e.to_string(), "listener `l`: boom");
    }

    #[test]
    fn paths_compose() {
        let e = FieldError::new("endpoint.address", "x")
            .under("lb_endpoints[1]")
            .under("[0]")
            .under("endpoints");
        assert_eq!(e.field, "endpoints[0].lb_endpoints[1].endpoint.address");
        assert_eq!(FieldError::new("", "x").under("a").field, "a");
        assert_eq!(FieldError::new("a", "x").under("").field, "a");
    }

    #[test]
    fn durations() {
        let d = |seconds, nanos| PbDuration { seconds, nanos };
        assert_eq!(
            duration("t", &d(1, 500_000_000)).unwrap(),
            Duration::from_millis(1500)
        );
        assert!(duration("t", &d(-1, 0)).is_err());
        assert!(duration("t", &d(0, 1_000_000_000)).is_err());
        assert!(positive_duration("t", &d(0, 0)).is_err());
        assert_eq!(timeout_or("t", Some(&d(0, 0)), None).unwrap(), None);
        assert_eq!(
            timeout_or("t", None, Some(Duration::from_secs(3))).unwrap(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn percents() {
        assert_eq!(percent("p", &Percent { value: 20.0 }).unwrap(), 20.0);
        assert!(percent("p", &Percent { value: 101.0 }).is_err());
        assert!(percent("p", &Percent { value: f64::NAN }).is_err());
        assert!(percent_u32("p", Some(101), 0).is_err());
        assert_eq!(percent_u32("p", None, 10).unwrap(), 10);
    }
}
