//! Process wiring: bootstrap → stats → runtime manager → static resources → admin → ADS.
//!
//! Threads, as in Envoy: the main thread runs a current-thread runtime for xDS, the admin API
//! and the stats flush; `--concurrency N` worker threads each run their own event loop
//! ([`Workers`]) with their share of every listener's connections.

use crate::admin::{self, AdminCtx};
use crate::bootstrap::{self, BootstrapConfig};
use crate::cli::{Mode, Options};
use crate::config::{self, Discovery};
use crate::proxy::listener::{ListenerManager, LocalNode};
use crate::proxy::workers::Workers;
use crate::runtime::Runtime;
use crate::runtime::manager::{InitPolicy, Manager};
use crate::stats::Store;
use crate::xds::{self, XdsClientConfig};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Envoy's default `initial_fetch_timeout`: after it the proxy goes LIVE with what it has.
pub const INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `legate-proxy`; returns the process exit code.
pub fn main() -> ExitCode {
    let opts = crate::cli::parse();
    init_tracing(&opts.log_level);
    let (boot, warnings) = match bootstrap::load(&opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("legate-proxy: error initializing configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &warnings {
        tracing::warn!(field = %w.field, "{}", w.message);
    }
    if let Err(e) = check_static(&boot) {
        eprintln!("legate-proxy: error initializing configuration: {e}");
        return ExitCode::FAILURE;
    }
    if opts.mode == Mode::Validate {
        let name = opts
            .config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "--config-yaml".into());
        println!("configuration '{name}' OK");
        return ExitCode::SUCCESS;
    }
    let workers = opts.concurrency.map(|n| n.max(1)).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("legate-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = match Workers::start(workers) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("legate-proxy: cannot start the worker threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(opts, boot, workers, threads))
}

fn init_tracing(level: &str) {
    let level = match level {
        "warning" => "warn",
        "critical" => "error",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Converts every static resource once, so `--mode validate` and startup report the same errors.
fn check_static(boot: &BootstrapConfig) -> Result<(), String> {
    for c in &boot.static_clusters {
        let cfg = config::cluster(c).map_err(|e| format!("static_resources.clusters: {e}"))?;
        // TLS files are read now, as Envoy reads them (SDS secrets arrive later).
        if let Some(tls) = &cfg.tls {
            crate::tls::build_client(tls, cfg.protocol, &crate::tls::no_secrets)
                .map_err(|e| format!("static_resources.clusters: cluster `{}`: {e}", cfg.name))?;
        }
    }
    for l in &boot.static_listeners {
        config::listener(l).map_err(|e| format!("static_resources.listeners: {e}"))?;
    }
    Ok(())
}

/// The xDS cluster's endpoints, connect timeout and TLS (its `UpstreamTlsContext`, which must
/// not use SDS: secrets arrive over that very channel).
fn xds_endpoints(
    boot: &BootstrapConfig,
    cluster_name: &str,
) -> Result<(Vec<String>, Duration, Option<crate::tls::TlsClient>), String> {
    let proto = boot
        .static_clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .ok_or_else(|| {
            format!(
                "dynamic_resources.ads_config: cluster `{cluster_name}` is not a static cluster"
            )
        })?;
    let cfg = config::cluster(proto).map_err(|e| e.to_string())?;
    let endpoints = match &cfg.discovery {
        Discovery::Static(eps) => eps.iter().map(|e| e.address.to_string()).collect(),
        Discovery::StrictDns { targets, .. } => targets
            .iter()
            .map(|t| format!("{}:{}", t.host, t.port))
            .collect(),
        Discovery::Eds { .. } => {
            return Err(format!(
                "cluster `{cluster_name}`: type: the xDS cluster cannot use EDS"
            ));
        }
    };
    let tls = match &cfg.tls {
        None => None,
        Some(t) => crate::tls::build_client(t, cfg.protocol, &crate::tls::no_secrets)
            .map_err(|e| format!("cluster `{cluster_name}`: {e}"))?
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "cluster `{cluster_name}`: transport_socket: the xDS cluster cannot use SDS \
                     secrets"
                )
            })?,
    };
    Ok((endpoints, cfg.connect_timeout, tls))
}

/// A proxy started by [`run_embedded`], running on the caller's tokio runtime.
pub struct Embedded {
    /// The bound admin address, if the bootstrap has an admin listener.
    pub admin: Option<SocketAddr>,
    quit: watch::Receiver<bool>,
}

impl Embedded {
    /// Resolves when `/quitquitquit` is called on the admin API.
    pub async fn quit_requested(&mut self) {
        let _ = self.quit.changed().await;
    }
}

/// Runs `legate-proxy` inside another program (the demo) on the caller's tokio runtime: the
/// same wiring as the `legate-proxy` binary (static resources, admin, ADS), without tracing
/// initialisation or signal handling, which stay the caller's, and without worker threads
/// (listeners run on the caller's runtime; `--concurrency` only sets `server.concurrency`). Returns once the admin listener
/// is bound and the ADS client is started; the proxy's tasks then run until the runtime shuts
/// down. Errors read like the binary's, without the `legate-proxy: ` prefix.
pub async fn run_embedded(boot: BootstrapConfig, opts: Options) -> Result<Embedded, String> {
    check_static(&boot).map_err(|e| format!("error initializing configuration: {e}"))?;
    let workers = opts.concurrency.map(|n| n.max(1)).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    start(&opts, boot, workers, Workers::ambient()).await
}

async fn run(opts: Options, boot: BootstrapConfig, workers: usize, threads: Workers) -> ExitCode {
    let mut proxy = match start(&opts, boot, workers, threads).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("legate-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("legate-proxy: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("caught SIGINT"),
        _ = term.recv() => tracing::info!("caught SIGTERM"),
        _ = proxy.quit_requested() => tracing::info!("quitquitquit"),
    }
    ExitCode::SUCCESS
}

/// Everything but the wait for a signal: shared by [`run`] and [`run_embedded`].
async fn start(
    opts: &Options,
    boot: BootstrapConfig,
    workers: usize,
    threads: Workers,
) -> Result<Embedded, String> {
    let started = Instant::now();
    // The bootstrap is in force from now on (its `last_updated` in `/config_dump`).
    let loaded = SystemTime::now();
    let store = Store::new();
    store.gauge("server.concurrency").set(workers as u64);
    // Envoy shows histograms as of the last stats flush (stats_flush_interval, default 5 s).
    store.spawn_flush_task(Duration::from_secs(5));
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::default()));
    let local_node = LocalNode {
        id: boot.node.id.clone(),
        cluster: boot.node.cluster.clone(),
    };
    let listeners = Arc::new(
        ListenerManager::with_workers(store.clone(), runtime.clone(), threads)
            .with_local_node(local_node),
    );
    let init = InitPolicy {
        wait_cds: boot.ads.is_some() && boot.cds_via_ads,
        wait_lds: boot.ads.is_some() && boot.lds_via_ads,
    };
    let manager = Manager::new(store.clone(), runtime, listeners, init);
    manager
        .install_static(&boot.static_clusters, &boot.static_listeners)
        .map_err(|e| format!("error initializing configuration: {e}"))?;
    let (quit_tx, quit_rx) = watch::channel(false);
    let mut admin_addr = None;
    if let Some(addr) = boot.admin {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind admin address {addr}: {e}"))?;
        admin_addr = listener.local_addr().ok();
        let bound = admin_addr.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(admin = %bound, "admin listening");
        if let Some(path) = &opts.admin_address_path {
            std::fs::write(path, &bound)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        // One descriptor pool (decoded and freed again) for both. `/server_info` and the
        // bootstrap in `/config_dump` show the node as the xDS client sends it: the
        // bootstrap's, with the user agent set (Envoy sets it on its bootstrap at start-up).
        let (bootstrap, node) = {
            let codec = legate_proto::json::Codec::new();
            // Every message here came from the descriptor pool's own types: encoding cannot fail.
            let mut bootstrap = codec.to_json(&boot.bootstrap).unwrap_or_default();
            let node = codec
                .to_json(&xds::with_user_agent(boot.node.clone()))
                .unwrap_or_else(|_| serde_json::json!({}));
            if let Some(b) = bootstrap.as_object_mut() {
                b.insert("node".into(), node.clone());
            }
            (bootstrap, node)
        };
        let ctx = Arc::new(AdminCtx {
            store: store.clone(),
            manager: manager.clone(),
            bootstrap,
            bootstrap_loaded: loaded,
            options: admin::command_line_options(opts, workers),
            node,
            started,
            quit: quit_tx,
        });
        tokio::spawn(admin::serve(ctx, listener));
    }
    if let Some(ads) = &boot.ads {
        let (endpoints, connect_timeout, tls) = xds_endpoints(&boot, &ads.cluster_name)
            .map_err(|e| format!("error initializing configuration: {e}"))?;
        // The xDS channel's handshakes count as the xDS cluster's `ssl.*`, as in Envoy.
        let tls = tls.map(|t| t.with_stats(crate::tls::SslStats::new(&store, &ads.cluster_name)));
        let cfg = XdsClientConfig {
            endpoints,
            node: boot.node.clone(),
            delta: ads.delta,
            connect_timeout,
            subscribe_cds: boot.cds_via_ads,
            subscribe_lds: boot.lds_via_ads,
            tls,
        };
        manager.xds_started(&ads.cluster_name, cfg.subscribe_cds, cfg.subscribe_lds);
        let sink: Arc<dyn xds::ConfigSink> = manager.clone();
        let handle = xds::spawn(cfg, sink);
        // The client stops when its handle is dropped: keep it until the runtime shuts down.
        tokio::spawn(async move {
            let _handle = handle;
            std::future::pending::<()>().await
        });
        let m = manager.clone();
        tokio::spawn(async move {
            tokio::time::sleep(INITIAL_FETCH_TIMEOUT).await;
            m.force_live();
        });
    }
    Ok(Embedded {
        admin: admin_addr,
        quit: quit_rx,
    })
}
