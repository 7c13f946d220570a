//! `legate-grpc-upstream --listen ADDR --instance ID [--fail] [--tls-cert F --tls-key F
//! [--client-ca F]]`: one greeter instance, in plaintext or over (m)TLS.

use clap::Parser;
use legate_grpc_test_server::{ServerTls, State, serve};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A helloworld-like gRPC server whose replies name the instance; fails on demand.
#[derive(Parser, Debug)]
#[command(name = "legate-grpc-upstream", version, about)]
struct Cli {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Instance id, returned in every reply.
    #[arg(long)]
    instance: String,
    /// Answer every call with UNAVAILABLE (metadata `x-fail-on: <id>` does it per call).
    #[arg(long)]
    fail: bool,
    /// Speak TLS only, with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ServerTls::from_files(cert, key, cli.client_ca.as_deref())?)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let state = Arc::new(State::new(&cli.instance));
    state.failing.store(cli.fail, Ordering::Relaxed);
    let mode = match &tls {
        Some(t) if t.is_mtls() => "mTLS",
        Some(_) => "TLS",
        None => "plaintext",
    };
    println!(
        "legate-grpc-upstream {} listening on {} ({mode})",
        cli.instance,
        listener.local_addr()?
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, state, tls, shutdown).await
}
