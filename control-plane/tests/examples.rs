//! The shipped example must stay valid, and must show every key the loader knows.

use legate_control_plane::config;
use std::path::Path;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services.yaml")
}

#[test]
fn example_is_valid() {
    let c = config::load(&example()).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(c.ambassadors["checkout"].routes.len(), 3);
    let p = &c.services["payments"];
    assert!(p.retries.is_some() && p.circuit_breaker.is_some() && p.outlier_detection.is_some());
}

#[test]
fn example_renders() {
    let c = config::load(&example()).expect("valid");
    let out = legate_control_plane::render::render(&c, "checkout").expect("render");
    assert_eq!(out["clusters"].as_array().map(Vec::len), Some(3));
    assert_eq!(out["listeners"][0]["name"], "checkout");
}
