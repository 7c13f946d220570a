//! YAML loader: files → validated [`crate::model::Config`], with `file:line:col` errors.
//!
//! Loading happens in three passes:
//! 1. each file is parsed into a tree of `node::Node`s that remember their position;
//! 2. the `services:` and `ambassadors:` entries of every file are gathered by name (a name defined
//!    twice is an error naming both places);
//! 3. each entry is read into the typed model (`service`, `ambassador`), checking types,
//!    ranges, unknown keys and cross-references.
//!
//! Every problem found is reported, not just the first one.

mod address;
mod ambassador;
mod duration;
mod node;
mod reader;
mod service;
mod tls;

use crate::model::{Config, Location};
use node::{Kind, Node};
use reader::{Diag, MapReader, describe};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One problem in the configuration. Display is `file:line:col: message` (just `file: message`
/// when there's no position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, when it is at a particular place in a file.
    pub location: Option<Location>,
    /// The file (or directory) the problem is in.
    pub file: PathBuf,
    /// What is wrong, and usually how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A problem at a position.
    pub(crate) fn at(loc: &Location, message: impl Into<String>) -> Self {
        ConfigError {
            location: Some(loc.clone()),
            file: loc.file.clone(),
            message: message.into(),
        }
    }

    /// A problem with a whole file or directory.
    pub(crate) fn in_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            location: None,
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    fn sort_key(&self) -> (&Path, usize, usize) {
        let (line, col) = self
            .location
            .as_ref()
            .map_or((0, 0), |loc| (loc.line, loc.col));
        (&self.file, line, col)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `errors`, one per line (`file:line:col: message`), as legate-cp reports a configuration it
/// refuses.
pub fn error_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads one file, or every `*.yaml`/`*.yml` file in a directory (sorted by name, merged).
/// Returns ALL errors found (not only the first), sorted by file/line/col.
///
/// In a directory, hidden files (names starting with `.`, such as editor lock files) and
/// subdirectories are skipped.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| vec![ConfigError::in_file(path, format!("cannot read: {e}"))])?;
    let files = if meta.is_dir() {
        yaml_files_in(path).map_err(|e| vec![e])?
    } else {
        vec![path.to_path_buf()]
    };
    let mut diag = Diag::default();
    let mut parsed = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => parsed.push(parse_file(&file, &text, &mut diag)),
            Err(e) => diag.push(ConfigError::in_file(&file, format!("cannot read: {e}"))),
        }
    }
    build(&parsed, diag)
}

/// Same as [`load`], from text already in memory; `file` is used only for messages and for
/// resolving relative tls paths (relative to file's parent dir).
pub fn load_str(file: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut diag = Diag::default();
    let parsed = vec![parse_file(file, text, &mut diag)];
    build(&parsed, diag)
}

/// The `*.yaml` and `*.yml` files directly in `dir`, sorted by name.
fn yaml_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let cannot =
        |e: std::io::Error| ConfigError::in_file(dir, format!("cannot read directory: {e}"));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if !is_yaml || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks; a dangling one is reported when it is read.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        files.push(path);
    }
    if files.is_empty() {
        return Err(ConfigError::in_file(
            dir,
            "no *.yaml or *.yml files in this directory",
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The YAML documents of one file (none when it does not parse; the error is in `diag`).
fn parse_file(file: &Path, text: &str, diag: &mut Diag) -> Vec<Node> {
    node::parse(file, text).unwrap_or_else(|e| {
        diag.push(e);
        Vec::new()
    })
}

/// A named entry (a service or an ambassador) found in some file.
struct Entry<'n> {
    key: &'n Node,
    value: &'n Node,
}

/// Entries by name; a name defined twice is reported and the first definition kept.
#[derive(Default)]
struct Entries<'n>(BTreeMap<String, Entry<'n>>);

impl<'n> Entries<'n> {
    /// Adds every entry of the `section` mapping (`services` or `ambassadors`) of one document.
    fn add_section(&mut self, section: &'n Node, kind: &str, diag: &mut Diag) {
        let entries = match &section.kind {
            Kind::Map(entries) => entries,
            Kind::Null => return,
            _ => {
                diag.at(
                    &section.loc,
                    format!(
                        "`{kind}s` must be a mapping of names to definitions, found {}",
                        describe(section)
                    ),
                );
                return;
            }
        };
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                diag.at(
                    &key.loc,
                    format!("a {kind} name must be text, found {}", describe(key)),
                );
                continue;
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                diag.at(
                    &key.loc,
                    format!(
                        "invalid {kind} name `{name}`: use only letters, digits, `_`, `.` and `-`"
                    ),
                );
                continue;
            }
            if let Some(first) = self.0.get(name) {
                diag.at(
                    &key.loc,
                    format!(
                        "{kind} `{name}` is defined twice; first at {}",
                        first.key.loc
                    ),
                );
                continue;
            }
            self.0.insert(name.to_string(), Entry { key, value });
        }
    }
}

/// Gathers the entries of every file, then reads them into a [`Config`].
fn build(files: &[Vec<Node>], mut diag: Diag) -> Result<Config, Vec<ConfigError>> {
    let mut services = Entries::default();
    let mut ambassadors = Entries::default();
    for root in files.iter().flatten() {
        if root.kind == Kind::Null {
            continue;
        }
        let Some(mut top) = MapReader::new(root, "the top level", &mut diag) else {
            continue;
        };
        if let Some(section) = top.get("services") {
            services.add_section(section, "service", &mut diag);
        }
        if let Some(section) = top.get("ambassadors") {
            ambassadors.add_section(section, "ambassador", &mut diag);
        }
        top.finish(&mut diag);
    }

    let mut config = Config::default();
    for (name, entry) in &services.0 {
        if let Some(s) = service::build(name, &entry.key.loc, entry.value, &mut diag) {
            config.services.insert(name.clone(), s);
        }
    }
    // Cross-references are checked against every defined service, valid or not, so that one
    // broken service does not also produce "unknown service" errors elsewhere.
    let names: BTreeSet<String> = services.0.keys().cloned().collect();
    for (name, entry) in &ambassadors.0 {
        if let Some(a) = ambassador::build(name, &entry.key.loc, entry.value, &names, &mut diag) {
            config.ambassadors.insert(name.clone(), a);
        }
    }

    if diag.errors.is_empty() {
        return Ok(config);
    }
    let mut errors = diag.errors;
    errors.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    // An error inside an aliased node is found once per alias, at the same place.
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    Err(errors)
}

#[cfg(test)]
mod tests;
