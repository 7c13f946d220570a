//! End to end: real proxyless gRPC clients take their configuration from `legate-cp` over xDS
//! (`xds:///service`) and call in-process greeter instances (crate legate-grpc-test-server).
//!
//! - Python `grpcio` (driven by `tests/grpc/client.py`): calls spread over the endpoints, an
//!   endpoint removed from the YAML stops receiving calls, UNAVAILABLE is retried as the policy
//!   says, outlier detection ejects a failing instance.
//! - Node `@grpc/grpc-js` + `@grpc/grpc-js-xds` (`tests/grpc/client.js`): the basic scenario.
//! - mTLS (gRFC A29) with certificates from `legate-cp certs init`: grpcio and grpc-js-xds with
//!   xDS credentials call TLS-only greeters that require their client certificate; the same
//!   client in plaintext fails. grpcio also reaches a legate-cp serving xDS over mTLS through
//!   the bootstrap's `tls` channel credentials (gRFC A65).
//!
//! The peers are installed by `.ci/run` and found through `LEGATE_PYTHON` (a Python with grpcio
//! and grpcio-tools) and `LEGATE_NODE_MODULES` (a node_modules with the three @grpc packages);
//! without them these tests fail saying what to install. They are never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use legate_e2e::{ControlPlane, cargo_bin, run_with_deadline, workspace_root};
use legate_grpc_test_server::{FAIL_ON, GrpcUpstream, ServerTls, first_certificate_der};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Upper bound of one driver command (a batch of calls) and of every wait.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a configuration change may take to show in the clients' calls.
const PROPAGATION: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

fn home_cache(path: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join(path))
}

/// The Python with grpcio and grpcio-tools: `LEGATE_PYTHON`, else the venv `.ci/run` makes.
fn python() -> PathBuf {
    let hint = "install grpcio with `$VENV/bin/pip install grpcio grpcio-tools` (see .ci/run) \
                and export LEGATE_PYTHON=$VENV/bin/python";
    let path = std::env::var_os("LEGATE_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home_cache("legate-venv/bin/python").filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("LEGATE_PYTHON is not set: {hint}"));
    let out = run_with_deadline(
        Command::new(&path).args(["-c", "import grpc, grpc_tools; print(grpc.__version__)"]),
        DEADLINE,
    )
    .unwrap_or_else(|e| panic!("cannot run {}: {e}; {hint}", path.display()));
    assert!(
        out.status.success(),
        "{} cannot import grpc and grpc_tools: {}; {hint}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The node_modules holding @grpc/grpc-js, @grpc/grpc-js-xds and @grpc/proto-loader.
fn node_modules() -> PathBuf {
    let hint = "install them with `npm install --prefix $HOME/.cache/legate-npm @grpc/grpc-js \
                @grpc/grpc-js-xds @grpc/proto-loader` (see .ci/run) and export \
                LEGATE_NODE_MODULES=$HOME/.cache/legate-npm/node_modules";
    let dir = std::env::var_os("LEGATE_NODE_MODULES")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home_cache("legate-npm/node_modules").filter(|p| p.is_dir()))
        .unwrap_or_else(|| panic!("LEGATE_NODE_MODULES is not set: {hint}"));
    for package in ["@grpc/grpc-js", "@grpc/grpc-js-xds", "@grpc/proto-loader"] {
        assert!(
            dir.join(package).join("package.json").is_file(),
            "{package} is missing from {}: {hint}",
            dir.display()
        );
    }
    let node = node_bin();
    let out = run_with_deadline(Command::new(&node).arg("--version"), DEADLINE)
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; install Node.js", node.display()));
    assert!(out.status.success(), "{} --version failed", node.display());
    dir
}

fn node_bin() -> PathBuf {
    std::env::var_os("LEGATE_NODE")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

fn proto() -> PathBuf {
    workspace_root().join("grpc-test-server/greeter.proto")
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A config file alone in its own temp dir (legate-cp watches the directory).
struct ConfigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = TempDir::with_prefix("legate-grpc-config-").expect("temp dir");
        let path = dir.path().join("legate.yaml");
        std::fs::write(&path, text).expect("writing config");
        ConfigFile { _dir: dir, path }
    }

    /// Replaces the file atomically (write + rename), as an editor would.
    fn rewrite(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("writing config");
        std::fs::rename(&tmp, &self.path).expect("renaming config");
    }
}

fn endpoint_list(endpoints: &[String]) -> String {
    format!("[{}]", endpoints.join(", "))
}

/// `127.0.0.1:PORT`, or `localhost:PORT` (which legate-cp resolves for gRPC clients).
fn ip(up: &GrpcUpstream) -> String {
    up.addr().to_string()
}

fn dns(up: &GrpcUpstream) -> String {
    format!("'localhost:{}'", up.addr().port())
}

/// A directory of certificates from `legate-cp certs init --service S...` (a CA and a leaf per
/// service, with SPIFFE ID `spiffe://example.org/ns/default/sa/S`).
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn init(services: &[&str]) -> Certs {
        let dir = TempDir::with_prefix("legate-grpc-certs-").expect("temp dir");
        let mut cmd = Command::new(cargo_bin("legate-control-plane", "legate-cp"));
        cmd.args(["certs", "init", "--out"]).arg(dir.path());
        for s in services {
            cmd.args(["--service", s]);
        }
        let out = run_with_deadline(&mut cmd, DEADLINE).expect("running legate-cp certs init");
        assert!(
            out.status.success(),
            "certs init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The TLS of a greeter serving as `service` and requiring a client certificate of the CA.
    fn server_tls(&self, service: &str) -> ServerTls {
        ServerTls::from_files(
            &self.file(&format!("{service}.pem")),
            &self.file(&format!("{service}.key")),
            Some(&self.file("ca.pem")),
        )
        .expect("greeter TLS")
    }

    /// The DER of `service`'s leaf, as a server sees it presented.
    fn leaf_der(&self, service: &str) -> Vec<u8> {
        let pem = std::fs::read(self.file(&format!("{service}.pem"))).expect("leaf");
        first_certificate_der(&pem).expect("a PEM certificate")
    }
}

/// How a test client is set up, beyond its node name.
#[derive(Default)]
struct ClientSetup<'a> {
    /// `bootstrap grpc --cert-dir`: the `default` certificate provider over these certificates.
    cert_dir: Option<&'a Path>,
    /// `bootstrap grpc --xds-tls-ca ca.pem --xds-tls-cert <node>.pem --xds-tls-key <node>.key`
    /// from these certificates: `tls` channel credentials towards legate-cp (gRFC A65).
    xds_tls: Option<&'a Certs>,
    /// Channels with xDS credentials (plaintext fallback) rather than plaintext.
    xds_creds: bool,
}

/// `legate-cp bootstrap grpc --node <node> --xds <cp> [...]` (see [`ClientSetup`]) into
/// `dir/bootstrap.json`; returns the path and the node id.
fn bootstrap(cp: &ControlPlane, node: &str, dir: &Path, setup: &ClientSetup) -> (PathBuf, String) {
    let bin = cargo_bin("legate-control-plane", "legate-cp");
    let mut cmd = Command::new(&bin);
    cmd.args(["bootstrap", "grpc", "--node", node])
        .args(["--xds", &cp.xds.to_string()]);
    if let Some(certs) = setup.cert_dir {
        cmd.arg("--cert-dir").arg(certs);
    }
    if let Some(certs) = setup.xds_tls {
        cmd.arg("--xds-tls-ca")
            .arg(certs.file("ca.pem"))
            .arg("--xds-tls-cert")
            .arg(certs.file(&format!("{node}.pem")))
            .arg("--xds-tls-key")
            .arg(certs.file(&format!("{node}.key")));
    }
    let out = run_with_deadline(&mut cmd, DEADLINE).expect("running legate-cp bootstrap grpc");
    assert!(
        out.status.success(),
        "bootstrap grpc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("bootstrap is JSON");
    assert_eq!(json["node"]["cluster"], node);
    assert_eq!(json["node"]["metadata"]["LEGATE_FLAVOR"], "grpc");
    assert_eq!(
        json["certificate_providers"]["default"]["plugin_name"] == "file_watcher",
        setup.cert_dir.is_some()
    );
    let creds = &json["xds_servers"][0]["channel_creds"];
    let expected = if setup.xds_tls.is_some() {
        "tls"
    } else {
        "insecure"
    };
    assert_eq!(creds[0]["type"], expected, "{creds}");
    let id = json["node"]["id"].as_str().expect("node.id").to_string();
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, &out.stdout).expect("writing bootstrap");
    (path, id)
}

// ---------------------------------------------------------------------------
// Client drivers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Language {
    Python,
    Node,
}

/// One call's outcome as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok(String),
    Err(String),
}

/// A running client script (see tests/grpc/): one JSON command in, one JSON answer out.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    /// The bootstrap's `node.id`.
    node_id: String,
    _dir: TempDir,
}

impl Driver {
    async fn start(language: Language, cp: &ControlPlane, node: &str) -> Driver {
        Self::start_with(language, cp, node, &ClientSetup::default()).await
    }

    /// Like [`Driver::start`], set up as `setup` says.
    async fn start_with(
        language: Language,
        cp: &ControlPlane,
        node: &str,
        setup: &ClientSetup<'_>,
    ) -> Driver {
        let dir = TempDir::with_prefix("legate-grpc-client-").expect("temp dir");
        let (bootstrap, node_id) = bootstrap(cp, node, dir.path(), setup);
        let scripts = workspace_root().join("tests/grpc");
        let mut cmd = match language {
            Language::Python => {
                let mut c = tokio::process::Command::new(python());
                c.arg(scripts.join("client.py"));
                c
            }
            Language::Node => {
                let modules = node_modules();
                let mut c = tokio::process::Command::new(node_bin());
                c.arg(scripts.join("client.js")).env("NODE_PATH", modules);
                c
            }
        };
        let stderr = dir.path().join("client.stderr.log");
        if setup.xds_creds {
            cmd.arg("--xds-creds");
        }
        cmd.arg("--proto")
            .arg(proto())
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr log"))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the {language:?} client: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut d = Driver {
            child,
            stdin,
            stdout,
            stderr,
            node_id,
            _dir: dir,
        };
        let ready = d.read().await;
        assert_eq!(ready["ready"], true, "{ready}");
        d
    }

    fn fail(&self, msg: &str) -> ! {
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{msg}\n----- client stderr (tail) -----\n{}",
            tail.join("\n")
        )
    }

    async fn read(&mut self) -> Value {
        match tokio::time::timeout(DEADLINE, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str(&line)
                .unwrap_or_else(|e| self.fail(&format!("not JSON ({e}): {line}"))),
            Ok(Ok(None)) => {
                let status = self.child.try_wait().ok().flatten();
                self.fail(&format!("the client exited ({status:?})"))
            }
            Ok(Err(e)) => self.fail(&format!("reading the client: {e}")),
            Err(_) => self.fail(&format!("no answer from the client within {DEADLINE:?}")),
        }
    }

    /// `n` calls of `SayHello` on `xds:///<target>`.
    async fn call(&mut self, target: &str, n: usize, metadata: &[(&str, &str)]) -> Vec<Outcome> {
        let metadata: BTreeMap<&str, &str> = metadata.iter().copied().collect();
        let cmd = json!({"op": "call", "target": format!("xds:///{target}"), "n": n,
                         "metadata": metadata, "timeout": 5});
        let line = format!("{cmd}\n");
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            self.fail(&format!("writing to the client: {e}"));
        }
        let _ = self.stdin.flush().await;
        let answer = self.read().await;
        let Some(results) = answer["results"].as_array() else {
            self.fail(&format!("unexpected answer: {answer}"));
        };
        results
            .iter()
            .map(|r| {
                if r["ok"] == true {
                    Outcome::Ok(r["instance"].as_str().unwrap_or_default().to_string())
                } else {
                    Outcome::Err(format!("{}: {}", r["code"], r["details"]))
                }
            })
            .collect()
    }

    /// Calls until one batch of `n` all succeed and satisfy `done`; returns that batch.
    async fn call_until(
        &mut self,
        what: &str,
        target: &str,
        n: usize,
        mut done: impl FnMut(&[Outcome]) -> bool,
    ) -> Vec<Outcome> {
        let start = Instant::now();
        let mut last = Vec::new();
        while start.elapsed() < PROPAGATION {
            last = self.call(target, n, &[]).await;
            if last.iter().all(|o| matches!(o, Outcome::Ok(_))) && done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.fail(&format!(
            "timed out after {PROPAGATION:?} waiting for {what}; last batch: {last:?}"
        ))
    }
}

fn instances(batch: &[Outcome]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in batch {
        if let Outcome::Ok(i) = o {
            *out.entry(i.clone()).or_default() += 1;
        }
    }
    out
}

fn all_ok(batch: &[Outcome]) -> bool {
    batch.iter().all(|o| matches!(o, Outcome::Ok(_)))
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// Calls spread over every endpoint (one given by DNS name, which legate-cp resolves); an
/// endpoint removed from the YAML stops receiving calls.
async fn spread_then_removal(language: Language) {
    let a = GrpcUpstream::start("a").await.expect("a");
    let b = GrpcUpstream::start("b").await.expect("b");
    let c = GrpcUpstream::start("c").await.expect("c");
    let yaml = |endpoints: &[String]| {
        format!(
            "services:\n  payments:\n    protocol: grpc\n    endpoints: {}\n\
             ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n",
            endpoint_list(endpoints)
        )
    };
    let config = ConfigFile::new(&yaml(&[ip(&a), dns(&b), ip(&c)]));
    let cp = ControlPlane::start(&config.path).await;
    let mut client = Driver::start(language, &cp, "checkout").await;

    let batch = client
        .call_until("calls on all three endpoints", "payments", 30, |b| {
            instances(b).len() == 3
        })
        .await;
    assert!(all_ok(&batch));

    let clients = cp.clients().await;
    let grpc = clients
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| c["flavor"] == "grpc")
        .count();
    assert!(grpc >= 1, "the client gets the gRPC flavour: {clients:#}");

    config.rewrite(&yaml(&[ip(&a), dns(&b)]));
    client
        .call_until("calls to stop reaching c", "payments", 20, |b| {
            !instances(b).contains_key("c")
        })
        .await;
    let c_before = c.calls();
    let batch = client.call("payments", 30, &[]).await;
    assert!(all_ok(&batch), "{batch:?}");
    let seen = instances(&batch);
    assert!(!seen.contains_key("c"), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(c.calls(), c_before, "c was removed and got calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_spread_and_follow_endpoint_removal() {
    spread_then_removal(Language::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_calls_spread_and_follow_endpoint_removal() {
    spread_then_removal(Language::Node).await;
}

/// `retries: { attempts: 2, on: [unavailable] }`: a call that meets UNAVAILABLE is tried again on
/// another endpoint, up to 1 + 2 attempts in all; without a policy, it is not.
async fn retries(language: Language) {
    let a = GrpcUpstream::start("a").await.expect("a");
    let b = GrpcUpstream::start("b").await.expect("b");
    let both = endpoint_list(&[ip(&a), ip(&b)]);
    let yaml = format!(
        "services:\n  \
           payments:\n    protocol: grpc\n    endpoints: {both}\n    \
             retries: {{ attempts: 2, on: [unavailable], backoff: {{ base: 10ms, max: 50ms }} }}\n  \
           ledger:\n    protocol: grpc\n    endpoints: {both}\n\
         ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n"
    );
    let config = ConfigFile::new(&yaml);
    let cp = ControlPlane::start(&config.path).await;
    let mut client = Driver::start(language, &cp, "checkout").await;
    for target in ["payments", "ledger"] {
        client
            .call_until("both endpoints", target, 10, |b| instances(b).len() == 2)
            .await;
    }

    // a fails: every call still succeeds, on b.
    let a_before = a.calls();
    let batch = client.call("payments", 10, &[(FAIL_ON, "a")]).await;
    assert!(all_ok(&batch), "retried on b: {batch:?}");
    assert_eq!(instances(&batch).keys().collect::<Vec<_>>(), vec!["b"]);
    assert!(a.calls() > a_before, "a was tried first on some calls");

    // Both fail: each call makes exactly 1 + num_retries attempts.
    let total = || a.calls() + b.calls();
    let before = total();
    let batch = client.call("payments", 4, &[(FAIL_ON, "a,b")]).await;
    assert!(
        batch
            .iter()
            .all(|o| matches!(o, Outcome::Err(e) if e.contains("UNAVAILABLE"))),
        "{batch:?}"
    );
    assert_eq!(total() - before, 4 * 3, "4 calls × (1 + 2 retries)");

    // No policy: no retry.
    let before = total();
    let batch = client.call("ledger", 10, &[(FAIL_ON, "a")]).await;
    assert_eq!(total() - before, 10, "one attempt per call");
    assert!(
        batch.iter().any(|o| matches!(o, Outcome::Err(_))),
        "calls that landed on a failed: {batch:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_retries_unavailable_per_policy() {
    retries(Language::Python).await;
}

/// Failure-percentage outlier detection (gRFC A50) ejects an instance that fails every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_outlier_detection_ejects_a_failing_instance() {
    let a = GrpcUpstream::start("a").await.expect("a");
    let b = GrpcUpstream::start("b").await.expect("b");
    let yaml = format!(
        "services:\n  flaky:\n    protocol: grpc\n    endpoints: {}\n    outlier_detection:\n      \
           interval: 1s\n      base_ejection_time: 30s\n      max_ejection_percent: 50\n      \
           failure_percentage: {{ threshold: 50, minimum_hosts: 2, request_volume: 5 }}\n\
         ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n",
        endpoint_list(&[ip(&a), ip(&b)])
    );
    let config = ConfigFile::new(&yaml);
    let cp = ControlPlane::start(&config.path).await;
    let mut client = Driver::start(Language::Python, &cp, "checkout").await;
    client
        .call_until("both endpoints", "flaky", 10, |b| instances(b).len() == 2)
        .await;

    a.set_failing(true);
    let failing = client.call("flaky", 10, &[]).await;
    assert!(
        failing.iter().any(|o| matches!(o, Outcome::Err(_))),
        "a fails while in rotation: {failing:?}"
    );
    client
        .call_until("a to be ejected", "flaky", 20, |b| {
            instances(b).keys().map(String::as_str).eq(["b"])
        })
        .await;
    let a_before = a.calls();
    let batch = client.call("flaky", 20, &[]).await;
    assert!(all_ok(&batch), "{batch:?}");
    assert_eq!(a.calls(), a_before, "an ejected instance gets no calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_retries_unavailable_per_policy() {
    retries(Language::Node).await;
}

/// Every `lb` the YAML accepts is accepted by the client (gRPC NACKs a whole CDS response for one
/// cluster it cannot handle): calls succeed on every service. The client's bootstrap comes from
/// `bootstrap grpc --cert-dir`, so its certificate providers are accepted too.
async fn every_lb_policy(language: Language) {
    let a = GrpcUpstream::start("a").await.expect("a");
    let b = GrpcUpstream::start("b").await.expect("b");
    let both = endpoint_list(&[ip(&a), ip(&b)]);
    let policies = [
        "round_robin",
        "least_request",
        "random",
        "ring_hash",
        "maglev",
    ];
    let mut yaml = String::from("services:\n");
    for lb in policies {
        let name = lb.replace('_', "-");
        yaml += &format!("  {name}:\n    protocol: grpc\n    endpoints: {both}\n    lb: {lb}\n");
    }
    yaml += "ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n";
    let config = ConfigFile::new(&yaml);
    let cp = ControlPlane::start(&config.path).await;
    let certs = Certs::init(&["checkout"]);
    let setup = ClientSetup {
        cert_dir: Some(certs.path()),
        ..Default::default()
    };
    let mut client = Driver::start_with(language, &cp, "checkout", &setup).await;
    for lb in policies {
        let target = lb.replace('_', "-");
        client
            .call_until(&format!("calls on `{target}`"), &target, 4, |_| true)
            .await;
        // The target with a port is the same service.
        let batch = client.call(&format!("{target}:50051"), 4, &[]).await;
        assert!(all_ok(&batch), "{target}:50051: {batch:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_accepts_every_lb_policy() {
    every_lb_policy(Language::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_accepts_every_lb_policy() {
    every_lb_policy(Language::Node).await;
}

// ---------------------------------------------------------------------------
// mTLS
// ---------------------------------------------------------------------------

/// The NACKs legate-cp recorded for the client `node_id`: (type URL, last error message).
async fn nacks_of(cp: &ControlPlane, node_id: &str) -> Vec<(String, String)> {
    let clients = cp.clients().await;
    let Some(all) = clients.as_array() else {
        panic!("/clients is not an array: {clients}");
    };
    let mine: Vec<&Value> = all.iter().filter(|c| c["node_id"] == node_id).collect();
    assert!(!mine.is_empty(), "{node_id} is not connected: {clients:#}");
    mine.iter()
        .filter_map(|c| c["types"].as_object())
        .flatten()
        .filter(|(_, t)| t["nacks"].as_u64().unwrap_or(0) > 0)
        .map(|(t, s)| {
            let message = s["last_nack"].as_str().unwrap_or_default().to_string();
            (t.clone(), message)
        })
        .collect()
}

fn all_unavailable(batch: &[Outcome]) -> bool {
    batch
        .iter()
        .all(|o| matches!(o, Outcome::Err(e) if e.contains("UNAVAILABLE")))
}

/// gRFC A29 with certificates from `legate-cp certs init`. `payments` has `tls` (CA, client
/// certificate, the SPIFFE ID it must show) and two greeters that speak TLS only and require a
/// client certificate of the CA. A client whose bootstrap declares the `default` certificate
/// provider (`--cert-dir`) and whose channels use xDS credentials calls them over mTLS, showing
/// its own leaf; `impostor` (the same greeter, expected to be `ledger`) fails SAN verification;
/// `plain`, in the same responses, is still called in plaintext; legate-cp sees no NACK. Without
/// xDS credentials the client is plaintext and the greeters refuse it. Without the certificate
/// provider, the client NACKs the TLS clusters and only those.
async fn mtls(language: Language) {
    let certs = Certs::init(&["checkout", "payments"]);
    let a = GrpcUpstream::start_tls("a", certs.server_tls("payments"))
        .await
        .expect("a");
    let b = GrpcUpstream::start_tls("b", certs.server_tls("payments"))
        .await
        .expect("b");
    let plain = GrpcUpstream::start("plain").await.expect("plain");
    let d = certs.path().display();
    let tls = |san: &str| {
        format!(
            "{{ ca: '{d}/ca.pem', cert: '{d}/checkout.pem', key: '{d}/checkout.key', \
             verify_san: ['spiffe://example.org/ns/default/sa/{san}'] }}"
        )
    };
    let yaml = format!(
        "services:\n  \
           payments:\n    protocol: grpc\n    endpoints: {both}\n    tls: {payments}\n  \
           impostor:\n    protocol: grpc\n    endpoints: [{a}]\n    tls: {ledger}\n  \
           plain:\n    protocol: grpc\n    endpoints: [{p}]\n\
         ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n",
        both = endpoint_list(&[ip(&a), ip(&b)]),
        payments = tls("payments"),
        ledger = tls("ledger"),
        a = ip(&a),
        p = ip(&plain),
    );
    let config = ConfigFile::new(&yaml);
    let cp = ControlPlane::start(&config.path).await;

    let secure = ClientSetup {
        cert_dir: Some(certs.path()),
        xds_creds: true,
        ..Default::default()
    };
    let mut client = Driver::start_with(language, &cp, "checkout", &secure).await;
    let batch = client
        .call_until("mTLS calls on both greeters", "payments", 20, |b| {
            instances(b).len() == 2
        })
        .await;
    assert!(all_ok(&batch));
    let leaf = certs.leaf_der("checkout");
    assert_eq!(
        a.peer_certificates(),
        vec![leaf.clone()],
        "a saw the client's leaf"
    );
    assert_eq!(b.peer_certificates(), vec![leaf], "b saw the client's leaf");
    client
        .call_until("plaintext calls on `plain`", "plain", 4, |_| true)
        .await;
    assert!(plain.peer_certificates().is_empty());

    let a_before = a.calls();
    let batch = client.call("impostor", 4, &[]).await;
    assert!(all_unavailable(&batch), "SAN mismatch: {batch:?}");
    assert_eq!(a.calls(), a_before, "refused before any call");
    assert_eq!(
        nacks_of(&cp, &client.node_id).await,
        vec![],
        "the client accepted everything"
    );

    // Without xDS credentials the channel is plaintext: the TLS-only greeters refuse it.
    let plaintext = ClientSetup {
        cert_dir: Some(certs.path()),
        ..Default::default()
    };
    let mut client = Driver::start_with(language, &cp, "checkout", &plaintext).await;
    client
        .call_until("configuration (calls on `plain`)", "plain", 2, |_| true)
        .await;
    let before = a.calls() + b.calls();
    let batch = client.call("payments", 4, &[]).await;
    assert!(all_unavailable(&batch), "plaintext to TLS-only: {batch:?}");
    assert_eq!(a.calls() + b.calls(), before, "no call got through");

    // Without the certificate provider: the TLS clusters are NACKed, the others work.
    let no_provider = ClientSetup {
        xds_creds: true,
        ..Default::default()
    };
    let mut client = Driver::start_with(language, &cp, "checkout", &no_provider).await;
    client
        .call_until("calls on `plain`", "plain", 2, |_| true)
        .await;
    let batch = client.call("payments", 2, &[]).await;
    assert!(
        batch.iter().all(|o| matches!(o, Outcome::Err(_))),
        "{batch:?}"
    );
    let nacks = nacks_of(&cp, &client.node_id).await;
    assert!(
        nacks
            .iter()
            .any(|(t, m)| t.ends_with("envoy.config.cluster.v3.Cluster")
                && m.contains("certificate_provider_instance")
                && m.contains("default")),
        "a NACK of the TLS clusters naming the missing provider: {nacks:?}"
    );
    assert_eq!(a.calls() + b.calls(), before, "no call got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_over_mtls_with_xds_credentials() {
    mtls(Language::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_calls_over_mtls_with_xds_credentials() {
    mtls(Language::Node).await;
}

/// gRFC A65: legate-cp serves xDS over mTLS (`serve --xds-tls-cert ... --xds-client-ca`), and
/// grpcio reaches it with the `tls` channel credentials of `bootstrap grpc --xds-tls-*`. With
/// `insecure` channel credentials the same client gets no configuration and makes no call.
/// (grpc-js-xds 1.14 accepts only `insecure` and `google_default` channel credentials.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reaches_legate_cp_over_mtls_with_tls_channel_creds() {
    let certs = Certs::init(&["checkout", "legate-cp"]);
    let a = GrpcUpstream::start("a").await.expect("a");
    let yaml = format!(
        "services:\n  payments:\n    protocol: grpc\n    endpoints: [{}]\n\
         ambassadors:\n  checkout:\n    listen: 127.0.0.1:10000\n",
        ip(&a)
    );
    let config = ConfigFile::new(&yaml);
    let serve_tls: Vec<std::ffi::OsString> = vec![
        "--xds-tls-cert".into(),
        certs.file("legate-cp.pem").into(),
        "--xds-tls-key".into(),
        certs.file("legate-cp.key").into(),
        "--xds-client-ca".into(),
        certs.file("ca.pem").into(),
    ];
    let cp = ControlPlane::start_with_args(&config.path, &serve_tls).await;

    let setup = ClientSetup {
        xds_tls: Some(&certs),
        ..Default::default()
    };
    let mut client = Driver::start_with(Language::Python, &cp, "checkout", &setup).await;
    client
        .call_until(
            "calls configured over the mTLS xDS channel",
            "payments",
            4,
            |b| instances(b).len() == 1,
        )
        .await;
    let clients = cp.clients().await;
    let listed = clients
        .as_array()
        .expect("clients")
        .iter()
        .any(|c| c["node_id"] == client.node_id.as_str() && c["flavor"] == "grpc");
    assert!(listed, "{} is a gRPC client: {clients:#}", client.node_id);

    let mut plaintext = Driver::start(Language::Python, &cp, "checkout").await;
    let before = a.calls();
    let batch = plaintext.call("payments", 1, &[]).await;
    assert!(
        batch.iter().all(|o| matches!(o, Outcome::Err(_))),
        "{batch:?}"
    );
    assert_eq!(a.calls(), before, "no configuration, no call");
    let clients = cp.clients().await;
    let connected = clients
        .as_array()
        .expect("clients")
        .iter()
        .any(|c| c["node_id"] == plaintext.node_id.as_str());
    assert!(
        !connected,
        "a plaintext xDS client got through: {clients:#}"
    );
}
