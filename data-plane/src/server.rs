//! Process wiring: bootstrap → stats → runtime manager → static resources → admin → ADS.

use crate::admin::{self, AdminCtx};
use crate::bootstrap::{self, BootstrapConfig};
use crate::cli::{Mode, Options};
use crate::config::{self, Discovery};
use crate::proxy::listener::ListenerManager;
use crate::runtime::Runtime;
use crate::runtime::manager::{InitPolicy, Manager};
use crate::stats::Store;
use crate::xds::{self, XdsClientConfig};
use arc_swap::ArcSwap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    let workers = opts.concurrency.filter(|n| *n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("legate-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(opts, boot, workers))
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
        config::cluster(c).map_err(|e| format!("static_resources.clusters: {e}"))?;
    }
    for l in &boot.static_listeners {
        config::listener(l).map_err(|e| format!("static_resources.listeners: {e}"))?;
    }
    Ok(())
}

fn xds_endpoints(
    boot: &BootstrapConfig,
    cluster_name: &str,
) -> Result<(Vec<String>, Duration), String> {
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
    Ok((endpoints, cfg.connect_timeout))
}

fn options_json(opts: &Options, workers: usize) -> serde_json::Value {
    serde_json::json!({
        "concurrency": workers,
        "config_path": opts.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "config_yaml": opts.config_yaml.clone().unwrap_or_default(),
        "admin_address_path": opts.admin_address_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "log_level": opts.log_level,
        "service_cluster": opts.service_cluster.clone().unwrap_or_default(),
        "service_node": opts.service_node.clone().unwrap_or_default(),
        "service_zone": opts.service_zone.clone().unwrap_or_default(),
        "mode": "Serve",
        "disable_hot_restart": opts.disable_hot_restart,
        "base_id": opts.base_id.unwrap_or(0).to_string(),
    })
}

async fn run(opts: Options, boot: BootstrapConfig, workers: usize) -> ExitCode {
    let started = Instant::now();
    let store = Store::new();
    store.gauge("server.concurrency").set(workers as u64);
    // Envoy shows histograms as of the last stats flush (stats_flush_interval, default 5 s).
    store.spawn_flush_task(Duration::from_secs(5));
    let runtime = Arc::new(ArcSwap::from_pointee(Runtime::default()));
    let listeners = Arc::new(ListenerManager::new(store.clone(), runtime.clone()));
    let init = InitPolicy {
        wait_cds: boot.ads.is_some() && boot.cds_via_ads,
        wait_lds: boot.ads.is_some() && boot.lds_via_ads,
    };
    let manager = Manager::new(store.clone(), runtime, listeners, init);
    if let Err(e) = manager.install_static(&boot.static_clusters, &boot.static_listeners) {
        eprintln!("legate-proxy: error initializing configuration: {e}");
        return ExitCode::FAILURE;
    }
    let (quit_tx, mut quit_rx) = watch::channel(false);
    if let Some(addr) = boot.admin {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("legate-proxy: cannot bind admin address {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(admin = %bound, "admin listening");
        if let Some(path) = &opts.admin_address_path
            && let Err(e) = std::fs::write(path, &bound)
        {
            eprintln!("legate-proxy: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        let ctx = Arc::new(AdminCtx {
            store: store.clone(),
            manager: manager.clone(),
            bootstrap: boot.to_json(),
            options: options_json(&opts, workers),
            node: legate_proto::json::to_json(&boot.node).unwrap_or_default(),
            started,
            quit: quit_tx,
        });
        tokio::spawn(admin::serve(ctx, listener));
    }
    if let Some(ads) = &boot.ads {
        let (endpoints, connect_timeout) = match xds_endpoints(&boot, &ads.cluster_name) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("legate-proxy: error initializing configuration: {e}");
                return ExitCode::FAILURE;
            }
        };
        let cfg = XdsClientConfig {
            endpoints,
            node: boot.node.clone(),
            delta: ads.delta,
            connect_timeout,
            subscribe_cds: boot.cds_via_ads,
            subscribe_lds: boot.lds_via_ads,
        };
        let sink: Arc<dyn xds::ConfigSink> = manager.clone();
        tokio::spawn(xds::run(cfg, sink));
        let m = manager.clone();
        tokio::spawn(async move {
            tokio::time::sleep(INITIAL_FETCH_TIMEOUT).await;
            m.force_live();
        });
    }
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
        _ = quit_rx.changed() => tracing::info!("quitquitquit"),
    }
    ExitCode::SUCCESS
}
