//! A small YAML tree in which every node knows where it was written.
//!
//! `yaml-rust2`'s own `Yaml` tree drops positions, so the parser's events are collected here into
//! [`Node`]s that each carry a [`Location`]. Anchors and aliases are expanded (an alias is a copy of
//! the anchored node, located at the alias), and `<<` merge keys are applied.

use super::ConfigError;
use crate::model::Location;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted; real configurations stay far below it.
const MAX_DEPTH: usize = 64;
/// Most nodes that alias expansion may create in one file (guards against "billion laughs").
const MAX_ALIAS_NODES: usize = 100_000;

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// The content.
    pub kind: Kind,
    /// Where the node starts (for block mappings: their first key).
    pub loc: Location,
}

/// The content of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// `~`, `null` or nothing at all.
    Null,
    /// A scalar. `plain` is false for quoted, block and `!!str` scalars, which are always text.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order. Duplicate keys are kept; readers report them.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, if this is a (non-null) scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The number of nodes in this subtree.
    fn size(&self) -> usize {
        match &self.kind {
            Kind::Null | Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Parses `text` into one root node per YAML document (none for an empty file).
pub(crate) fn parse(file: &Path, text: &str) -> Result<Vec<Node>, ConfigError> {
    let run = || {
        let mut builder = Builder::new(file);
        let mut parser = Parser::new_from_str(text);
        loop {
            match parser.next_token() {
                Ok((event, mark)) => {
                    let end = event == Event::StreamEnd;
                    builder.on_event(event, mark);
                    if let Some(err) = builder.error.take() {
                        return Err(err);
                    }
                    if end {
                        return Ok(builder.docs);
                    }
                }
                Err(err) => {
                    let loc = builder.loc(*err.marker());
                    return Err(ConfigError::at(
                        &loc,
                        format!("invalid YAML: {}", err.info()),
                    ));
                }
            }
        }
    };
    // The parser is not supposed to panic, but a malformed file must never take the control
    // plane down with it.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(ConfigError::in_file(
            file,
            "invalid YAML: the parser gave up on this file",
        ))
    })
}

/// A collection being built.
struct Frame {
    loc: Location,
    anchor: usize,
    content: FrameContent,
}

enum FrameContent {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Turns parser events into [`Node`]s.
struct Builder {
    file: PathBuf,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    error: Option<ConfigError>,
}

impl Builder {
    fn new(file: &Path) -> Self {
        Builder {
            file: file.to_path_buf(),
            stack: Vec::new(),
            docs: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
            error: None,
        }
    }

    /// Converts a marker (1-based line, 0-based column) into a 1-based location.
    fn loc(&self, mark: Marker) -> Location {
        Location {
            file: self.file.clone(),
            line: mark.line(),
            col: mark.col() + 1,
        }
    }

    fn fail(&mut self, loc: &Location, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(ConfigError::at(loc, message));
        }
    }

    fn open(&mut self, loc: Location, anchor: usize, content: FrameContent) {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(&loc, format!("nesting deeper than {MAX_DEPTH} levels"));
            return;
        }
        self.stack.push(Frame {
            loc,
            anchor,
            content,
        });
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let kind = match frame.content {
            FrameContent::Seq(items) => Kind::Seq(items),
            FrameContent::Map { entries, .. } => match apply_merge_keys(entries) {
                Ok(entries) => Kind::Map(entries),
                Err((loc, message)) => {
                    self.fail(&loc, message);
                    return;
                }
            },
        };
        let node = Node {
            kind,
            loc: frame.loc,
        };
        self.finish(node, frame.anchor);
    }

    /// Records an anchor (if any) and attaches the node to its parent.
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(frame) => match &mut frame.content {
                FrameContent::Seq(items) => items.push(node),
                FrameContent::Map { entries, key } => match key.take() {
                    Some(k) => entries.push((k, node)),
                    None => {
                        // A block mapping's start event is marked after its first key; point at
                        // the key instead.
                        if entries.is_empty()
                            && (node.loc.line, node.loc.col) < (frame.loc.line, frame.loc.col)
                        {
                            frame.loc = node.loc.clone();
                        }
                        *key = Some(node);
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let loc = self.loc(mark);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let mut plain = style == TScalarStyle::Plain;
                if let Some(tag) = tag {
                    if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" {
                        plain = false;
                    } else {
                        self.fail(
                            &loc,
                            format!(
                                "YAML tags are not supported (`{}{}`)",
                                tag.handle, tag.suffix
                            ),
                        );
                        return;
                    }
                }
                let kind = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Kind::Null
                } else {
                    Kind::Scalar { text, plain }
                };
                self.finish(Node { kind, loc }, anchor);
            }
            Event::SequenceStart(anchor, tag) => {
                if tag.is_some() {
                    self.fail(&loc, "YAML tags are not supported");
                    return;
                }
                self.open(loc, anchor, FrameContent::Seq(Vec::new()));
            }
            Event::MappingStart(anchor, tag) => {
                if tag.is_some() {
                    self.fail(&loc, "YAML tags are not supported");
                    return;
                }
                self.open(
                    loc,
                    anchor,
                    FrameContent::Map {
                        entries: Vec::new(),
                        key: None,
                    },
                );
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    self.fail(&loc, "alias to an unknown anchor");
                    return;
                };
                self.alias_nodes = self.alias_nodes.saturating_add(target.size());
                if self.alias_nodes > MAX_ALIAS_NODES {
                    self.fail(&loc, "aliases expand to too many nodes");
                    return;
                }
                let mut node = target.clone();
                node.loc = loc;
                self.finish(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// Applies `<<` merge keys: entries of the merged mapping(s) are added unless the mapping already
/// has the key (the first merged mapping wins among several).
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, (Location, String)> {
    let is_merge = |k: &Node| matches!(&k.kind, Kind::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (key, value) in entries {
        if !is_merge(&key) {
            own.push((key, value));
            continue;
        }
        let sources = match value.kind {
            Kind::Map(_) => vec![value],
            Kind::Seq(items) if items.iter().all(|i| matches!(i.kind, Kind::Map(_))) => items,
            _ => {
                return Err((
                    value.loc,
                    "`<<` must be followed by a mapping or a list of mappings".to_string(),
                ));
            }
        };
        for source in sources {
            if let Kind::Map(source_entries) = source.kind {
                merged.extend(source_entries);
            }
        }
    }
    for (key, value) in merged {
        let present = own.iter().any(|(k, _)| match (k.as_str(), key.as_str()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        });
        if !present {
            own.push((key, value));
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Node {
        let mut docs = parse(Path::new("t.yaml"), text).expect("valid yaml");
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn at(node: &Node) -> (usize, usize) {
        (node.loc.line, node.loc.col)
    }

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.kind {
            Kind::Map(e) => e,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse_one("a:\n  b: 1\n  c: [x, {d: 2}]\n  e:\n    - f: 3\n");
        let a = &map(&root)[0];
        assert_eq!(at(&a.0), (1, 1));
        assert_eq!(at(&a.1), (2, 3), "block map located at its first key");
        let inner = map(&a.1);
        assert_eq!(at(&inner[0].1), (2, 6));
        let Kind::Seq(items) = &inner[1].1.kind else {
            panic!()
        };
        assert_eq!(at(&inner[1].1), (3, 6));
        assert_eq!(at(&items[1]), (3, 10));
        let Kind::Seq(items) = &inner[2].1.kind else {
            panic!()
        };
        assert_eq!(at(&items[0]), (5, 7));
    }

    #[test]
    fn nulls_and_quoted() {
        let root = parse_one("a:\nb: ~\nc: 'null'\nd: !!str 5\n");
        let e = map(&root);
        assert_eq!(e[0].1.kind, Kind::Null);
        assert_eq!(e[1].1.kind, Kind::Null);
        assert_eq!(
            e[2].1.kind,
            Kind::Scalar {
                text: "null".into(),
                plain: false
            }
        );
        assert_eq!(
            e[3].1.kind,
            Kind::Scalar {
                text: "5".into(),
                plain: false
            }
        );
    }

    #[test]
    fn aliases_and_merge_keys() {
        let root = parse_one("x: &v 5\ny: *v\nbase: &b {p: 1, q: 2}\nz:\n  <<: *b\n  q: 3\n");
        let e = map(&root);
        assert_eq!(e[1].1.as_str(), Some("5"));
        assert_eq!(at(&e[1].1), (2, 4));
        let z = map(&e[3].1);
        let pairs: Vec<_> = z
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or(""), v.as_str().unwrap_or("")))
            .collect();
        assert_eq!(pairs, vec![("q", "3"), ("p", "1")]);
    }

    #[test]
    fn empty_and_comment_only_files_have_no_documents() {
        assert!(parse(Path::new("t.yaml"), "").unwrap().is_empty());
        assert!(
            parse(Path::new("t.yaml"), "# nothing\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let deep = "a:\n".to_string()
            + &(1..100)
                .map(|i| format!("{}- \n", " ".repeat(i)))
                .collect::<String>();
        assert!(parse(Path::new("t.yaml"), &deep).is_err());
        let flow = "[".repeat(10_000);
        assert!(parse(Path::new("t.yaml"), &flow).is_err());
        let mut laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for i in 0..10 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            laughs += &format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            );
        }
        let err = parse(Path::new("t.yaml"), &laughs).unwrap_err();
        assert!(err.message.contains("too many"), "{err}");
    }
}
