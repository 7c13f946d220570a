//! `legate-upstream`: runs a [`legate_test_upstream::Upstream`] until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use legate_test_upstream::Upstream;

/// An HTTP/1.1 + h2c echo upstream for Legate tests and the demo.
#[derive(Debug, Parser)]
#[command(name = "legate-upstream", version)]
struct Args {
    /// Instance name, returned in `x-upstream-instance` and the JSON body.
    #[arg(long)]
    name: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = Upstream::start_on(&args.name, args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!(
        "legate-upstream {} listening on {}",
        upstream.name, upstream.addr
    );
    std::io::stdout().flush().context("flushing stdout")?;
    wait_for_signal().await?;
    upstream.stop().await;
    Ok(())
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
