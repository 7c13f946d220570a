//! The ambassador: legate-proxy inside the demo process, or stock Envoy as a child process.
//!
//! Both get the same bootstrap (`legate-cp bootstrap envoy --node checkout`, built by
//! [`EnvoyBootstrap`]). legate-proxy runs in-process through
//! `legate_proxy::server::run_embedded`: `cargo run -p legate-demo` then builds and starts one
//! binary, nothing has to find a separately built `legate-proxy`, and Ctrl-C cannot leave a
//! proxy behind. Envoy is a child process in its own process group (so the terminal's Ctrl-C
//! reaches only the demo, which stops Envoy deliberately: SIGTERM, then SIGKILL after a grace
//! period, always reaped); on Linux it also gets SIGTERM if the demo dies without cleaning up.

use anyhow::Context as _;
use clap::Parser as _;
use legate_control_plane::bootstrap::EnvoyBootstrap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which data plane to run.
#[derive(Clone, Debug)]
pub enum Kind {
    /// legate-proxy, in-process.
    Legate,
    /// Stock Envoy, this binary.
    Envoy(PathBuf),
}

/// A running ambassador.
pub struct Ambassador {
    /// `legate-proxy` or `envoy`.
    pub name: &'static str,
    /// Its admin address.
    pub admin: SocketAddr,
    inner: Inner,
}

enum Inner {
    Embedded(legate_proxy::server::Embedded),
    Child(ChildGuard),
}

impl Ambassador {
    /// Writes the bootstrap into `dir` and starts the data plane on it.
    pub async fn start(kind: Kind, dir: &Path, bootstrap: &EnvoyBootstrap) -> anyhow::Result<Self> {
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, bootstrap.to_yaml()?)
            .with_context(|| format!("writing {}", path.display()))?;
        let admin = SocketAddr::new(
            bootstrap.admin_host.parse().context("admin host")?,
            bootstrap.admin_port,
        );
        match kind {
            Kind::Legate => {
                let args: [OsString; 4] = [
                    "legate-proxy".into(),
                    "-c".into(),
                    path.clone().into_os_string(),
                    "--disable-hot-restart".into(),
                ];
                let opts = legate_proxy::cli::Options::try_parse_from(args)
                    .context("legate-proxy options")?;
                let (boot, warnings) = legate_proxy::bootstrap::load(&opts)
                    .map_err(|e| anyhow::anyhow!("legate-proxy: {e}"))?;
                for w in &warnings {
                    tracing::warn!(field = %w.field, "{}", w.message);
                }
                let proxy = legate_proxy::server::run_embedded(boot, opts)
                    .await
                    .map_err(|e| anyhow::anyhow!("legate-proxy: {e}"))?;
                Ok(Ambassador {
                    name: "legate-proxy",
                    admin: proxy.admin.unwrap_or(admin),
                    inner: Inner::Embedded(proxy),
                })
            }
            Kind::Envoy(bin) => {
                let log = dir.join("envoy.log");
                let out = std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?;
                let mut cmd = Command::new(&bin);
                cmd.arg("-c")
                    .arg(&path)
                    .args(["--disable-hot-restart", "--log-level", "info"])
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out);
                isolate(&mut cmd);
                let child = cmd
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                tracing::info!(pid = child.id(), bin = %bin.display(), "envoy started");
                Ok(Ambassador {
                    name: "envoy",
                    admin,
                    inner: Inner::Child(ChildGuard {
                        child: Some(child),
                        log,
                    }),
                })
            }
        }
    }

    /// The child's pid (Envoy only).
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Child(c) => c.child.as_ref().map(Child::id),
            Inner::Embedded(_) => None,
        }
    }

    /// Where the ambassador's own log goes, if not into the demo's log.
    pub fn log_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Child(c) => Some(&c.log),
            Inner::Embedded(_) => None,
        }
    }

    /// Resolves when the ambassador stops on its own (Envoy exits; `/quitquitquit`), with why.
    pub async fn stopped(&mut self) -> String {
        match &mut self.inner {
            Inner::Embedded(p) => {
                p.quit_requested().await;
                "legate-proxy: /quitquitquit".to_owned()
            }
            Inner::Child(c) => c.exited().await,
        }
    }

    /// Stops the ambassador and waits for it. In-process, the proxy's tasks end with the
    /// demo's runtime.
    pub async fn stop(&mut self) {
        if let Inner::Child(c) = &mut self.inner {
            c.stop().await;
        }
    }
}

/// Puts the child in its own process group and, on Linux, asks for SIGTERM when the demo dies.
fn isolate(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec. The parent
    // death signal fires when the thread that forked exits: the demo spawns Envoy from its main
    // thread (the `block_on` future), which lives as long as the process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child process that is always killed and reaped: by [`ChildGuard::stop`], or on drop.
struct ChildGuard {
    child: Option<Child>,
    log: PathBuf,
}

impl ChildGuard {
    async fn exited(&mut self) -> String {
        loop {
            match self.child.as_mut().map(Child::try_wait) {
                None => return "envoy: not running".into(),
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return format!(
                        "envoy exited ({status}); its log: {}\n{}",
                        self.log.display(),
                        tail(&self.log, 15)
                    );
                }
                Some(Ok(None)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Some(Err(e)) => return format!("envoy: {e}"),
            }
        }
    }

    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::info!(%status, "envoy stopped");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("envoy did not stop within {STOP_GRACE:?}: SIGKILL");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain syscall on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
