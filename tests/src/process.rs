//! Child processes with captured logs, killed on drop.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::wait::poll;

/// How many trailing lines of each log go into panic messages…
const TAIL_LINES: usize = 40;
/// …and at most how many bytes.
const TAIL_BYTES: usize = 8 * 1024;

/// A spawned child process whose stdout and stderr are written to
/// `<dir>/<name>.stdout.log` and `<dir>/<name>.stderr.log`.
///
/// Dropping it kills and reaps the process. If the thread is panicking, the
/// log tails are printed and the temp dir is kept for inspection.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Mutex<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
    /// Set once the log tails went into a panic message.
    reported: AtomicBool,
}

impl Process {
    /// Spawns `cmd` with stdin closed and its output going to log files in
    /// `dir`, which the process then owns. Panics if it can't be spawned.
    pub fn spawn(name: &str, mut cmd: Command, dir: TempDir) -> Process {
        let stdout = dir.path().join(format!("{name}.stdout.log"));
        let stderr = dir.path().join(format!("{name}.stderr.log"));
        let out = File::create(&stdout).expect("creating stdout log");
        let err = File::create(&stderr).expect("creating stderr log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({cmd:?}): {e}"));
        Process {
            name: name.to_owned(),
            child: Mutex::new(child),
            stdout,
            stderr,
            dir,
            reported: AtomicBool::new(false),
        }
    }

    /// The process's temp dir (logs and any files the harness put there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Both logs, labelled.
    pub fn logs(&self) -> String {
        format!(
            "----- {name} stdout -----\n{}\n----- {name} stderr -----\n{}",
            self.stdout(),
            self.stderr(),
            name = self.name
        )
    }

    /// The last lines of both logs, labelled; for panic messages.
    pub fn log_tail(&self) -> String {
        format!(
            "----- {name} stdout (tail) -----\n{}\n----- {name} stderr (tail) -----\n{}",
            tail(&self.stdout(), TAIL_LINES, TAIL_BYTES),
            tail(&self.stderr(), TAIL_LINES, TAIL_BYTES),
            name = self.name
        )
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// Panics with `msg` followed by the log tails.
    pub fn fail(&self, msg: &str) -> ! {
        self.reported.store(true, Ordering::SeqCst);
        panic!(
            "{}: {msg}\n(logs in {})\n{}",
            self.name,
            self.dir().display(),
            self.log_tail()
        )
    }

    /// Like [`crate::wait_until`], but also fails early if the process exits,
    /// and the panic message includes the log tails.
    pub async fn wait_until<F, Fut, T>(&self, what: &str, deadline: Duration, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let check = || match self.try_exit_status() {
            Some(status) => Err(format!("the process exited ({status})")),
            None => Ok(()),
        };
        match poll(deadline, f, check).await {
            Ok(v) => v,
            Err(why) => self.fail(&why.message(what, deadline)),
        }
    }

    /// Waits until `path` exists and `parse` accepts its contents (so
    /// half-written files are retried), failing like [`Process::wait_until`].
    pub async fn wait_for_file<T>(
        &self,
        path: &Path,
        deadline: Duration,
        mut parse: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let what = format!("{} to be written", path.display());
        self.wait_until(&what, deadline, || {
            let parsed = std::fs::read_to_string(path).ok().and_then(|s| parse(&s));
            async move { parsed }
        })
        .await
    }

    /// Kills the process (if still running) and waits for it.
    pub fn kill(&self) {
        let mut child = self.lock();
        let _ = child.kill();
        let _ = child.wait();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("{} logs kept in {}", self.name, self.dir().display());
            if !self.reported.load(Ordering::SeqCst) {
                eprintln!("{}", self.log_tail());
            }
        }
    }
}

/// Runs `cmd` to completion with captured stdout/stderr, killing it if it
/// takes longer than `deadline` (then the error kind is `TimedOut`).
pub fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let readers = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .map(|reader| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = reader {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {deadline:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let [stdout, stderr] = readers.map(|h| h.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `text`, cut further to whole lines within the last
/// `max_bytes` bytes (or, for one huge line, its last `max_bytes` bytes).
fn tail(text: &str, n: usize, max_bytes: usize) -> &str {
    if n == 0 || max_bytes == 0 {
        return "";
    }
    let trimmed = text.trim_end_matches('\n');
    let by_lines = match trimmed.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => i + 1,
        None => 0,
    };
    let mut by_bytes = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(by_bytes) {
        by_bytes += 1;
    }
    if by_bytes <= by_lines {
        return &text[by_lines..];
    }
    // Start at the next whole line inside the byte budget, if there is one.
    match text[by_bytes..].find('\n') {
        Some(i) if by_bytes + i + 1 < text.len() => &text[by_bytes + i + 1..],
        _ => &text[by_bytes..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines() {
        assert_eq!(tail("a\nb\nc\n", 2, 100), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 5, 100), "a\nb\nc");
        assert_eq!(tail("", 3, 100), "");
        assert_eq!(tail("aaaa\nbbbb\ncc\n", 10, 6), "cc\n");
        assert_eq!(tail("aaaaaaaa", 10, 3), "aaa");
        assert_eq!(tail("aaaa\nbbbbbbb\n", 10, 4), "bbb\n");
    }

    #[test]
    fn run_with_deadline_captures_and_times_out() {
        let out = run_with_deadline(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
        )
        .expect("sh runs");
        assert!(out.status.success());
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");

        let err = run_with_deadline(Command::new("sleep").arg("30"), Duration::from_millis(100))
            .expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
