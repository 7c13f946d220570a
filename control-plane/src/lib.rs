//! `legate-cp`: reads hand-edited YAML service definitions, translates them into Envoy
//! resources and serves them over xDS. See ARCHITECTURE.md for the codemap.

pub mod admin;
pub mod bootstrap;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod config;
pub mod dns;
pub mod grpc_bootstrap;
pub mod model;
pub mod reload;
pub mod render;
pub mod server;
pub mod state;
pub mod translate;
