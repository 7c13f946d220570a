//! The configuration in force and the outcome of the last reload.
//!
//! `reload` is the only way configuration changes: load + validate the files, and only if that
//! succeeds translate and publish. A failed reload changes nothing but the error report.

use crate::cache::SnapshotCache;
use crate::config::{self, ConfigError};
use crate::model::Config;
use arc_swap::ArcSwap;
use serde::Serialize;
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
                if !first && **self.current.load() == config {
                    tracing::debug!("configuration unchanged");
                    return Ok(false);
                }
                let generation = self.generation.load(Ordering::Acquire) + 1;
                self.cache.publish(&config, generation);
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
