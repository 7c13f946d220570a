//! Validated proxy configuration converted from Envoy resources.

pub mod types;
pub use types::*;
