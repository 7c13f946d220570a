//! Typed access to [`Node`]s: a mapping reader that reports unknown and duplicate keys, and scalar
//! readers that report type errors at the offending node. Every reader records its problems in a
//! [`Diag`] and returns `None` for a value it could not read, so that loading carries on and all
//! problems are reported together.

use super::node::{Kind, Node};
use super::{ConfigError, duration};
use crate::model::Location;
use std::time::Duration;

/// The problems found so far.
#[derive(Debug, Default)]
pub(crate) struct Diag {
    /// Every problem, in the order found.
    pub errors: Vec<ConfigError>,
}

impl Diag {
    /// Records a problem at `loc`.
    pub fn at(&mut self, loc: &Location, message: impl Into<String>) {
        self.errors.push(ConfigError::at(loc, message));
    }

    /// Records a problem.
    pub fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// How many problems have been recorded.
    pub fn count(&self) -> usize {
        self.errors.len()
    }
}

/// The closest candidate to `word`, when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(word, candidate);
        // On a tie the earlier candidate wins, so the suggestion does not depend on luck.
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// `"; did you mean `x`?"` when a candidate is close to `word`, else nothing.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    suggest(word, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// A short description of a node for messages: `a mapping`, `a list`, `` `text` ``, `nothing`.
pub(crate) fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Null => "nothing".to_string(),
        Kind::Scalar { text, plain: true } => format!("`{text}`"),
        Kind::Scalar { text, plain: false } => format!("the text `{text:?}`"),
        Kind::Seq(_) => "a list".to_string(),
        Kind::Map(_) => "a mapping".to_string(),
    }
}

/// Reads the keys of one mapping. Ask for every known key with [`MapReader::get`], then call
/// [`MapReader::finish`] to report the keys nobody asked for.
pub(crate) struct MapReader<'n> {
    entries: &'n [(Node, Node)],
    what: String,
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'n> MapReader<'n> {
    /// Starts reading `node` (a mapping, or nothing, which reads as an empty mapping). `what` names
    /// the mapping in messages, e.g. ``service `payments` ``. Reports non-text and duplicate keys.
    pub fn new(node: &'n Node, what: impl Into<String>, diag: &mut Diag) -> Option<Self> {
        let what = what.into();
        let entries: &[(Node, Node)] = match &node.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &[],
            _ => {
                diag.at(
                    &node.loc,
                    format!(
                        "{what} must be a mapping (`key: value`), found {}",
                        describe(node)
                    ),
                );
                return None;
            }
        };
        let mut used = vec![false; entries.len()];
        for (i, (key, _)) in entries.iter().enumerate() {
            let Some(name) = key.as_str() else {
                diag.at(
                    &key.loc,
                    format!("keys in {what} must be text, found {}", describe(key)),
                );
                used[i] = true;
                continue;
            };
            if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.as_str() == Some(name)) {
                diag.at(
                    &key.loc,
                    format!("duplicate key `{name}` in {what}; first at {}", first.loc),
                );
                used[i] = true;
            }
        }
        Some(MapReader {
            entries,
            what,
            used,
            known: Vec::new(),
        })
    }

    /// The key node and value of `key`; `None` when absent or written with no value.
    pub fn entry(&mut self, key: &'static str) -> Option<(&'n Node, &'n Node)> {
        self.known.push(key);
        let entries = self.entries;
        let index = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
        self.used[index] = true;
        let (k, v) = &entries[index];
        if v.kind == Kind::Null {
            None
        } else {
            Some((k, v))
        }
    }

    /// The value of `key`; `None` when absent or written with no value.
    pub fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// Reports every key that was not asked for, with a suggestion when one is close.
    pub fn finish(self, diag: &mut Diag) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let name = key.as_str().unwrap_or_default();
            let hint = did_you_mean(name, self.known.iter().copied());
            diag.at(
                &key.loc,
                format!("unknown key `{name}` in {}{hint}", self.what),
            );
        }
    }
}

/// The items of a list.
pub(crate) fn list<'n>(node: &'n Node, what: &str, diag: &mut Diag) -> Option<&'n [Node]> {
    match &node.kind {
        Kind::Seq(items) => Some(items),
        _ => {
            diag.at(
                &node.loc,
                format!(
                    "{what} must be a list, e.g. `[a, b]`, found {}",
                    describe(node)
                ),
            );
            None
        }
    }
}

/// A text scalar (any scalar reads as text; numbers keep their spelling).
pub(crate) fn string(node: &Node, what: &str, diag: &mut Diag) -> Option<String> {
    match &node.kind {
        Kind::Scalar { text, .. } => Some(text.clone()),
        _ => {
            diag.at(
                &node.loc,
                format!("{what} must be text, found {}", describe(node)),
            );
            None
        }
    }
}

/// `true` or `false` (YAML 1.2 spellings: also `True`, `TRUE`, `False`, `FALSE`), unquoted.
pub(crate) fn boolean(node: &Node, what: &str, diag: &mut Diag) -> Option<bool> {
    if let Kind::Scalar { text, plain: true } = &node.kind {
        match text.as_str() {
            "true" | "True" | "TRUE" => return Some(true),
            "false" | "False" | "FALSE" => return Some(false),
            _ => {}
        }
    }
    diag.at(
        &node.loc,
        format!("{what} must be true or false, found {}", describe(node)),
    );
    None
}

/// A non-empty text scalar.
pub(crate) fn non_empty_string(node: &Node, what: &str, diag: &mut Diag) -> Option<String> {
    let text = string(node, what, diag)?;
    if text.trim().is_empty() {
        diag.at(&node.loc, format!("{what} must not be empty"));
        return None;
    }
    Some(text)
}

/// An unsigned whole number in `min..=max`.
pub(crate) fn uint(node: &Node, what: &str, min: u64, max: u64, diag: &mut Diag) -> Option<u64> {
    let text = match &node.kind {
        Kind::Scalar { text, plain: true } => text.as_str(),
        _ => {
            diag.at(
                &node.loc,
                format!("{what} must be a number, found {}", describe(node)),
            );
            return None;
        }
    };
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let message = if is_decimal(text.strip_prefix('-').unwrap_or(text)) && text.starts_with('-')
        {
            format!("{what} must not be negative, found `{text}`")
        } else if is_decimal(text) {
            format!("{what} must be a whole number, found `{text}`")
        } else {
            format!("{what} must be a number, found `{text}`")
        };
        diag.at(&node.loc, message);
        return None;
    }
    match digits.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            diag.at(
                &node.loc,
                format!("{what} must be between {min} and {max}, found `{text}`"),
            );
            None
        }
    }
}

/// An unsigned 32-bit number.
pub(crate) fn u32_value(node: &Node, what: &str, diag: &mut Diag) -> Option<u32> {
    uint(node, what, 0, u64::from(u32::MAX), diag).and_then(|n| u32::try_from(n).ok())
}

/// An unsigned 32-bit number in `min..=max`.
pub(crate) fn u32_in(node: &Node, what: &str, min: u32, max: u32, diag: &mut Diag) -> Option<u32> {
    uint(node, what, u64::from(min), u64::from(max), diag).and_then(|n| u32::try_from(n).ok())
}

/// A 16-bit number in `min..=max`.
pub(crate) fn u16_in(node: &Node, what: &str, min: u16, max: u16, diag: &mut Diag) -> Option<u16> {
    uint(node, what, u64::from(min), u64::from(max), diag).and_then(|n| u16::try_from(n).ok())
}

/// A percentage, 0 to 100, whole or decimal.
pub(crate) fn percent(node: &Node, what: &str, diag: &mut Diag) -> Option<f64> {
    let text = match &node.kind {
        Kind::Scalar { text, plain: true } => text.as_str(),
        _ => {
            diag.at(
                &node.loc,
                format!("{what} must be a number, found {}", describe(node)),
            );
            return None;
        }
    };
    if let Some(rest) = text.strip_prefix('-')
        && is_decimal(rest)
    {
        diag.at(
            &node.loc,
            format!("{what} must not be negative, found `{text}`"),
        );
        return None;
    }
    let value = if is_decimal(text) {
        text.parse::<f64>().ok()
    } else {
        None
    };
    match value {
        Some(v) if (0.0..=100.0).contains(&v) => Some(v),
        Some(_) => {
            diag.at(
                &node.loc,
                format!("{what} must be between 0 and 100, found `{text}`"),
            );
            None
        }
        None => {
            diag.at(
                &node.loc,
                format!("{what} must be a number, found `{text}`"),
            );
            None
        }
    }
}

/// A duration such as `250ms` or `2s`.
pub(crate) fn duration(node: &Node, what: &str, diag: &mut Diag) -> Option<Duration> {
    let Kind::Scalar { text, .. } = &node.kind else {
        diag.at(
            &node.loc,
            format!(
                "{what} must be a duration like `5s`, found {}",
                describe(node)
            ),
        );
        return None;
    };
    match duration::parse(text) {
        Ok(d) => Some(d),
        Err(problem) => {
            diag.at(&node.loc, format!("invalid {what}: {problem}"));
            None
        }
    }
}

/// A duration greater than zero.
pub(crate) fn positive_duration(node: &Node, what: &str, diag: &mut Diag) -> Option<Duration> {
    let d = duration(node, what, diag)?;
    if d.is_zero() {
        diag.at(&node.loc, format!("{what} must be greater than 0"));
        return None;
    }
    Some(d)
}

/// `123` or `1.5`.
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node;
    use std::path::Path;

    fn doc(text: &str) -> Node {
        node::parse(Path::new("r.yaml"), text)
            .expect("valid yaml")
            .remove(0)
    }

    fn messages(diag: &Diag) -> Vec<String> {
        diag.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn suggestions_only_when_close() {
        let keys = ["endpoints", "retries", "timeout", "tls"];
        assert_eq!(suggest("retires", keys), Some("retries"));
        assert_eq!(suggest("timout", keys), Some("timeout"));
        assert_eq!(suggest("colour", keys), None);
    }

    #[test]
    fn numbers() {
        let root = doc(
            "a: 5\nb: -3\nc: 1.5\nd: x\ne: 70000\nf: '5'\ng: [1]\nh: 99999999999999999999999\n",
        );
        let mut diag = Diag::default();
        let mut m = MapReader::new(&root, "test", &mut diag).unwrap();
        let a = m.get("a").unwrap();
        assert_eq!(u16_in(a, "`a`", 1, 65535, &mut diag), Some(5));
        for key in ["b", "c", "d", "e", "f", "g", "h"] {
            let n = m.get(key).unwrap();
            assert_eq!(u16_in(n, &format!("`{key}`"), 1, 65535, &mut diag), None);
        }
        m.finish(&mut diag);
        assert_eq!(
            messages(&diag),
            vec![
                "r.yaml:2:4: `b` must not be negative, found `-3`",
                "r.yaml:3:4: `c` must be a whole number, found `1.5`",
                "r.yaml:4:4: `d` must be a number, found `x`",
                "r.yaml:5:4: `e` must be between 1 and 65535, found `70000`",
                "r.yaml:6:4: `f` must be a number, found the text `\"5\"`",
                "r.yaml:7:4: `g` must be a number, found a list",
                "r.yaml:8:4: `h` must be between 1 and 65535, found `99999999999999999999999`",
            ]
        );
    }

    #[test]
    fn booleans() {
        let root = doc("[true, False, TRUE, 'true', yes, 1, ~, [x]]");
        let Kind::Seq(items) = &root.kind else {
            panic!()
        };
        let mut diag = Diag::default();
        let values: Vec<_> = items.iter().map(|n| boolean(n, "`b`", &mut diag)).collect();
        assert_eq!(
            values,
            vec![
                Some(true),
                Some(false),
                Some(true),
                None,
                None,
                None,
                None,
                None
            ]
        );
        assert_eq!(
            messages(&diag),
            vec![
                "r.yaml:1:21: `b` must be true or false, found the text `\"true\"`",
                "r.yaml:1:29: `b` must be true or false, found `yes`",
                "r.yaml:1:34: `b` must be true or false, found `1`",
                "r.yaml:1:37: `b` must be true or false, found nothing",
                "r.yaml:1:40: `b` must be true or false, found a list",
            ]
        );
    }

    #[test]
    fn percents() {
        let root = doc("[0, 20, 12.5, 100, 100.5, -1, abc]");
        let Kind::Seq(items) = &root.kind else {
            panic!()
        };
        let mut diag = Diag::default();
        let values: Vec<_> = items.iter().map(|n| percent(n, "`p`", &mut diag)).collect();
        assert_eq!(
            values,
            vec![
                Some(0.0),
                Some(20.0),
                Some(12.5),
                Some(100.0),
                None,
                None,
                None
            ]
        );
        assert_eq!(diag.count(), 3);
    }

    #[test]
    fn unknown_and_duplicate_keys() {
        let root = doc("retires: 1\nretries: 2\nretries: 3\nzzz: 4\n");
        let mut diag = Diag::default();
        let mut m = MapReader::new(&root, "service `p`", &mut diag).unwrap();
        assert!(m.get("retries").is_some());
        assert!(m.get("timeout").is_none());
        m.finish(&mut diag);
        assert_eq!(
            messages(&diag),
            vec![
                "r.yaml:3:1: duplicate key `retries` in service `p`; first at r.yaml:2:1",
                "r.yaml:1:1: unknown key `retires` in service `p`; did you mean `retries`?",
                "r.yaml:4:1: unknown key `zzz` in service `p`",
            ]
        );
    }
}
