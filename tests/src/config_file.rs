//! legate-cp configuration for tests: a small builder of service YAML and a watched config file
//! that can be replaced atomically (as editors and `kubectl` do).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use tempfile::TempDir;

/// The services and ambassadors of a legate-cp YAML file.
#[derive(Clone, Debug, Default)]
pub struct Yaml {
    services: Vec<(String, Vec<SocketAddr>)>,
    ambassadors: Vec<(String, u16)>,
}

impl Yaml {
    /// Adds service `name` with static `endpoints`.
    pub fn service(mut self, name: &str, endpoints: &[SocketAddr]) -> Yaml {
        self.services.push((name.to_owned(), endpoints.to_vec()));
        self
    }

    /// An ambassador listening on `127.0.0.1:<port>`, calling every service.
    pub fn ambassador(mut self, name: &str, port: u16) -> Yaml {
        self.ambassadors.push((name.to_owned(), port));
        self
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        let mut out = String::from("services:\n");
        for (name, endpoints) in &self.services {
            let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  {name}:\n    endpoints: [{}]", list.join(", "));
        }
        out += "ambassadors:\n";
        for (name, port) in &self.ambassadors {
            let _ = writeln!(out, "  {name}:\n    listen: 127.0.0.1:{port}");
        }
        out
    }
}

/// A config file alone in its own temp dir (legate-cp watches the directory).
pub struct ConfigFile {
    dir: TempDir,
    /// The file legate-cp reads.
    pub path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` to `legate.yaml` in a fresh temp dir.
    pub fn new(text: &str) -> ConfigFile {
        let dir = TempDir::with_prefix("legate-e2e-config-").expect("temp dir");
        let path = dir.path().join("legate.yaml");
        std::fs::write(&path, text).expect("writing config");
        ConfigFile { dir, path }
    }

    /// Replaces the file atomically: write a temp file next to it, rename it over the original.
    pub fn replace(&self, text: &str) {
        let tmp = self.dir.path().join(".legate.yaml.tmp");
        std::fs::write(&tmp, text).expect("writing temp config");
        std::fs::rename(&tmp, &self.path).expect("renaming temp config over the config");
    }
}
