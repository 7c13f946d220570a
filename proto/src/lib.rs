//! Glue over `envoy-types`: xDS type URLs, packing and unpacking `google.protobuf.Any`, and
//! Envoy's JSON mapping (used by `render`, config dumps and bootstrap parsing).
//!
//! All Envoy messages come from `envoy-types`; nothing here is generated or copied.

pub mod any;
pub mod descriptors;
pub mod json;
pub mod type_url;

pub use envoy_types::pb;
