//! Envoy-compatible command-line flags.
