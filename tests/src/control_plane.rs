//! A `legate-cp serve` child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Process, run_with_deadline};
use crate::{STARTUP_DEADLINE, cargo_bin, http_get};

/// How long `legate-cp bootstrap …` may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// A running control plane:
/// `legate-cp serve --config <path> --xds 127.0.0.1:0 --admin 127.0.0.1:0 --address-file <tmp>/cp-addr.json`.
/// Killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    /// The bound xDS (gRPC) address.
    pub xds: SocketAddr,
    /// The bound admin (HTTP) address.
    pub admin: SocketAddr,
    bin: PathBuf,
    config: PathBuf,
    process: Process,
}

impl ControlPlane {
    /// Builds `legate-cp` if needed and starts it with `config`. Waits until the
    /// address file is written and `GET /ready` answers 200.
    pub async fn start(config: &Path) -> ControlPlane {
        let bin = tokio::task::spawn_blocking(|| cargo_bin("legate-control-plane", "legate-cp"))
            .await
            .expect("building legate-cp");
        Self::start_with_bin(&bin, config).await
    }

    /// Like [`ControlPlane::start`] with an already built `legate-cp` binary.
    pub async fn start_with_bin(bin: &Path, config: &Path) -> ControlPlane {
        Self::spawn(bin, config, "127.0.0.1:0", &[]).await
    }

    /// Like [`ControlPlane::start`], with more `serve` arguments (e.g. `--xds-tls-cert F`).
    pub async fn start_with_args(config: &Path, extra: &[std::ffi::OsString]) -> ControlPlane {
        let bin = tokio::task::spawn_blocking(|| cargo_bin("legate-control-plane", "legate-cp"))
            .await
            .expect("building legate-cp");
        Self::spawn(&bin, config, "127.0.0.1:0", extra).await
    }

    /// Like [`ControlPlane::start`], with the xDS server on the fixed address `xds`
    /// (e.g. from [`crate::free_port`]), so that a data plane's bootstrap stays valid
    /// across a restart of the control plane. The admin port is still chosen by the OS.
    pub async fn start_on(config: &Path, xds: SocketAddr) -> ControlPlane {
        let bin = tokio::task::spawn_blocking(|| cargo_bin("legate-control-plane", "legate-cp"))
            .await
            .expect("building legate-cp");
        let cp = Self::spawn(&bin, config, &xds.to_string(), &[]).await;
        assert_eq!(cp.xds, xds, "legate-cp bound another xDS address");
        cp
    }

    /// Starts `bin serve` with `--xds <xds>` and `extra` and waits until it is ready.
    async fn spawn(
        bin: &Path,
        config: &Path,
        xds: &str,
        extra: &[std::ffi::OsString],
    ) -> ControlPlane {
        let dir = TempDir::with_prefix("legate-cp-").expect("creating temp dir");
        let addr_file = dir.path().join("cp-addr.json");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--xds", xds, "--admin", "127.0.0.1:0"])
            .arg("--address-file")
            .arg(&addr_file)
            .args(extra);
        let process = Process::spawn("legate-cp", cmd, dir);

        let (xds, admin) = process
            .wait_for_file(&addr_file, STARTUP_DEADLINE, parse_addresses)
            .await;
        process
            .wait_until(
                "legate-cp GET /ready to return 200",
                STARTUP_DEADLINE,
                || async move {
                    match http_get(admin, "/ready", None).await {
                        Ok(r) if r.status == 200 => Some(()),
                        _ => None,
                    }
                },
            )
            .await;
        ControlPlane {
            xds,
            admin,
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            process,
        }
    }

    /// Runs `legate-cp bootstrap envoy --node <node> --xds <xds> --admin 127.0.0.1:0 [--delta]`
    /// and returns the YAML it prints. Panics with its stderr on failure.
    pub fn bootstrap_envoy(&self, node: &str, delta: bool) -> String {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["bootstrap", "envoy", "--node", node])
            .args(["--xds", &self.xds.to_string()])
            .args(["--admin", "127.0.0.1:0"]);
        if delta {
            cmd.arg("--delta");
        }
        let out = run_with_deadline(&mut cmd, COMMAND_DEADLINE)
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        if !out.status.success() {
            panic!(
                "{cmd:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).expect("bootstrap YAML is UTF-8")
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

    /// `GET /clients`, parsed as JSON. Panics unless it is 200 with JSON.
    pub async fn clients(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/clients").await;
        if status != 200 {
            self.process
                .fail(&format!("GET /clients returned {status}: {body}"));
        }
        serde_json::from_str(&body).unwrap_or_else(|e| {
            self.process
                .fail(&format!("GET /clients is not JSON ({e}): {body}"))
        })
    }

    /// The process id (e.g. for sending SIGHUP).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGHUP (asks legate-cp to reload its configuration).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(
            status.success(),
            "kill -HUP {} failed: {status}",
            self.pid()
        );
    }

    /// The configuration file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Its stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The underlying process (temp dir, raw logs, waits that fail with logs).
    pub fn process(&self) -> &Process {
        &self.process
    }
}

/// Parses `{"xds":"127.0.0.1:P","admin":"127.0.0.1:Q"}`.
fn parse_addresses(text: &str) -> Option<(SocketAddr, SocketAddr)> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let addr = |key: &str| json.get(key)?.as_str()?.parse::<SocketAddr>().ok();
    Some((addr("xds")?, addr("admin")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_file() {
        let (xds, admin) =
            parse_addresses(r#"{"xds":"127.0.0.1:1234","admin":"127.0.0.1:5678"}"#).expect("parse");
        assert_eq!(xds.port(), 1234);
        assert_eq!(admin.port(), 5678);
        assert!(parse_addresses(r#"{"xds":"127.0.0.1:1234""#).is_none());
        assert!(parse_addresses(r#"{"xds":"127.0.0.1:1234"}"#).is_none());
        assert!(parse_addresses("").is_none());
    }
}
