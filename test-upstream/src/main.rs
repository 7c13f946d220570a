//! `legate-upstream`: runs a [`legate_test_upstream::Upstream`] until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::StatusCode;
use legate_test_upstream::{FaultConfig, Upstream};

/// An HTTP/1.1 + h2c echo upstream and fault injector for Legate tests, the
/// demo and benchmarks. Per-request faults come from `x-fault-*` headers.
#[derive(Debug, Parser)]
#[command(name = "legate-upstream", version)]
struct Args {
    /// Instance name, returned in `x-upstream-instance` and the JSON body.
    #[arg(long)]
    name: String,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Fraction (0.0 to 1.0) of requests answered with --fail-status
    /// (unless they carry a status header); deterministic given --seed.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
    /// Status code for the --fail-rate failures.
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=999))]
    fail_status: u16,
    /// Seed for the --fail-rate draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Delay in milliseconds before every response's headers
    /// (x-fault-delay-ms overrides it).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Fast benchmark mode: answer every request `200` with exactly this body
    /// (`content-type: text/plain`); fault headers and other flags are ignored.
    #[arg(long, value_name = "TEXT")]
    static_body: Option<String>,
}

/// Parses a `--fail-rate` value.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a number between 0.0 and 1.0")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = FaultConfig {
        fail_rate: args.fail_rate,
        fail_status: StatusCode::from_u16(args.fail_status).context("--fail-status")?,
        seed: args.seed,
        delay: Duration::from_millis(args.delay_ms),
        static_body: args.static_body.map(Bytes::from),
    };
    let upstream = Upstream::start_with(&args.name, args.listen, Arc::new(config))
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
