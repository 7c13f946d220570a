//! An Envoy child process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::Process;
use crate::{STARTUP_DEADLINE, cargo_bin, envoy_bin, http_get};

/// Which data plane binary runs a bootstrap. Both take the same file and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Stock Envoy, from [`envoy_bin`].
    Envoy,
    /// `legate-proxy`, built from this workspace.
    Legate,
}

impl Flavor {
    /// Both flavours, for tests that run the same scenario against each.
    pub const ALL: [Flavor; 2] = [Flavor::Envoy, Flavor::Legate];

    /// The binary to run.
    pub fn bin(self) -> std::path::PathBuf {
        match self {
            Flavor::Envoy => envoy_bin(),
            Flavor::Legate => cargo_bin("legate-proxy", "legate-proxy"),
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Envoy => "envoy",
            Flavor::Legate => "legate-proxy",
        }
    }
}

/// A running Envoy (from [`envoy_bin`]), killed on drop.
///
/// Started as `envoy -c <tmp>/bootstrap.yaml --disable-hot-restart
/// --admin-address-path <tmp>/admin.txt -l info --concurrency 1`; the bootstrap
/// should put the admin listener on port 0. `--concurrency 1` keeps load
/// balancing and per-worker state deterministic.
#[derive(Debug)]
pub struct Envoy {
    /// The bound admin address.
    pub admin: SocketAddr,
    process: Process,
}

impl Envoy {
    /// Starts Envoy with the given bootstrap YAML and waits until the admin
    /// address file is written and `GET /ready` answers 200 `LIVE`.
    pub async fn start(bootstrap_yaml: &str) -> Envoy {
        Self::start_with_args(bootstrap_yaml, &[]).await
    }

    /// Like [`Envoy::start`], with extra command-line arguments.
    pub async fn start_with_args(bootstrap_yaml: &str, extra_args: &[&str]) -> Envoy {
        Self::start_flavor(Flavor::Envoy, bootstrap_yaml, extra_args).await
    }

    /// Starts the data plane `flavor` with the same flags Envoy gets, and waits until its
    /// admin `/ready` answers 200 `LIVE`.
    pub async fn start_flavor(flavor: Flavor, bootstrap_yaml: &str, extra_args: &[&str]) -> Envoy {
        let bin = match flavor {
            Flavor::Envoy => flavor.bin(),
            Flavor::Legate => tokio::task::spawn_blocking(move || flavor.bin())
                .await
                .expect("building legate-proxy"),
        };
        let dir = TempDir::with_prefix("legate-envoy-").expect("creating temp dir");
        let bootstrap = dir.path().join("bootstrap.yaml");
        let admin_file = dir.path().join("admin.txt");
        std::fs::write(&bootstrap, bootstrap_yaml).expect("writing bootstrap");
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&bootstrap)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["-l", "info", "--concurrency", "1"])
            .args(extra_args);
        let process = Process::spawn(flavor.name(), cmd, dir);

        let admin = process
            .wait_for_file(&admin_file, STARTUP_DEADLINE, |s| s.trim().parse().ok())
            .await;
        process
            .wait_until(
                "the data plane's GET /ready to return 200 LIVE",
                STARTUP_DEADLINE,
                || async move {
                    match http_get(admin, "/ready", None).await {
                        Ok(r) if r.status == 200 && r.body.trim() == "LIVE" => Some(()),
                        _ => None,
                    }
                },
            )
            .await;
        Envoy { admin, process }
    }

    /// `GET http://<admin><path>` → (status, body). Panics (with the logs) if
    /// the request fails.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        match http_get(self.admin, &path, None).await {
            Ok(r) => (r.status, r.body),
            Err(e) => self
                .process
                .fail(&format!("GET {path} on the admin port: {e}")),
        }
    }

    /// `GET <path>` on the admin port, expecting 200 with JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.admin_get(path).await;
        if status != 200 {
            self.process
                .fail(&format!("GET {path} returned {status}: {body}"));
        }
        serde_json::from_str(&body).unwrap_or_else(|e| {
            self.process
                .fail(&format!("GET {path} is not JSON ({e}): {body}"))
        })
    }

    /// `GET /config_dump` as JSON.
    pub async fn config_dump(&self) -> serde_json::Value {
        self.admin_json("/config_dump").await
    }

    /// Every counter and gauge of `/stats` by name (histogram lines are left out). Panics
    /// (with the logs) unless the admin answers 200.
    pub async fn stats(&self) -> std::collections::BTreeMap<String, u64> {
        let (status, body) = self.admin_get("/stats").await;
        if status != 200 {
            self.process
                .fail(&format!("GET /stats returned {status}: {body}"));
        }
        body.lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The current value of a counter or gauge, if Envoy has it.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let json = self
            .admin_json(&format!("/stats?format=json&filter={}", stat_filter(name)))
            .await;
        json.get("stats")?
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))?
            .get("value")?
            .as_u64()
    }

    /// The bound address of the listener called `name` (from
    /// `/listeners?format=json`), waiting up to `deadline` for it to appear.
    pub async fn listener_addr(&self, name: &str, deadline: Duration) -> SocketAddr {
        let what = format!("Envoy listener {name:?}");
        self.process
            .wait_until(&what, deadline, || async move {
                let (status, body) = self.admin_get("/listeners?format=json").await;
                if status != 200 {
                    return None;
                }
                let json: serde_json::Value = serde_json::from_str(&body).ok()?;
                listener_address(&json, name)
            })
            .await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The underlying process (temp dir, raw logs, waits that fail with logs).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The temp dir holding the bootstrap and logs.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }
}

/// An anchored, URL-safe regex matching exactly `name`.
fn stat_filter(name: &str) -> String {
    let mut out = String::from("%5E");
    for c in name.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => out.push(c),
            '.' => out.push_str("%5C."),
            other => {
                let mut buf = [0; 4];
                for b in other.encode_utf8(&mut buf).bytes() {
                    if b.is_ascii_alphanumeric() {
                        out.push(b as char);
                    } else {
                        // Escape regex metacharacters, then percent-encode.
                        out.push_str(&format!("%5C%{b:02X}"));
                    }
                }
            }
        }
    }
    out.push_str("%24");
    out
}

/// Finds `name` in `/listeners?format=json` output.
fn listener_address(json: &serde_json::Value, name: &str) -> Option<SocketAddr> {
    let listener = json
        .get("listener_statuses")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(|n| n.as_str()) == Some(name))?;
    let sock = listener.get("local_address")?.get("socket_address")?;
    let ip = sock.get("address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(sock.get("port_value")?.as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_escapes() {
        assert_eq!(
            stat_filter("cluster.a_b.upstream_rq_200"),
            "%5Ecluster%5C.a_b%5C.upstream_rq_200%24"
        );
    }

    #[test]
    fn finds_listener() {
        let json = serde_json::json!({"listener_statuses": [
            {"name": "x", "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}},
            {"name": "y", "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}}},
        ]});
        assert_eq!(
            listener_address(&json, "y"),
            Some("127.0.0.1:2".parse().expect("addr"))
        );
        assert_eq!(listener_address(&json, "z"), None);
    }
}
