//! Worker threads: Envoy's threading model. Each worker is one OS thread running its own
//! single-threaded (current-thread) tokio runtime, an event loop that owns the listener sockets,
//! downstream connections and upstream connections it accepts or opens; nothing is stolen
//! between workers. The main thread's runtime keeps xDS, the admin API and the stats flush.
//!
//! [`Workers::ambient`] instead runs everything on whatever runtime calls it: used by
//! `run_embedded` (the demo) and by tests.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;

/// Where listeners run their accept loops and connections.
#[derive(Clone, Debug, Default)]
pub struct Workers {
    /// One handle per worker thread; empty: the ambient runtime.
    handles: Arc<[Handle]>,
}

std::thread_local! {
    /// Set on each worker thread: its index (for per-worker state such as idle connections).
    static WORKER_INDEX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// How many worker threads were started in this process (0: the ambient runtime only).
static STARTED: AtomicUsize = AtomicUsize::new(0);

impl Workers {
    /// No worker threads: listeners run on the runtime that activates them.
    pub fn ambient() -> Self {
        Workers::default()
    }

    /// Starts `n` (at least 1) worker threads, `legate-worker-<i>`, each with a current-thread
    /// runtime that runs until the process exits.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("legate-worker-{i}"))
                .spawn(move || {
                    WORKER_INDEX.with(|w| w.set(Some(i)));
                    // Drives the tasks spawned on this worker for the life of the process.
                    rt.block_on(std::future::pending::<()>());
                })?;
        }
        STARTED.fetch_max(n, Ordering::Relaxed);
        Ok(Workers {
            handles: handles.into(),
        })
    }

    /// The number of accept loops a listener gets: one per worker thread, or one on the
    /// ambient runtime.
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// True when listeners run on worker threads (one socket each, `SO_REUSEPORT`).
    pub fn threaded(&self) -> bool {
        !self.handles.is_empty()
    }

    /// Runs `future` on worker `index` (modulo the number of workers), or on the ambient runtime.
    pub fn spawn<F>(&self, index: usize, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(future);
        } else {
            self.handles[index % self.handles.len()].spawn(future);
        }
    }
}

/// The index of the worker thread this is called on, `None` off the worker threads.
pub fn current_index() -> Option<usize> {
    WORKER_INDEX.with(|w| w.get())
}

/// How many worker threads this process started (0 when it only has the ambient runtime).
pub fn started() -> usize {
    STARTED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_run_tasks_on_their_own_threads() {
        let workers = Workers::start(2).expect("start workers");
        assert_eq!(workers.count(), 2);
        assert!(workers.threaded());
        assert!(started() >= 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            workers.spawn(i, async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send((i, current_index(), name));
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a worker ran the task");
            seen.push(got);
        }
        seen.sort();
        for (i, index, name) in seen {
            assert_eq!(index, Some(i % 2), "task {i}");
            assert_eq!(name, Some(format!("legate-worker-{}", i % 2)), "task {i}");
        }
        assert_eq!(current_index(), None);
    }
}
