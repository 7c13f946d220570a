//! `legate-grpc-upstream --listen ADDR --instance ID [--fail]`: one greeter instance.

use clap::Parser;
use legate_grpc_test_server::{State, serve};
use std::net::SocketAddr;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let state = Arc::new(State::new(&cli.instance));
    state.failing.store(cli.fail, Ordering::Relaxed);
    println!(
        "legate-grpc-upstream {} listening on {}",
        cli.instance,
        listener.local_addr()?
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, state, shutdown).await
}
