//! Hot reload triggers: file-system events (debounced) and SIGHUP.

use crate::state::{ConfigState, watch_root};
use notify::{RecursiveMode, Watcher};
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
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
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
    }
}

fn reload(state: &ConfigState) {
    // Errors are logged and reported by `reload` itself; the last good config stays.
    let _ = state.reload();
}
