//! Reading a bootstrap: `-c` files (YAML, JSON, binary proto) and `--config-yaml`, converted to
//! Envoy's JSON mapping and decoded into the typed `Bootstrap`.

use super::locate::{self, Step};
use super::{BootstrapError, Warning};
use legate_proto::json::Codec;
use legate_proto::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost::Message;
use serde_json::Value;
use std::path::Path;

/// The source label of `--config-yaml`.
pub(super) const CONFIG_YAML: &str = "--config-yaml";

/// One source of bootstrap configuration.
pub(super) struct Document {
    /// The file path, `--config-yaml` or `bootstrap`.
    pub source: String,
    content: Content,
}

enum Content {
    /// Envoy's JSON mapping (from YAML or JSON).
    Json(Value),
    /// A binary `.pb` bootstrap.
    Proto(Box<Bootstrap>),
}

impl Document {
    /// A document already in Envoy's JSON mapping.
    pub fn json(source: String, value: Value) -> Document {
        Document {
            source,
            content: Content::Json(value),
        }
    }

    /// Decodes into the typed `Bootstrap` with `codec`. An unknown field is an error naming its
    /// path, or, when `allow_unknown`, a warning (and the field is dropped).
    pub fn decode(
        &self,
        codec: &Codec,
        allow_unknown: bool,
        warnings: &mut Vec<Warning>,
    ) -> Result<Bootstrap, BootstrapError> {
        let value = match &self.content {
            Content::Proto(bootstrap) => return Ok(bootstrap.as_ref().clone()),
            Content::Json(value) => value,
        };
        let mut value = std::borrow::Cow::Borrowed(value);
        loop {
            let message = match codec.from_json::<Bootstrap>(&value) {
                Ok(bootstrap) => return Ok(bootstrap),
                Err(e) => e.to_string(),
            };
            let located = locate::locate(codec, &value, &message);
            match (&located.unknown_field, allow_unknown) {
                (Some(name), true) => {
                    warnings.push(Warning {
                        field: located.field.clone(),
                        message: format!(
                            "unknown field `{name}` ignored (--allow-unknown-static-fields)"
                        ),
                    });
                    if !remove(value.to_mut(), &located.path) {
                        return Err(located.into_error(&self.source));
                    }
                }
                _ => return Err(located.into_error(&self.source)),
            }
        }
    }
}

/// Removes the node at `path` (the last step must be a key).
fn remove(root: &mut Value, path: &[Step]) -> bool {
    let Some((Step::Key(last), parent)) = path.split_last() else {
        return false;
    };
    match locate::get_mut(root, parent) {
        Some(Value::Object(map)) => map.shift_remove(last).is_some(),
        _ => false,
    }
}

fn error(source: impl Into<String>, message: impl Into<String>) -> BootstrapError {
    BootstrapError {
        source: source.into(),
        field: String::new(),
        message: message.into(),
    }
}

/// Reads `-c`: by extension `.json` (JSON), `.pb` (binary proto), `.pb_text` (rejected),
/// anything else YAML (a superset of JSON).
pub(super) fn read_file(path: &Path) -> Result<Document, BootstrapError> {
    let source = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| error(source.clone(), format!("cannot read: {e}")))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "pb" => {
            let bootstrap = Bootstrap::decode(bytes.as_slice()).map_err(|e| {
                error(
                    source.clone(),
                    format!("not a binary envoy.config.bootstrap.v3.Bootstrap: {e}"),
                )
            })?;
            Ok(Document {
                source,
                content: Content::Proto(Box::new(bootstrap)),
            })
        }
        "pb_text" => Err(error(
            source,
            "text-format protobuf (.pb_text) is not supported; use YAML or JSON",
        )),
        "json" => {
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                let full = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
                error(format!("{source}:{}:{}", e.line(), e.column()), message)
            })?;
            let value = expect_mapping(value, &source)?;
            Ok(Document::json(source, value))
        }
        _ => {
            let text = String::from_utf8(bytes)
                .map_err(|e| error(source.clone(), format!("not UTF-8: {e}")))?;
            let value = parse_yaml(&text, &source)?;
            Ok(Document::json(source, value))
        }
    }
}

/// Reads `--config-yaml`.
pub(super) fn read_config_yaml(yaml: &str) -> Result<Document, BootstrapError> {
    let value = parse_yaml(yaml, CONFIG_YAML)?;
    Ok(Document::json(CONFIG_YAML.to_string(), value))
}

/// YAML → Envoy's JSON mapping. Syntax errors carry `source:line:col`. As in Envoy, a mapping
/// key tagged `!ignore` is dropped (a place to keep YAML anchors); `<<` merge keys are applied.
pub(super) fn parse_yaml(text: &str, source: &str) -> Result<Value, BootstrapError> {
    let yaml_error = |e: serde_yaml::Error| {
        let full = e.to_string();
        match e.location() {
            Some(loc) => {
                let mark = format!(" at line {} column {}", loc.line(), loc.column());
                let message = full.replacen(&mark, "", 1);
                error(format!("{source}:{}:{}", loc.line(), loc.column()), message)
            }
            None => error(source, full),
        }
    };
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(yaml_error)?;
    yaml.apply_merge().map_err(yaml_error)?;
    let value = yaml_to_json(yaml).map_err(|message| error(source, message))?;
    expect_mapping(value, source)
}

/// The document must be a mapping; an empty one is an error, as in Envoy.
fn expect_mapping(value: Value, source: &str) -> Result<Value, BootstrapError> {
    match value {
        Value::Null => Err(error(source, "the document is empty")),
        Value::Object(_) => Ok(value),
        other => Err(error(
            source,
            format!(
                "a bootstrap must be a mapping, not {}",
                match other {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "a boolean",
                }
            ),
        )),
    }
}

fn yaml_to_json(yaml: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{f} is not a number JSON can represent"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(entries) => {
            let mut map = serde_json::Map::new();
            for (key, value) in entries {
                let key = match key {
                    Y::Tagged(tagged) if tagged.tag == "ignore" => continue,
                    Y::Tagged(tagged) => tagged.value,
                    other => other,
                };
                let key = match key {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".to_string(),
                    _ => return Err("a mapping key must be a scalar".to_string()),
                };
                map.insert(key, yaml_to_json(value)?);
            }
            Value::Object(map)
        }
        // Tags other than `!ignore` on values carry no meaning for Envoy.
        Y::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}
