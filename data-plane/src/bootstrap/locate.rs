//! Finding where in a bootstrap a decoding error is.
//!
//! The JSON-mapping decoder reports *what* is wrong (`unrecognized field name 'x'`) but not
//! *where*. The decoder reads a document in order and stops at the first error, so the error
//! is inside the first child whose inclusion (with everything before it, nothing after it)
//! reproduces it; descending child by child yields the path. This re-decodes the document a
//! few times per level, which is cheap for a bootstrap and only happens on the error path.
//! The field names of the message at that path (from the descriptor pool) give a "did you
//! mean".

use super::BootstrapError;
use legate_proto::json::Codec;
use legate_proto::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost::Name;
use serde_json::Value;

/// One step of a path in a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// An object key (a field name, or a map key).
    Key(String),
    /// A list index.
    Index(usize),
}

/// Renders a path as `static_resources.clusters[0].typed_extension_protocol_options["a.b"]`.
pub(super) fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(k) if is_identifier(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Key(k) => out.push_str(&format!("[{k:?}]")),
        }
    }
    out
}

fn is_identifier(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
}

/// The node at `path`.
pub(super) fn get<'v>(root: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(root, |node, step| match step {
        Step::Key(k) => node.get(k.as_str()),
        Step::Index(i) => node.get(*i),
    })
}

/// The node at `path`, mutably.
pub(super) fn get_mut<'v>(root: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(root, |node, step| match step {
        Step::Key(k) => node.get_mut(k.as_str()),
        Step::Index(i) => node.get_mut(*i),
    })
}

/// A decoding error with its place.
pub(super) struct Located {
    /// Path of the offending node (for an unknown field: the field itself).
    pub path: Vec<Step>,
    /// Where to report it: for an unknown field its parent, else the node.
    pub field: String,
    /// The unknown field's name, if that is the error.
    pub unknown_field: Option<String>,
    /// The message for a human.
    pub message: String,
}

impl Located {
    /// The error, attributed to `source`.
    pub fn into_error(self, source: &str) -> BootstrapError {
        BootstrapError {
            source: source.to_string(),
            field: self.field,
            message: self.message,
        }
    }
}

fn decode_error(codec: &Codec, value: &Value) -> Option<String> {
    codec
        .from_json::<Bootstrap>(value)
        .err()
        .map(|e| e.to_string())
}

/// Keeps the first `keep` children of an object or list (an object's `@type` always stays:
/// removing it would be an error of its own).
fn truncate(node: &mut Value, keep: usize) {
    match node {
        Value::Object(map) => {
            let kept = std::mem::take(map)
                .into_iter()
                .enumerate()
                .filter(|(i, (k, _))| *i < keep || k == "@type")
                .map(|(_, entry)| entry)
                .collect();
            *map = kept;
        }
        Value::Array(items) => items.truncate(keep),
        _ => {}
    }
}

/// Finds the node of `root` where decoding fails with `message`, and explains it.
pub(super) fn locate(codec: &Codec, root: &Value, message: &str) -> Located {
    let reproduces = |doc: &Value| decode_error(codec, doc).as_deref() == Some(message);
    let mut doc = root.clone();
    let mut path = Vec::new();
    while let Some(node) = get(&doc, &path) {
        let keys: Vec<Step> = match node {
            Value::Object(map) => map.keys().map(|k| Step::Key(k.clone())).collect(),
            Value::Array(items) => (0..items.len()).map(Step::Index).collect(),
            _ => break,
        };
        let with_prefix = |keep: usize| {
            let mut trial = doc.clone();
            if let Some(node) = get_mut(&mut trial, &path) {
                truncate(node, keep);
            }
            trial
        };
        // Without any child the error is still there: it is this node's own.
        if keys.is_empty() || reproduces(&with_prefix(0)) {
            break;
        }
        let Some(i) = (1..=keys.len()).find(|&keep| reproduces(&with_prefix(keep))) else {
            break;
        };
        doc = with_prefix(i);
        path.push(keys[i - 1].clone());
    }
    explain(codec, root, path, message)
}

fn explain(codec: &Codec, root: &Value, path: Vec<Step>, message: &str) -> Located {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('\''))
            .map(str::to_string)
    };
    if let Some(name) = quoted("unrecognized field name '")
        && let Some((Step::Key(last), parent)) = path.split_last()
        && *last == name
    {
        let hint = names_at(codec, root, parent)
            .and_then(|names| did_you_mean(&name, &names))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Located {
            field: render(parent),
            message: format!("unknown field `{name}`{hint}"),
            unknown_field: Some(name),
            path,
        };
    }
    let message = if let Some(value) = quoted("unrecognized enum value '") {
        let expected = names_at(codec, root, &path)
            .map(|names| format!(" (expected one of {})", names.join(", ")))
            .unwrap_or_default();
        format!("unknown value `{value}`{expected}")
    } else if let Some(name) = message
        .strip_prefix("message '")
        .and_then(|m| m.strip_suffix("' not found"))
    {
        format!("unknown type `{name}` in @type")
    } else {
        message.to_string()
    };
    Located {
        field: render(&path),
        message,
        unknown_field: None,
        path,
    }
}

/// The field names of the message at `path`, or the value names of the enum field at `path`.
fn names_at(codec: &Codec, root: &Value, path: &[Step]) -> Option<Vec<String>> {
    let mut message = codec.message_by_name(&Bootstrap::full_name())?;
    let mut node = root;
    let mut steps = path.iter().peekable();
    loop {
        if message.full_name() == "google.protobuf.Any" {
            let url = node.get("@type")?.as_str()?;
            message = codec.message_by_name(url.rsplit('/').next()?)?;
        }
        let Some(step) = steps.next() else {
            return Some(message.fields().map(|f| f.name().to_string()).collect());
        };
        let Step::Key(key) = step else {
            return None;
        };
        let field = message
            .get_field_by_name(key)
            .or_else(|| message.get_field_by_json_name(key))?;
        node = node.get(key.as_str())?;
        let element = if field.is_map() || field.is_list() {
            node = match steps.next()? {
                Step::Key(k) if field.is_map() => node.get(k.as_str())?,
                Step::Index(i) if field.is_list() => node.get(*i)?,
                _ => return None,
            };
            if field.is_map() {
                field.kind().as_message()?.map_entry_value_field()
            } else {
                field
            }
        } else {
            field
        };
        if steps.peek().is_none()
            && let Some(e) = element.kind().as_enum()
        {
            return Some(e.values().map(|v| v.name().to_string()).collect());
        }
        message = element.kind().as_message()?.clone();
    }
}

/// The closest of `candidates` to `name`, if it is close enough to be a typo.
fn did_you_mean(name: &str, candidates: &[String]) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// Levenshtein distance (by character).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("statc_resources", "static_resources"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            did_you_mean("adress", &["address".into(), "admin".into()]),
            Some("address".into())
        );
        assert_eq!(did_you_mean("zzz", &["address".into()]), None);
    }

    #[test]
    fn render_paths() {
        let path = [
            Step::Key("static_resources".into()),
            Step::Key("clusters".into()),
            Step::Index(0),
            Step::Key("typed_extension_protocol_options".into()),
            Step::Key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into()),
        ];
        assert_eq!(
            render(&path),
            "static_resources.clusters[0].typed_extension_protocol_options\
             [\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]"
        );
        assert_eq!(render(&[]), "");
    }

    fn located(value: Value) -> Located {
        let codec = Codec::new();
        let message = decode_error(&codec, &value).expect("should not decode");
        locate(&codec, &value, &message)
    }

    #[test]
    fn finds_a_nested_unknown_field_and_suggests() {
        let l = located(json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}},
            "static_resources": {"clusters": [
                {"name": "a", "connect_timeout": "1s"},
                {"name": "b", "conect_timeout": "1s"},
            ]},
        }));
        assert_eq!(l.field, "static_resources.clusters[1]");
        assert_eq!(
            l.message,
            "unknown field `conect_timeout` (did you mean `connect_timeout`?)"
        );
        assert_eq!(l.unknown_field.as_deref(), Some("conect_timeout"));
    }

    #[test]
    fn the_same_typo_twice_is_reported_at_the_first() {
        let l = located(json!({"static_resources": {"clusters": [
            {"name": "a", "conect_timeout": "1s"},
            {"name": "b", "conect_timeout": "1s"},
        ]}}));
        assert_eq!(l.field, "static_resources.clusters[0]");
    }

    #[test]
    fn inside_an_any() {
        let l = located(json!({"static_resources": {"clusters": [{
            "name": "a",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_option": {}},
                },
            },
        }]}}));
        assert_eq!(
            l.field,
            "static_resources.clusters[0].typed_extension_protocol_options\
             [\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"].explicit_http_config"
        );
        assert_eq!(
            l.message,
            "unknown field `http2_protocol_option` (did you mean `http2_protocol_options`?)"
        );
    }

    #[test]
    fn bad_values_are_reported_at_the_value() {
        let l = located(json!({"static_resources": {"clusters": [
            {"name": "a", "connect_timeout": "soon"},
        ]}}));
        assert_eq!(l.field, "static_resources.clusters[0].connect_timeout");
        assert_eq!(l.unknown_field, None);

        let l =
            located(json!({"static_resources": {"clusters": [{"name": "a", "type": "STATC"}]}}));
        assert_eq!(l.field, "static_resources.clusters[0].type");
        assert!(
            l.message
                .starts_with("unknown value `STATC` (expected one of STATIC, "),
            "{}",
            l.message
        );

        let l = located(json!({"static_resources": {"clusters": {"name": "a"}}}));
        assert_eq!(l.field, "static_resources.clusters");
    }
}
