//! Support code for Legate's end-to-end tests.
//!
//! The tests spawn real processes — `legate-cp`, Envoy (from `ENVOY_BIN`) and
//! later `legate-proxy` — next to in-process [`Upstream`]s. Everything here has
//! a deadline, never uses fixed ports, and kills (and reaps) child processes on
//! drop. Each child's stdout/stderr goes to files in its own temp dir; failed
//! waits panic with the tail of those logs, and the temp dir is kept when the
//! test panics.
//!
//! [`Upstream`]: legate_test_upstream::Upstream

mod bins;
mod config_file;
mod control_plane;
mod envoy;
mod h2c;
mod http;
mod process;
mod recorder;
mod wait;

pub use bins::{cargo_bin, envoy_bin, workspace_root};
pub use config_file::{ConfigFile, Yaml};
pub use control_plane::ControlPlane;
pub use envoy::{Envoy, Flavor};
pub use h2c::{H2Response, grpc_frame, h2c_send};
pub use http::{HttpResponse, http_get, http_get_with_headers, http_send};
pub use legate_test_upstream as upstream;
pub use process::{Process, run_with_deadline};
pub use recorder::{Recorded, Recorder};
pub use wait::{free_port, wait_until};

use std::time::Duration;

/// How long a spawned process gets to become ready.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// Runs one scenario fn as two tests, `<name>_envoy` and `<name>_legate`, so a failure
/// names the proxy. Assertions are identical: the scenario only gets the flavour. With
/// `ignore_legate = "why"` the legate-proxy test is `#[ignore]`d with that reason.
#[macro_export]
macro_rules! flavors {
    ($scenario:ident, $envoy:ident, $legate:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $envoy() {
            $scenario($crate::Flavor::Envoy).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $legate() {
            $scenario($crate::Flavor::Legate).await
        }
    };
    ($scenario:ident, $envoy:ident, $legate:ident, ignore_legate = $why:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $envoy() {
            $scenario($crate::Flavor::Envoy).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = $why]
        async fn $legate() {
            $scenario($crate::Flavor::Legate).await
        }
    };
}
