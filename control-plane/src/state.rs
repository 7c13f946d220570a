//! The configuration in force and the outcome of the last reload.
//!
//! `reload` is the only way configuration changes: load + validate the files, and only if that
//! succeeds translate and publish. A failed reload changes nothing but the error report.
//!
//! TLS files are part of the configuration: the loader reads them, so a certificate rotation is
//! a reload whose model differs only in PEM bytes. Translation then changes only the SDS secrets
//! (their names, and so the clusters, stay), and an unreadable or mismatched file is a rejected
//! reload that keeps the last good secrets.

use crate::cache::SnapshotCache;
use crate::config::{self, ConfigError};
use crate::model::Config;
use crate::translate::grpc::Resolved;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The outcome of the last reload attempt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    /// True when the last attempt was accepted (or changed nothing).
    pub ok: bool,
    /// Every error of the last attempt, as `file:line:col: message`.
    pub errors: Vec<String>,
    /// Seconds since the Unix epoch of the last attempt.
    pub at_unix: u64,
}

/// Configuration in force, with reload bookkeeping.
pub struct ConfigState {
    /// The file or directory being served.
    pub source: PathBuf,
    /// The last good configuration.
    pub current: ArcSwap<Config>,
    /// Generation of `current`; 0 before the first good load.
    pub generation: AtomicU64,
    /// The last attempt's outcome.
    pub last_reload: ArcSwap<ReloadReport>,
    /// Accepted configurations that changed something.
    pub reloads_total: AtomicU64,
    /// Rejected configurations.
    pub reload_errors_total: AtomicU64,
    /// Where translated snapshots go.
    pub cache: Arc<SnapshotCache>,
    /// Addresses of the DNS names of `current`'s endpoints, for gRPC clients (see `dns.rs`).
    pub resolved: ArcSwap<Resolved>,
}

impl ConfigState {
    /// State for `source`, with nothing loaded yet.
    pub fn new(source: PathBuf, cache: Arc<SnapshotCache>) -> Self {
        ConfigState {
            source,
            current: ArcSwap::from_pointee(Config::default()),
            generation: AtomicU64::new(0),
            last_reload: ArcSwap::from_pointee(ReloadReport::default()),
            reloads_total: AtomicU64::new(0),
            reload_errors_total: AtomicU64::new(0),
            cache,
            resolved: ArcSwap::from_pointee(Resolved::new()),
        }
    }

    /// Loads the source again. On success with a changed model, publishes a new generation and
    /// returns `Ok(true)`; an unchanged model returns `Ok(false)`. On failure the last good
    /// configuration stays in force and every error is logged and reported.
    pub fn reload(&self) -> Result<bool, Vec<ConfigError>> {
        let at_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match config::load(&self.source) {
            Ok(config) => {
                self.last_reload.store(Arc::new(ReloadReport {
                    ok: true,
                    errors: Vec::new(),
                    at_unix,
                }));
                let first = self.generation.load(Ordering::Acquire) == 0;
                let resolved = crate::dns::resolve(&config, &self.resolved.load());
                if !first && **self.current.load() == config && **self.resolved.load() == resolved {
                    tracing::debug!("configuration unchanged");
                    return Ok(false);
                }
                let generation = self.generation.load(Ordering::Acquire) + 1;
                self.cache.publish_with(&config, &resolved, generation);
                self.resolved.store(Arc::new(resolved));
                self.current.store(Arc::new(config));
                self.generation.store(generation, Ordering::Release);
                self.reloads_total.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation, source = %self.source.display(), "configuration accepted");
                Ok(true)
            }
            Err(errors) => {
                self.reload_errors_total.fetch_add(1, Ordering::Relaxed);
                for e in &errors {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    errors = errors.len(),
                    generation = self.generation.load(Ordering::Acquire),
                    "configuration rejected; the last good configuration stays in force"
                );
                self.last_reload.store(Arc::new(ReloadReport {
                    ok: false,
                    errors: errors.iter().map(ToString::to_string).collect(),
                    at_unix,
                }));
                Err(errors)
            }
        }
    }
}

impl ConfigState {
    /// Resolves the DNS names of the configuration in force again and, if an answer changed,
    /// publishes a new generation (for gRPC clients' endpoints). Returns whether it did.
    pub fn refresh_dns(&self) -> bool {
        if self.generation.load(Ordering::Acquire) == 0 {
            return false;
        }
        let config = self.current.load_full();
        if crate::dns::names(&config).is_empty() {
            return false;
        }
        let resolved = crate::dns::resolve(&config, &self.resolved.load());
        if **self.resolved.load() == resolved {
            return false;
        }
        let generation = self.generation.load(Ordering::Acquire) + 1;
        self.cache.publish_with(&config, &resolved, generation);
        self.resolved.store(Arc::new(resolved));
        self.generation.store(generation, Ordering::Release);
        tracing::info!(
            generation,
            "DNS answers changed; endpoints for gRPC clients updated"
        );
        true
    }
}

/// The directories to watch for the TLS files a configuration names: for each file, the
/// directory it is named in (where Kubernetes and cert-manager swap their `..data` symlink, and
/// editors rename on save) and, when the path goes through symlinks, the directory of the file it
/// resolves to (where an in-place write happens). Recomputed after every reload, since paths and
/// symlink targets change.
pub fn tls_watch_dirs(config: &Config) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for svc in config.services.values() {
        let Some(tls) = &svc.tls else {
            continue;
        };
        let mut files: Vec<&Path> = Vec::new();
        if let Some(ca) = &tls.ca {
            files.push(&ca.path);
        }
        if let Some(id) = &tls.identity {
            files.push(&id.cert.path);
            files.push(id.key.path());
        }
        for file in files {
            dirs.insert(parent_dir(file));
            if let Ok(real) = std::fs::canonicalize(file) {
                dirs.insert(parent_dir(&real));
            }
        }
    }
    dirs
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The paths to watch for a source: the directory itself, or a file's parent directory (which
/// also catches editors' rename-on-save and Kubernetes' `..data` symlink swaps).
pub fn watch_root(source: &Path) -> PathBuf {
    if source.is_dir() {
        source.to_path_buf()
    } else {
        match source.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Snapshot;
    use crate::certs::{InitOptions, init};
    use legate_proto::type_url;
    use std::collections::BTreeMap;

    const YAML: &str = "
services:
  payments:
    endpoints: [127.0.0.1:9001]
    tls: { ca: certs/ca.pem, cert: certs/checkout.pem, key: certs/checkout.key }
  plain:
    endpoints: [127.0.0.1:9002]
ambassadors:
  checkout:
    listen: 127.0.0.1:10000
";

    /// Versions of one type in the `checkout` snapshot, by name.
    pub(crate) fn versions(state: &ConfigState, t: &str) -> BTreeMap<String, u64> {
        snapshot(state).types[t]
            .items
            .iter()
            .map(|(name, r)| (name.clone(), r.hash))
            .collect()
    }

    fn snapshot(state: &ConfigState) -> Arc<Snapshot> {
        state.cache.current().by_ambassador["checkout"].clone()
    }

    /// A state over `svc.yaml` next to `certs/` (payments, checkout), loaded once.
    fn fixture() -> (tempfile::TempDir, ConfigState) {
        let dir = tempfile::tempdir().unwrap();
        init(&InitOptions::new(
            dir.path().join("certs"),
            "example.org",
            &["payments", "checkout"],
        ))
        .unwrap();
        std::fs::write(dir.path().join("svc.yaml"), YAML).unwrap();
        let state = ConfigState::new(dir.path().join("svc.yaml"), Arc::new(SnapshotCache::new()));
        assert_eq!(state.reload(), Ok(true));
        (dir, state)
    }

    #[test]
    fn a_rotation_publishes_new_secrets_and_leaves_clusters_alone() {
        let (dir, state) = fixture();
        let clusters = versions(&state, type_url::CLUSTER);
        let secrets = versions(&state, type_url::SECRET);
        assert_eq!(
            secrets.keys().collect::<Vec<_>>(),
            ["payments/ca", "payments/cert"]
        );
        let before = snapshot(&state);

        let mut rotate = InitOptions::new(dir.path().join("certs"), "example.org", &["checkout"]);
        rotate.keep_ca = true;
        rotate.force = true;
        init(&rotate).unwrap();
        assert_eq!(state.reload(), Ok(true));
        assert_eq!(state.generation.load(Ordering::Acquire), 2);

        assert_eq!(versions(&state, type_url::CLUSTER), clusters);
        let after = snapshot(&state);
        for name in ["payments", "plain"] {
            assert!(
                Arc::ptr_eq(
                    &before.types[type_url::CLUSTER].items[name],
                    &after.types[type_url::CLUSTER].items[name]
                ),
                "cluster {name} is the very same resource"
            );
        }
        for t in [type_url::ENDPOINT, type_url::LISTENER, type_url::ROUTE] {
            assert_eq!(before.types[t], after.types[t], "{t}");
        }
        let rotated = versions(&state, type_url::SECRET);
        assert_ne!(rotated["payments/cert"], secrets["payments/cert"]);
        assert_eq!(rotated["payments/ca"], secrets["payments/ca"]);
    }

    #[test]
    fn a_bad_file_is_rejected_and_the_last_good_secrets_stay() {
        let (dir, state) = fixture();
        let good = snapshot(&state);
        let certs = dir.path().join("certs");

        // A key that does not match the certificate (a half-done rotation).
        std::fs::copy(certs.join("payments.key"), certs.join("checkout.key")).unwrap();
        let errors = state.reload().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .contains("does not match the first certificate"),
            "{}",
            errors[0]
        );
        assert!(Arc::ptr_eq(&good, &snapshot(&state)));
        assert_eq!(state.generation.load(Ordering::Acquire), 1);
        assert!(!state.last_reload.load().ok);

        // An unreadable (here: missing) certificate.
        std::fs::remove_file(certs.join("checkout.pem")).unwrap();
        let errors = state.reload().unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("cannot read `cert` file")),
            "{errors:?}"
        );
        assert!(Arc::ptr_eq(&good, &snapshot(&state)));

        // Fixed: a new pair is accepted.
        let mut fix = InitOptions::new(&certs, "example.org", &["checkout"]);
        fix.keep_ca = true;
        fix.force = true;
        init(&fix).unwrap();
        assert_eq!(state.reload(), Ok(true));
        assert!(state.last_reload.load().ok);
    }

    #[test]
    fn tls_watch_dirs_cover_named_and_resolved_directories() {
        let (dir, state) = fixture();
        let certs = dir.path().join("certs");
        assert_eq!(
            tls_watch_dirs(&state.current.load()),
            BTreeSet::from([certs.clone(), certs.canonicalize().unwrap()])
                .into_iter()
                .collect()
        );
    }
}
