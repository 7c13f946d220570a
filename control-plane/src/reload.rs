//! Hot reload triggers: file-system events (debounced) and SIGHUP; and every
//! [`crate::dns::REFRESH`], endpoints' DNS names are resolved again for gRPC clients.
//!
//! Watched: the configuration source (its directory, or a file's parent directory) and the
//! directories of every TLS file the configuration in force names (see
//! [`crate::state::tls_watch_dirs`]), so certificate rotation, including Kubernetes' and
//! cert-manager's atomic `..data` symlink swap, reloads like an edit of the YAML. The TLS set is
//! recomputed after every reload.

use crate::state::{ConfigState, tls_watch_dirs, watch_root};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last file event before reloading, so one save is one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the configuration source and reloads on change or SIGHUP, until the task is dropped.
pub async fn run(state: Arc<ConfigState>) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let root = watch_root(&state.source);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = event
            && !ev.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&root, RecursiveMode::NonRecursive)?;
    tracing::info!(path = %root.display(), "watching configuration");
    let mut tls_dirs = TlsWatches::default();
    tls_dirs.update(&mut watcher, &root, &state);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut dns = tokio::time::interval(crate::dns::REFRESH);
    dns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    dns.reset();
    loop {
        tokio::select! {
            _ = dns.tick() => {
                // gRPC clients get IP literals: re-resolve endpoints' DNS names (see dns.rs).
                tokio::task::block_in_place(|| state.refresh_dns());
            }
            ev = rx.recv() => {
                if ev.is_none() {
                    return Ok(());
                }
                // Debounce: wait until no event arrived for DEBOUNCE.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                reload(&state);
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                reload(&state);
            }
        }
        tls_dirs.update(&mut watcher, &root, &state);
    }
}

fn reload(state: &ConfigState) {
    // Errors are logged and reported by `reload` itself; the last good config stays.
    let _ = state.reload();
}

/// The TLS directories being watched (besides the configuration root).
#[derive(Default)]
struct TlsWatches {
    dirs: BTreeSet<PathBuf>,
}

impl TlsWatches {
    /// Watches the directories the configuration in force needs, and stops watching the others.
    /// A directory that cannot be watched now is logged and tried again after the next reload.
    fn update(&mut self, watcher: &mut RecommendedWatcher, root: &PathBuf, state: &ConfigState) {
        let mut wanted = tls_watch_dirs(&state.current.load());
        wanted.remove(root);
        for gone in self.dirs.difference(&wanted) {
            // The directory may be gone already (a replaced `..2024_…` target); nothing to undo.
            let _ = watcher.unwatch(gone);
        }
        let mut now = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                now.insert(dir);
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(path = %dir.display(), "watching TLS files");
                    now.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot watch TLS directory");
                }
            }
        }
        self.dirs = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::SnapshotCache;
    use crate::certs::{InitOptions, init};
    use legate_proto::type_url;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::sync::atomic::Ordering;

    /// One resource's content hash in the `checkout` snapshot.
    fn hash(state: &ConfigState, t: &str, name: &str) -> u64 {
        state.cache.current().by_ambassador["checkout"].types[t].items[name].hash
    }

    /// Writes a Kubernetes-style secret volume version: `dir/<version>/` with the CA and a fresh
    /// `checkout` leaf from the CA in `ca_dir`.
    fn secret_version(ca_dir: &Path, dir: &Path, version: &str) {
        let v = dir.join(version);
        std::fs::create_dir_all(&v).unwrap();
        for f in ["ca.pem", "ca.key"] {
            std::fs::copy(ca_dir.join(f), v.join(f)).unwrap();
        }
        let mut opts = InitOptions::new(&v, "example.org", &["checkout"]);
        opts.keep_ca = true;
        init(&opts).unwrap();
    }

    /// A Kubernetes/cert-manager rotation: the files are symlinks through `..data`, which is
    /// swapped atomically to a new version directory. The watcher sees it (in the parent
    /// directory) and publishes new secrets; the clusters keep their version.
    #[tokio::test]
    async fn a_kubernetes_style_symlink_swap_rotates_the_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        init(&InitOptions::new(&ca_dir, "example.org", &["payments"])).unwrap();
        let mount = dir.path().join("mount");
        secret_version(&ca_dir, &mount, "..2024_01");
        symlink("..2024_01", mount.join("..data")).unwrap();
        for f in ["ca.pem", "checkout.pem", "checkout.key"] {
            symlink(format!("..data/{f}"), mount.join(f)).unwrap();
        }
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).unwrap();
        std::fs::write(
            config_dir.join("svc.yaml"),
            "
services:
  payments:
    endpoints: [127.0.0.1:9001]
    tls: { ca: ../mount/ca.pem, cert: ../mount/checkout.pem, key: ../mount/checkout.key }
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
",
        )
        .unwrap();
        let state = Arc::new(ConfigState::new(
            config_dir.join("svc.yaml"),
            Arc::new(SnapshotCache::new()),
        ));
        state.reload().unwrap();
        let cluster = hash(&state, type_url::CLUSTER, "payments");
        let cert = hash(&state, type_url::SECRET, "payments/cert");
        let ca = hash(&state, type_url::SECRET, "payments/ca");
        let watcher = tokio::spawn(run(state.clone()));
        // Let the watcher start.
        tokio::time::sleep(Duration::from_millis(300)).await;

        secret_version(&ca_dir, &mount, "..2024_02");
        symlink("..2024_02", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        std::fs::remove_dir_all(mount.join("..2024_01")).unwrap();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while state.generation.load(Ordering::Acquire) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no reload after the swap: {:?}",
                state.last_reload.load()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(hash(&state, type_url::SECRET, "payments/cert"), cert);
        assert_eq!(hash(&state, type_url::SECRET, "payments/ca"), ca);
        assert_eq!(hash(&state, type_url::CLUSTER, "payments"), cluster);

        // A second swap works too (the watch set followed the new target directory).
        secret_version(&ca_dir, &mount, "..2024_03");
        symlink("..2024_03", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while state.generation.load(Ordering::Acquire) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no second reload");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(hash(&state, type_url::CLUSTER, "payments"), cluster);
        watcher.abort();
    }
}
