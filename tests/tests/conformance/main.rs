//! Data-plane conformance: each scenario runs against stock Envoy and against legate-proxy
//! with identical assertions (`<scenario>_envoy`, `<scenario>_legate`).
//!
//! A scenario writes a legate-cp YAML file, starts `legate-cp serve`, starts the data plane
//! from `legate-cp bootstrap envoy`, drives requests at fault-injecting upstreams
//! (`legate_test_upstream`) and checks what anyone can observe: the status and local-reply
//! body the client gets, the attempts that reached the upstreams (and which hosts), the
//! counters and gauges in `/stats` by Envoy's names, and `health_flags` in `/clusters`.
//!
//! Envoy is the reference: an assertion that fails against Envoy is a wrong expectation; one
//! that fails only against legate-proxy is a difference to fix in legate-proxy.

mod common;

mod admission;
mod backoff;
mod balancing;
mod bodies;
mod breakers;
mod connection_limits;
mod early_responses;
mod grpc;
mod header_options;
mod internal;
mod lifetime;
mod outlier;
mod retries;
mod stream_timeouts;
mod traffic_stats;
