//! Envoy v3 bootstrap loading and validation.
