//! Runtime state: what the request path reads, and the manager that builds it from xDS.
//!
//! The manager is the only writer. It validates every update into `crate::config` types and
//! publishes a new immutable [`Runtime`] with one atomic swap; the request path loads it once
//! per request and takes no lock.

pub mod cluster;
pub mod dns;
pub mod host;
pub mod manager;

use crate::config::RouteTable;
use cluster::Cluster;
use std::collections::HashMap;
use std::sync::Arc;

/// The maps of [`Runtime`]: looked up on every request by names that come from the
/// configuration, never from a request, so a fast hash without flood protection is safe.
pub type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// What the request path reads: warm clusters and route tables.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Clusters that have their endpoints (warming ones are not here yet).
    pub clusters: NameMap<Arc<Cluster>>,
    /// Route configurations by name (RDS).
    pub routes: NameMap<Arc<RouteTable>>,
}
