//! Command-line interface of `legate-cp`.

use crate::admin::Admin;
use crate::bootstrap::EnvoyBootstrap;
use crate::cache::SnapshotCache;
use crate::server::XdsServer;
use crate::server::registry::Registry;
use crate::state::ConfigState;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;

/// legate-cp: YAML service definitions served over xDS to Envoy, legate-proxy and gRPC clients.
#[derive(Parser, Debug)]
#[command(name = "legate-cp", version, about)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG wins.
    #[arg(long, short = 'l', global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve xDS and the admin API, reloading the configuration when it changes.
    Serve {
        /// A YAML file, or a directory of *.yaml files.
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// xDS (gRPC) listen address.
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds: SocketAddr,
        /// Admin HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:19000")]
        admin: SocketAddr,
        /// Write `{"xds": ADDR, "admin": ADDR}` here once both listeners are bound
        /// (useful with port 0).
        #[arg(long)]
        address_file: Option<PathBuf>,
        /// Serve xDS over TLS with this certificate chain (PEM).
        #[arg(long, requires = "xds_tls_key")]
        xds_tls_cert: Option<PathBuf>,
        /// The private key of --xds-tls-cert (PEM).
        #[arg(long, requires = "xds_tls_cert")]
        xds_tls_key: Option<PathBuf>,
        /// Require xDS clients to present a certificate signed by this CA (mTLS).
        #[arg(long, requires = "xds_tls_cert")]
        xds_client_ca: Option<PathBuf>,
    },
    /// Check a configuration; print every error as file:line:col: message.
    Validate {
        /// A YAML file, or a directory of *.yaml files.
        config: PathBuf,
    },
    /// Print the resources a node would receive, in Envoy's JSON mapping.
    Render {
        /// A YAML file, or a directory of *.yaml files.
        config: PathBuf,
        /// The ambassador (node cluster) to render for.
        #[arg(long)]
        node: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Print private keys instead of `[redacted]`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Print a bootstrap file for a data plane.
    Bootstrap {
        #[command(subcommand)]
        kind: BootstrapKind,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        kind: CertsKind,
    },
}

/// `certs` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertsKind {
    /// Write a development CA (ca.pem, ca.key) and, per service, a leaf (<svc>.pem, <svc>.key)
    /// with SPIFFE, DNS and IP SANs, usable as server and client certificate.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// SPIFFE trust domain of the URI SANs.
        #[arg(long, default_value = "example.org")]
        trust_domain: String,
        /// A service to issue a leaf for (repeat the flag).
        #[arg(long = "service", required = true)]
        services: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Issue leaves from the CA already in --out (rotation) instead of a new CA.
        #[arg(long)]
        keep_ca: bool,
        /// Validity of the leaves, in days.
        #[arg(long, default_value_t = crate::certs::DEFAULT_DAYS)]
        days: u32,
    },
}

/// Bootstrap flavours.
#[derive(Subcommand, Debug)]
pub enum BootstrapKind {
    /// An Envoy v3 bootstrap using ADS against this control plane (also read by legate-proxy).
    Envoy {
        /// The ambassador name (becomes node.cluster; node.id gets a unique suffix).
        #[arg(long)]
        node: String,
        /// The control plane's xDS address as the data plane reaches it (host:port).
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds: String,
        /// The data plane's admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Use incremental (delta) ADS instead of state of the world.
        #[arg(long)]
        delta: bool,
        /// Reach the control plane over TLS, verifying it with this CA (PEM file path, read by
        /// the data plane).
        #[arg(long)]
        xds_tls_ca: Option<PathBuf>,
        /// Client certificate for mTLS towards the control plane.
        #[arg(long, requires_all = ["xds_tls_key", "xds_tls_ca"])]
        xds_tls_cert: Option<PathBuf>,
        /// Private key of --xds-tls-cert.
        #[arg(long, requires = "xds_tls_cert")]
        xds_tls_key: Option<PathBuf>,
        /// SNI sent to the control plane; its certificate must carry it as a DNS SAN.
        #[arg(long, requires = "xds_tls_ca")]
        xds_sni: Option<String>,
    },
    /// A GRPC_XDS_BOOTSTRAP file for a proxyless gRPC application (targets `xds:///<service>`).
    Grpc {
        /// The ambassador whose services the application calls (becomes node.cluster; node.id
        /// gets a unique suffix).
        #[arg(long)]
        node: String,
        /// The control plane's xDS address as the application reaches it (host:port).
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds: String,
        /// Declare the `default` file_watcher certificate provider over DIR/<node>.pem,
        /// DIR/<node>.key and DIR/ca.pem (the layout of `legate-cp certs init`): the
        /// application's certificate and CA for services with `tls` (gRFC A29).
        #[arg(long)]
        cert_dir: Option<PathBuf>,
        /// Reach the control plane over TLS (`channel_creds` type `tls`, gRFC A65), verifying
        /// it with this CA (PEM file path, read by the application).
        #[arg(long)]
        xds_tls_ca: Option<PathBuf>,
        /// Client certificate for mTLS towards the control plane.
        #[arg(long, requires_all = ["xds_tls_key", "xds_tls_ca"])]
        xds_tls_cert: Option<PathBuf>,
        /// Private key of --xds-tls-cert.
        #[arg(long, requires = "xds_tls_cert")]
        xds_tls_key: Option<PathBuf>,
    },
}

/// Output formats of `render`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("legate-cp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config } => match crate::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} services, {} ambassadors)",
                    config.display(),
                    c.services.len(),
                    c.ambassadors.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                print_errors(&errors);
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Render {
            config,
            node,
            format,
            show_secrets,
        } => {
            let model = match crate::config::load(&config) {
                Ok(m) => m,
                Err(errors) => {
                    print_errors(&errors);
                    return Ok(ExitCode::FAILURE);
                }
            };
            let value = crate::render::render_with(&model, &node, show_secrets)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&value)?),
                Format::Yaml => print!("{}", serde_yaml::to_string(&value)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap {
            kind:
                BootstrapKind::Envoy {
                    node,
                    xds,
                    admin,
                    delta,
                    xds_tls_ca,
                    xds_tls_cert,
                    xds_tls_key,
                    xds_sni,
                },
        } => {
            let xds_tls = xds_client_tls(xds_tls_ca, xds_tls_cert, xds_tls_key, xds_sni)?;
            let (xds_host, xds_port) = split_host_port(&xds)?;
            let b = EnvoyBootstrap {
                node,
                id_suffix: format!("{:08x}", rand::random::<u32>()),
                xds_host,
                xds_port,
                admin_host: admin.ip().to_string(),
                admin_port: admin.port(),
                delta,
                xds_tls,
            };
            print!("{}", b.to_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap {
            kind:
                BootstrapKind::Grpc {
                    node,
                    xds,
                    cert_dir,
                    xds_tls_ca,
                    xds_tls_cert,
                    xds_tls_key,
                },
        } => {
            let xds_tls = xds_client_tls(xds_tls_ca, xds_tls_cert, xds_tls_key, None)?.map(|t| {
                crate::grpc_bootstrap::XdsChannelTls {
                    ca: t.ca,
                    client: t.client,
                }
            });
            let (host, port) = split_host_port(&xds)?;
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let b = crate::grpc_bootstrap::GrpcBootstrap {
                node,
                id_suffix: format!("{:08x}", rand::random::<u32>()),
                xds: format!("{host}:{port}"),
                cert_dir,
                xds_tls,
            };
            println!("{}", serde_json::to_string_pretty(&b.to_json())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            xds,
            admin,
            address_file,
            xds_tls_cert,
            xds_tls_key,
            xds_client_ca,
        } => {
            let tls = match (xds_tls_cert, xds_tls_key) {
                (Some(cert), Some(key)) => Some(crate::server::tls::XdsTls::load(
                    &cert,
                    &key,
                    xds_client_ca.as_deref(),
                )?),
                _ => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(config, xds, admin, address_file, tls))
        }
        Command::Certs {
            kind:
                CertsKind::Init {
                    out,
                    trust_domain,
                    services,
                    force,
                    keep_ca,
                    days,
                },
        } => {
            let generated = crate::certs::init(&crate::certs::InitOptions {
                out,
                trust_domain,
                services,
                force,
                keep_ca,
                days,
            })?;
            if generated.ca_written {
                println!(
                    "CA:   {} (key {})",
                    generated.ca_cert.display(),
                    generated.ca_key.display()
                );
            } else {
                println!("CA:   {} (kept)", generated.ca_cert.display());
            }
            for leaf in &generated.leaves {
                println!(
                    "leaf: {} (key {}) {}",
                    leaf.cert.display(),
                    leaf.key.display(),
                    leaf.spiffe_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The bootstrap's TLS towards the control plane, with absolute paths (the data plane may run
/// elsewhere); every file must exist now.
fn xds_client_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sni: Option<String>,
) -> anyhow::Result<Option<crate::bootstrap::XdsClientTls>> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    let absolute = |flag: &str, p: PathBuf| -> anyhow::Result<PathBuf> {
        if !p.is_file() {
            anyhow::bail!("{flag} `{}`: no such file", p.display());
        }
        Ok(std::path::absolute(&p)?)
    };
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((
            absolute("--xds-tls-cert", cert)?,
            absolute("--xds-tls-key", key)?,
        )),
        _ => None,
    };
    Ok(Some(crate::bootstrap::XdsClientTls {
        ca: absolute("--xds-tls-ca", ca)?,
        client,
        sni,
    }))
}

fn print_errors(errors: &[crate::config::ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!(
        "{} error{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

/// Splits `host:port` (`[v6]:port` too); a loopback default replaces an unspecified host.
fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        let ip = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        return Ok((ip, addr.port()));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("`{s}`: expected host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| anyhow::anyhow!("`{s}`: invalid port `{port}`"))?;
    Ok((host.to_string(), port))
}

async fn serve(
    source: PathBuf,
    xds: SocketAddr,
    admin: SocketAddr,
    address_file: Option<PathBuf>,
    tls: Option<crate::server::tls::XdsTls>,
) -> anyhow::Result<ExitCode> {
    let cache = Arc::new(SnapshotCache::new());
    let registry = Arc::new(Registry::default());
    let state = Arc::new(ConfigState::new(source.clone(), cache.clone()));
    if let Err(errors) = state.reload() {
        print_errors(&errors);
        anyhow::bail!("{}: no valid configuration to serve", source.display());
    }
    let xds_listener = TcpListener::bind(xds)
        .await
        .map_err(|e| anyhow::anyhow!("bind xDS address {xds}: {e}"))?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .map_err(|e| anyhow::anyhow!("bind admin address {admin}: {e}"))?;
    let (xds_addr, admin_addr) = (xds_listener.local_addr()?, admin_listener.local_addr()?);
    tracing::info!(
        xds = %xds_addr,
        admin = %admin_addr,
        xds_tls = tls.as_ref().map_or("off", |t| if t.is_mtls() { "mtls" } else { "tls" }),
        "legate-cp serving"
    );
    if let Some(path) = address_file {
        let body =
            serde_json::json!({"xds": xds_addr.to_string(), "admin": admin_addr.to_string()});
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body.to_string())?;
        std::fs::rename(&tmp, &path)?;
    }
    let server = XdsServer::new(cache, registry.clone());
    let admin = Admin {
        state: state.clone(),
        registry,
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    tokio::select! {
        r = server.serve_tls(xds_listener, tls.as_ref(), shutdown) => r?,
        r = admin.serve(admin_listener) => r?,
        r = crate::reload::run(state) => r?,
    }
    Ok(ExitCode::SUCCESS)
}
