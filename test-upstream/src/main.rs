//! `legate-upstream`: runs a [`legate_test_upstream::Upstream`] until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::StatusCode;
use legate_test_upstream::{FaultConfig, TlsSettings, Upstream};

/// An HTTP/1.1 + h2c echo upstream and fault injector for Legate tests, the
/// demo and benchmarks. Per-request faults come from `x-fault-*` headers.
///
/// With --tls-cert and --tls-key it serves HTTPS instead (rustls; ALPN h2 and
/// http/1.1; TLS 1.2 and 1.3), and with --client-ca it requires client
/// certificates from that CA (mTLS). Responses on TLS connections carry
/// `x-legate-client-serial: <hex>` (the serial of the client certificate the
/// connection was made with), `x-legate-tls-version: TLSv1.2|TLSv1.3` and
/// `x-legate-tls-alpn: h2|http/1.1` (when ALPN chose one).
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
    /// Serve TLS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM bundle); a client
    /// without one fails the handshake. Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Close every connection after its first response (HTTP/1.1
    /// `connection: close`, HTTP/2 GOAWAY): one connection (and TLS
    /// handshake) per request.
    #[arg(long)]
    close_after_response: bool,
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
    let mut builder = Upstream::builder(&args.name)
        .addr(args.listen)
        .behaviour(Arc::new(config))
        .close_after_response(args.close_after_response);
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        let mut tls = TlsSettings::new(cert, key);
        if let Some(ca) = args.client_ca {
            tls = tls.client_ca(ca);
        }
        builder = builder.tls(tls);
    }
    let upstream = builder
        .start()
        .await
        .with_context(|| format!("starting on {}", args.listen))?;
    // Scripts read the address as everything after "listening on ": keep this line as is.
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
