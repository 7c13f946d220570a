//! The demo (issue 7): docker-compose.yml is valid for both profiles and mounts files that
//! exist, the shared bootstrap is what `legate-cp bootstrap envoy` prints and both data planes
//! accept it, and a bounded `legate-demo` run keeps ≥ 99% success through the ambassador
//! despite the flaky instance (with retries and an ejection to show for it), and calls its mTLS
//! service `ledger` successfully over TLS, against legate-proxy and against Envoy. Ctrl-C stops
//! the demo and its Envoy child.
//!
//! There is no Docker engine in CI: compose is checked with Debian's `docker-compose config`
//! (`.ci/run` installs it), never run.

use std::collections::BTreeSet;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use legate_e2e::{Process, cargo_bin, envoy_bin, run_with_deadline, workspace_root};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use tempfile::TempDir;

/// A bounded demo run: long enough for an ejection, a return and retries.
const DEMO_SECONDS: &str = "12";
/// Upper bound of a bounded demo run, start-up included.
const DEMO_DEADLINE: Duration = Duration::from_secs(30);
/// Upper bound of the quick commands (validate, config, bootstrap).
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// Where compose mounts examples/ (and what the container commands refer to).
const CONTAINER_CONFIG_DIR: &str = "/etc/legate/";

/// Every port the demo uses by default (upstreams, the mTLS upstream, ambassador admin and
/// listener, legate-cp).
const DEMO_PORTS: [u16; 11] = [
    9001, 9002, 9003, 9004, 9011, 9021, 9031, 9901, 10000, 18000, 19000,
];

fn docker_compose() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("docker-compose"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "docker-compose is not installed: `apt-get install -y --no-install-recommends \
             docker-compose` (Debian's; `bash .ci/run` installs it)"
        )
    })
}

fn compose_file() -> Yaml {
    let path = workspace_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("reading docker-compose.yml");
    let mut yaml: Yaml = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    yaml.apply_merge().expect("merge keys");
    yaml
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_config_is_valid_for_both_profiles() {
    let bin = docker_compose();
    for (profile, ambassador, other) in [
        ("envoy", "ambassador-envoy", "ambassador-rust"),
        ("rust", "ambassador-rust", "ambassador-envoy"),
    ] {
        let out = run_with_deadline(
            Command::new(&bin)
                .args(["--profile", profile, "config"])
                .current_dir(workspace_root()),
            COMMAND_DEADLINE,
        )
        .expect("running docker-compose");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "docker-compose --profile {profile} config: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let config: Yaml = serde_yaml::from_str(&stdout).expect("config prints YAML");
        let services = config["services"].as_mapping().expect("services");
        for name in ["control-plane", "upstreams", "app", ambassador] {
            assert!(services.contains_key(name), "{profile}: no service {name}");
        }
        assert_eq!(
            strings(&config["services"][ambassador]["profiles"]),
            [profile],
            "{ambassador} runs only under --profile {profile}"
        );
        assert_ne!(
            strings(&config["services"][other]["profiles"]),
            [profile],
            "{other} must not run under --profile {profile}"
        );
    }
}

#[test]
fn compose_services_share_the_network_and_bootstrap() {
    let compose = compose_file();
    let services = compose["services"].as_mapping().expect("services");
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        if name != "control-plane" {
            assert_eq!(
                svc["network_mode"].as_str(),
                Some("service:control-plane"),
                "{name}: the 127.0.0.1 addresses of examples/ only hold in one network namespace"
            );
        }
    }
    let envoy = &compose["services"]["ambassador-envoy"];
    let rust = &compose["services"]["ambassador-rust"];
    assert_eq!(
        envoy["image"].as_str(),
        Some("envoyproxy/envoy:v1.40-latest")
    );
    assert!(
        rust["build"].as_str().is_some(),
        "legate-proxy is built from ./Dockerfile"
    );
    // Same flags after the binary's name, same bootstrap file.
    let envoy_cmd = strings(&envoy["command"]);
    let rust_cmd = strings(&rust["command"]);
    assert_eq!(envoy_cmd[0], "envoy");
    assert_eq!(rust_cmd[0], "legate-proxy");
    assert_eq!(envoy_cmd[1..], rust_cmd[1..]);
    assert_eq!(strings(&envoy["volumes"]), strings(&rust["volumes"]));
}

#[test]
fn every_file_compose_mounts_or_builds_exists() {
    let root = workspace_root();
    let compose = compose_file();
    let services = compose["services"].as_mapping().expect("services");
    let mut checked = 0;
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        // host path → container path
        let mut mounts = Vec::new();
        for volume in strings(&svc["volumes"]) {
            let mut parts = volume.split(':');
            let host = parts.next().expect("host part");
            let container = parts.next().unwrap_or_else(|| {
                panic!("{name}: volume `{volume}` is not a bind mount host:container")
            });
            assert!(
                host.starts_with("./"),
                "{name}: `{volume}`: mount repository files by relative path"
            );
            let path = root.join(host);
            assert!(
                path.exists(),
                "{name}: `{volume}`: {} does not exist",
                path.display()
            );
            mounts.push((path, container.to_owned()));
            checked += 1;
        }
        // Every file a command names under the mount point is a mounted, existing file.
        for arg in strings(&svc["command"]) {
            if !arg.starts_with(CONTAINER_CONFIG_DIR) {
                continue;
            }
            let host = mounts.iter().find_map(|(host, container)| {
                if arg == *container {
                    Some(host.clone())
                } else {
                    let rest = arg.strip_prefix(&format!("{container}/"))?;
                    Some(host.join(rest))
                }
            });
            let host = host.unwrap_or_else(|| panic!("{name}: `{arg}` is not in a mounted path"));
            assert!(
                host.is_file(),
                "{name}: `{arg}` is {}, which does not exist",
                host.display()
            );
            checked += 1;
        }
        if let Some(context) = svc["build"].as_str() {
            let dockerfile = root.join(context).join("Dockerfile");
            assert!(
                dockerfile.is_file(),
                "{name}: {} does not exist",
                dockerfile.display()
            );
        }
    }
    assert!(checked >= 5, "only {checked} mounts and paths checked");
    // The Dockerfile builds from pinned images.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    for from in froms {
        let image = from.split_whitespace().next().expect("image");
        let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("latest");
        assert!(
            !tag.contains("latest"),
            "pin `{image}` (a version or a release)"
        );
    }
}

fn bootstrap_path() -> PathBuf {
    workspace_root().join("examples/bootstrap.yaml")
}

#[test]
fn shared_bootstrap_passes_both_validators() {
    let path = bootstrap_path();
    for (name, bin) in [
        ("legate-proxy", cargo_bin("legate-proxy", "legate-proxy")),
        ("envoy", envoy_bin()),
    ] {
        let out = run_with_deadline(
            Command::new(&bin)
                .args(["--mode", "validate", "-c"])
                .arg(&path),
            COMMAND_DEADLINE,
        )
        .expect("running the validator");
        assert!(
            out.status.success(),
            "{name} --mode validate -c {}: {}\n{}{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The bootstrap with its random node id suffix replaced.
fn without_id_suffix(bootstrap: &str) -> String {
    bootstrap
        .lines()
        .map(|l| match l.split_once("id: checkout-") {
            Some((indent, _)) => format!("{indent}id: checkout-<suffix>"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn committed_bootstrap_is_what_legate_cp_generates() {
    let out = run_with_deadline(
        Command::new(cargo_bin("legate-control-plane", "legate-cp")).args([
            "bootstrap",
            "envoy",
            "--node",
            "checkout",
        ]),
        COMMAND_DEADLINE,
    )
    .expect("running legate-cp bootstrap envoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let committed = std::fs::read_to_string(bootstrap_path()).expect("examples/bootstrap.yaml");
    assert!(committed.contains("id: checkout-"), "{committed}");
    assert_eq!(
        without_id_suffix(&committed),
        without_id_suffix(&generated),
        "examples/bootstrap.yaml is stale: regenerate it with `cargo run -p legate-control-plane \
         --bin legate-cp -- bootstrap envoy --node checkout > examples/bootstrap.yaml`"
    );
}

/// A port offset under which every demo port is free right now.
fn free_offset() -> u16 {
    for _ in 0..50 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // Every port stays below 32768, out of Linux's ephemeral range (32768-60999), so an
        // outgoing connection cannot take one between this check and the demo's bind.
        let offset = 1_000 + (random % 12_500) as u16;
        let free = DEMO_PORTS
            .iter()
            .all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p + offset)).is_ok());
        if free {
            return offset;
        }
    }
    panic!("no free port offset for the demo");
}

fn demo_command(envoy: bool, extra: &[&str]) -> Command {
    let mut cmd = Command::new(cargo_bin("legate-demo", "legate-demo"));
    cmd.arg("--port-offset")
        .arg(free_offset().to_string())
        .args(extra)
        .env_remove("RUST_LOG");
    if envoy {
        cmd.arg("--envoy").env("ENVOY_BIN", envoy_bin());
    }
    cmd
}

/// How often a demo start is retried when another process took one of its ports first.
const PORT_ATTEMPTS: usize = 3;

/// Whether a failed demo start was a port collision (the demo fails fast on those).
fn port_taken(stderr: &str) -> bool {
    stderr.contains("already in use")
}

fn bounded_run(envoy: bool) -> Json {
    let mut attempt = 0;
    let (cmd, out) = loop {
        attempt += 1;
        let mut cmd = demo_command(envoy, &["--duration", DEMO_SECONDS, "--json"]);
        let out = run_with_deadline(&mut cmd, DEMO_DEADLINE)
            .unwrap_or_else(|e| panic!("running {cmd:?} (deadline {DEMO_DEADLINE:?}): {e}"));
        let taken = port_taken(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() || !taken || attempt == PORT_ATTEMPTS {
            break (cmd, out);
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{stderr}", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn assert_resilient(summary: &Json, kind: &str) {
    let show = serde_json::to_string_pretty(summary).unwrap_or_default();
    assert_eq!(summary["ambassador"]["kind"], kind, "{show}");
    assert_eq!(summary["config"]["ok"], true, "{show}");
    let requests = summary["requests"].as_u64().unwrap_or(0);
    assert!(
        requests >= 100,
        "traffic flowed: {requests} requests\n{show}"
    );
    let success = summary["success_pct"].as_f64().unwrap_or(0.0);
    assert!(success >= 99.0, "success {success}% < 99%\n{show}");
    let payments = &summary["clusters"]["payments"];
    assert!(
        payments["retries"].as_u64().unwrap_or(0) > 0,
        "the flaky instance's 503s were retried\n{show}"
    );
    let ejections =
        payments["ejections"].as_u64().unwrap_or(0) + payments["ejected_max"].as_u64().unwrap_or(0);
    assert!(ejections >= 1, "the flaky instance was ejected\n{show}");
    let instances: BTreeSet<&str> = payments["instances"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        instances.contains("payments-1") && instances.contains("payments-2"),
        "payments traffic reached the healthy instances: {instances:?}\n{show}"
    );
    assert!(
        summary["clusters"]["inventory"]["successes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{show}"
    );
    // The mTLS service: called, answered by its TLS instance, every call a success, over TLS
    // handshakes that all completed.
    let ledger = &summary["clusters"]["ledger"];
    let requests = ledger["requests"].as_u64().unwrap_or(0);
    assert!(requests >= 10, "ledger got traffic: {requests}\n{show}");
    assert_eq!(ledger["successes"].as_u64(), Some(requests), "{show}");
    assert_eq!(
        ledger["instances"]["ledger-1"].as_u64(),
        Some(requests),
        "{show}"
    );
    assert!(
        ledger["tls"]["handshakes"].as_u64().unwrap_or(0) >= 1,
        "the ambassador reached ledger over TLS\n{show}"
    );
    assert_eq!(ledger["tls"]["failures"].as_u64(), Some(0), "{show}");
}

#[test]
fn demo_through_legate_proxy_stays_above_99_percent() {
    let summary = bounded_run(false);
    assert_resilient(&summary, "legate-proxy");
}

#[test]
fn demo_through_envoy_stays_above_99_percent() {
    let summary = bounded_run(true);
    assert_resilient(&summary, "envoy");
    assert!(summary["ambassador"]["pid"].as_u64().is_some());
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn ctrl_c_stops_the_demo_and_its_envoy() {
    let mut attempt = 0;
    let demo = loop {
        attempt += 1;
        let dir = TempDir::with_prefix("legate-demo-").expect("temp dir");
        let demo = Process::spawn("legate-demo", demo_command(true, &["--json"]), dir);
        let started = Instant::now();
        let flowing = loop {
            let stderr = demo.stderr();
            if stderr.contains("traffic flowing") {
                break true;
            }
            if demo.try_exit_status().is_some() || started.elapsed() > DEMO_DEADLINE {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if flowing {
            break demo;
        }
        if !port_taken(&demo.stderr()) || attempt == PORT_ATTEMPTS {
            demo.fail("the demo did not send traffic");
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = Command::new("kill")
        .args(["-INT", &demo.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let exit = demo
        .wait_until(
            "the demo to exit after SIGINT",
            Duration::from_secs(15),
            || {
                let s = demo.try_exit_status();
                async move { s }
            },
        )
        .await;
    if !exit.success() {
        demo.fail(&format!("exit status after SIGINT: {exit}"));
    }
    let summary: Json = serde_json::from_str(&demo.stdout())
        .unwrap_or_else(|e| demo.fail(&format!("final summary is not JSON: {e}")));
    let pid = summary["ambassador"]["pid"]
        .as_u64()
        .unwrap_or_else(|| demo.fail("no Envoy pid in the summary"));
    assert!(!alive(pid), "Envoy (pid {pid}) outlived the demo");
    assert!(summary["requests"].as_u64().unwrap_or(0) > 0, "{summary}");
}
