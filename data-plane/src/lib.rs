//! `legate-proxy`: an outbound (ambassador) proxy that takes Envoy's bootstrap and flags,
//! subscribes over ADS, and behaves like Envoy where anyone can observe it.
//! See ARCHITECTURE.md for the codemap.

pub mod admin;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod lb;
pub mod proxy;
pub mod resilience;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod tls;
pub mod xds;
