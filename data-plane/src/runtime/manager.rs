//! The configuration manager: the single writer of runtime state.
//!
//! It receives complete per-type resource sets from the xDS client (or the bootstrap), converts
//! them with `crate::config` (any failure rejects the whole update, which the client NACKs),
//! keeps unchanged clusters (and so their pools and stats), warms new ones (a cluster is used
//! once it has endpoints; a listener accepts once its routes exist) and publishes a new
//! [`Runtime`] atomically.

use super::Runtime;
use super::cluster::Cluster;
use super::dns;
use crate::config::{self, Discovery, EndpointConfig, ListenerConfig, RouteSource, RouteTable};
use crate::proxy::listener::ListenerManager;
use crate::stats::{Counter, Gauge, Store};
use arc_swap::ArcSwap;
use legate_proto::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use legate_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use legate_proto::pb::envoy::config::listener::v3::Listener as ListenerProto;
use legate_proto::pb::envoy::config::route::v3::RouteConfiguration;
use legate_proto::pb::google::protobuf::Any;
use legate_proto::type_url;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// One cluster known to the manager (warm or warming).
struct ClusterEntry {
    cluster: Arc<Cluster>,
    /// The resource as received (for `/config_dump`); `None` for static clusters.
    any: Option<Any>,
    from_bootstrap: bool,
    updated: SystemTime,
    dns: Option<tokio::task::AbortHandle>,
}

impl Drop for ClusterEntry {
    fn drop(&mut self) {
        if let Some(h) = self.dns.take() {
            h.abort();
        }
    }
}

struct ListenerEntry {
    config: ListenerConfig,
    any: Option<Any>,
    from_bootstrap: bool,
    updated: SystemTime,
}

#[derive(Default)]
struct State {
    clusters: BTreeMap<String, ClusterEntry>,
    /// ClusterLoadAssignments by service name.
    assignments: BTreeMap<String, (Vec<EndpointConfig>, Any, SystemTime)>,
    listeners: BTreeMap<String, ListenerEntry>,
    routes: BTreeMap<String, (Arc<RouteTable>, Any, SystemTime)>,
    cds_applied: bool,
    lds_applied: bool,
}

/// `update_attempt`, `update_success`, `update_rejected` of one xDS type.
struct UpdateStats {
    attempt: Counter,
    success: Counter,
    rejected: Counter,
}

impl UpdateStats {
    fn new(store: &Store, prefix: &str) -> Self {
        UpdateStats {
            attempt: store.counter(&format!("{prefix}.update_attempt")),
            success: store.counter(&format!("{prefix}.update_success")),
            rejected: store.counter(&format!("{prefix}.update_rejected")),
        }
    }

    fn record<T>(&self, r: &Result<T, String>) {
        self.attempt.inc();
        match r {
            Ok(_) => self.success.inc(),
            Err(_) => self.rejected.inc(),
        }
    }
}

struct ManagerStats {
    cds: UpdateStats,
    eds: UpdateStats,
    lds: UpdateStats,
    rds: UpdateStats,
    active_clusters: Gauge,
    warming_clusters: Gauge,
    cluster_added: Counter,
    cluster_modified: Counter,
    cluster_removed: Counter,
    listeners_active: Gauge,
    listeners_warming: Gauge,
    listener_added: Counter,
    listener_modified: Counter,
    listener_removed: Counter,
    connected_state: Gauge,
}

/// Options that decide when the proxy is initialized.
#[derive(Clone, Copy, Debug, Default)]
pub struct InitPolicy {
    /// Wait for the first CDS update.
    pub wait_cds: bool,
    /// Wait for the first LDS update.
    pub wait_lds: bool,
}

/// The configuration manager.
pub struct Manager {
    store: Store,
    runtime: Arc<ArcSwap<Runtime>>,
    listeners: Arc<ListenerManager>,
    state: Mutex<State>,
    stats: ManagerStats,
    init: InitPolicy,
    live: AtomicBool,
    this: Weak<Manager>,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl Manager {
    /// A manager publishing into `runtime`.
    pub fn new(
        store: Store,
        runtime: Arc<ArcSwap<Runtime>>,
        listeners: Arc<ListenerManager>,
        init: InitPolicy,
    ) -> Arc<Manager> {
        let s = &store;
        let stats = ManagerStats {
            cds: UpdateStats::new(s, "cluster_manager.cds"),
            eds: UpdateStats::new(s, "cluster_manager.eds"),
            lds: UpdateStats::new(s, "listener_manager.lds"),
            rds: UpdateStats::new(s, "listener_manager.rds"),
            active_clusters: s.gauge("cluster_manager.active_clusters"),
            warming_clusters: s.gauge("cluster_manager.warming_clusters"),
            cluster_added: s.counter("cluster_manager.cluster_added"),
            cluster_modified: s.counter("cluster_manager.cluster_modified"),
            cluster_removed: s.counter("cluster_manager.cluster_removed"),
            listeners_active: s.gauge("listener_manager.total_listeners_active"),
            listeners_warming: s.gauge("listener_manager.total_listeners_warming"),
            listener_added: s.counter("listener_manager.listener_added"),
            listener_modified: s.counter("listener_manager.listener_modified"),
            listener_removed: s.counter("listener_manager.listener_removed"),
            connected_state: s.gauge("control_plane.connected_state"),
        };
        Arc::new_cyclic(|this| Manager {
            store,
            runtime,
            listeners,
            state: Mutex::new(State::default()),
            stats,
            init,
            live: AtomicBool::new(false),
            this: this.clone(),
        })
    }

    /// True once the initial configuration is in place (Envoy's `LIVE`).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Declares the proxy live regardless of warming (Envoy's initial fetch timeout).
    pub fn force_live(&self) {
        if !self.live.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "initial configuration incomplete after the initial fetch timeout; serving what is there"
            );
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, String> {
        self.state
            .lock()
            .map_err(|_| "internal error: manager state poisoned".to_string())
    }

    /// Installs the bootstrap's static clusters and listeners. Errors name the resource.
    pub fn install_static(
        &self,
        clusters: &[ClusterProto],
        listeners: &[ListenerProto],
    ) -> Result<(), String> {
        let mut st = self.lock()?;
        for proto in clusters {
            let cfg =
                config::cluster(proto).map_err(|e| format!("static_resources.clusters: {e}"))?;
            if matches!(cfg.discovery, Discovery::Eds { .. }) {
                return Err(format!(
                    "static_resources.clusters: cluster `{}`: type: EDS clusters cannot be static here",
                    cfg.name
                ));
            }
            let name = cfg.name.clone();
            let entry = self.start_cluster(cfg, None, &st.assignments, None, true);
            st.clusters.insert(name, entry);
        }
        let mut configs = Vec::new();
        for proto in listeners {
            let cfg =
                config::listener(proto).map_err(|e| format!("static_resources.listeners: {e}"))?;
            configs.push(cfg);
        }
        self.listeners.reconcile(&configs)?;
        for cfg in configs {
            st.listeners.insert(
                cfg.name.clone(),
                ListenerEntry {
                    config: cfg,
                    any: None,
                    from_bootstrap: true,
                    updated: now(),
                },
            );
        }
        self.publish(&mut st);
        Ok(())
    }

    /// Creates a live cluster and starts its endpoint discovery.
    fn start_cluster(
        &self,
        cfg: config::ClusterConfig,
        previous: Option<&Arc<Cluster>>,
        assignments: &BTreeMap<String, (Vec<EndpointConfig>, Any, SystemTime)>,
        any: Option<Any>,
        from_bootstrap: bool,
    ) -> ClusterEntry {
        let cluster = Cluster::new(cfg, &self.store);
        // Make before break: a modified cluster starts with the endpoints it had.
        if let Some(old) = previous.filter(|o| o.is_warm())
            && std::mem::discriminant(&old.config.discovery)
                == std::mem::discriminant(&cluster.config.discovery)
        {
            let (eps, names) = endpoints_of(old);
            cluster.set_endpoints(&eps, &names);
        }
        let mut dns_task = None;
        match &cluster.config.discovery {
            Discovery::Static(eps) => cluster.set_endpoints(eps, &[]),
            Discovery::Eds { service_name } => {
                if let Some((eps, _, _)) = assignments.get(service_name) {
                    cluster.set_endpoints(eps, &[]);
                }
            }
            Discovery::StrictDns { .. } => {
                let c = cluster.clone();
                let manager = self.this.clone();
                let task = tokio::spawn(async move {
                    if let Some((eps, names)) = dns::resolve(&c).await {
                        c.set_endpoints(&eps, &names);
                    } else {
                        c.mark_warm();
                    }
                    if let Some(m) = manager.upgrade() {
                        m.republish();
                    }
                    dns::run(c).await;
                });
                dns_task = Some(task.abort_handle());
            }
        }
        ClusterEntry {
            cluster,
            any,
            from_bootstrap,
            updated: now(),
            dns: dns_task,
        }
    }

    /// Publishes again (after a cluster warmed asynchronously).
    pub fn republish(&self) {
        if let Ok(mut st) = self.lock() {
            self.publish(&mut st);
        }
    }

    fn publish(&self, st: &mut State) {
        let clusters = st
            .clusters
            .iter()
            .filter(|(_, e)| e.cluster.is_warm())
            .map(|(n, e)| (n.clone(), e.cluster.clone()))
            .collect();
        let routes = st
            .routes
            .iter()
            .map(|(n, (t, _, _))| (n.clone(), t.clone()))
            .collect();
        let warming_clusters = st
            .clusters
            .values()
            .filter(|e| !e.cluster.is_warm())
            .count();
        self.stats
            .active_clusters
            .set((st.clusters.len() - warming_clusters) as u64);
        self.stats.warming_clusters.set(warming_clusters as u64);
        self.runtime.store(Arc::new(Runtime { clusters, routes }));
        let mut warming_listeners = 0;
        for (name, entry) in &st.listeners {
            let ready = match &entry.config.routes {
                RouteSource::Inline(_) => true,
                RouteSource::Rds(r) => st.routes.contains_key(r),
            };
            if ready {
                self.listeners.activate(name);
            } else {
                warming_listeners += 1;
            }
        }
        self.stats
            .listeners_active
            .set((st.listeners.len() - warming_listeners) as u64);
        self.stats.listeners_warming.set(warming_listeners as u64);
        let initialized = (!self.init.wait_cds || st.cds_applied)
            && (!self.init.wait_lds || st.lds_applied)
            && warming_clusters == 0
            && warming_listeners == 0;
        if initialized && !self.live.swap(true, Ordering::AcqRel) {
            tracing::info!("all clusters and listeners initialized: LIVE");
        }
    }

    fn apply_clusters(&self, resources: &BTreeMap<String, Any>) -> Result<(), String> {
        let mut parsed = Vec::new();
        let mut st = self.lock()?;
        for (name, any) in resources {
            let proto: ClusterProto =
                legate_proto::any::unpack(any).map_err(|e| format!("cluster `{name}`: {e}"))?;
            let cfg = config::cluster(&proto).map_err(|e| e.to_string())?;
            if st.clusters.get(name).is_some_and(|e| e.from_bootstrap) {
                return Err(format!(
                    "cluster `{name}`: name: a static cluster from the bootstrap has this name"
                ));
            }
            parsed.push((name.clone(), cfg, any.clone()));
        }
        let mut next: BTreeMap<String, ClusterEntry> = BTreeMap::new();
        let names: BTreeSet<String> = st
            .clusters
            .iter()
            .filter(|(_, e)| e.from_bootstrap)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            if let Some(e) = st.clusters.remove(&n) {
                next.insert(n, e);
            }
        }
        for (name, cfg, any) in parsed {
            match st.clusters.remove(&name) {
                Some(mut old) if old.cluster.config == cfg => {
                    if old.any.as_ref() != Some(&any) {
                        old.any = Some(any);
                        old.updated = now();
                    }
                    next.insert(name, old);
                }
                Some(old) => {
                    self.stats.cluster_modified.inc();
                    let entry = self.start_cluster(
                        cfg,
                        Some(&old.cluster),
                        &st.assignments,
                        Some(any),
                        false,
                    );
                    next.insert(name, entry);
                }
                None => {
                    self.stats.cluster_added.inc();
                    let entry = self.start_cluster(cfg, None, &st.assignments, Some(any), false);
                    next.insert(name, entry);
                }
            }
        }
        for _ in st.clusters.values() {
            self.stats.cluster_removed.inc();
        }
        st.clusters = next;
        st.cds_applied = true;
        self.publish(&mut st);
        Ok(())
    }

    fn apply_endpoints(&self, resources: &BTreeMap<String, Any>) -> Result<(), String> {
        let mut parsed = BTreeMap::new();
        for (name, any) in resources {
            let cla: ClusterLoadAssignment = legate_proto::any::unpack(any)
                .map_err(|e| format!("cluster load assignment `{name}`: {e}"))?;
            let eps = config::load_assignment(&cla).map_err(|e| e.to_string())?;
            parsed.insert(name.clone(), (eps, any.clone(), now()));
        }
        let mut st = self.lock()?;
        for entry in st.clusters.values() {
            if let Discovery::Eds { service_name } = &entry.cluster.config.discovery
                && let Some((eps, _, _)) = parsed.get(service_name)
            {
                let (current, _) = endpoints_of(&entry.cluster);
                if !entry.cluster.is_warm() || &current != eps {
                    entry.cluster.set_endpoints(eps, &[]);
                }
            }
        }
        // Keep the time of assignments that did not change.
        for (name, (eps, any, updated)) in parsed.iter_mut() {
            if let Some((old_eps, old_any, old_updated)) = st.assignments.get(name)
                && old_eps == eps
                && old_any == any
            {
                *updated = *old_updated;
            }
        }
        st.assignments = parsed;
        self.publish(&mut st);
        Ok(())
    }

    fn apply_listeners(&self, resources: &BTreeMap<String, Any>) -> Result<(), String> {
        let mut parsed = Vec::new();
        for (name, any) in resources {
            let proto: ListenerProto =
                legate_proto::any::unpack(any).map_err(|e| format!("listener `{name}`: {e}"))?;
            let cfg = config::listener(&proto).map_err(|e| e.to_string())?;
            parsed.push((cfg, any.clone()));
        }
        let mut st = self.lock()?;
        let mut configs: Vec<ListenerConfig> = st
            .listeners
            .values()
            .filter(|e| e.from_bootstrap)
            .map(|e| e.config.clone())
            .collect();
        for (cfg, _) in &parsed {
            if configs.iter().any(|c| c.name == cfg.name) {
                return Err(format!(
                    "listener `{}`: name: a static listener from the bootstrap has this name",
                    cfg.name
                ));
            }
            configs.push(cfg.clone());
        }
        self.listeners.reconcile(&configs)?;
        let mut next: BTreeMap<String, ListenerEntry> = BTreeMap::new();
        let statics: Vec<String> = st
            .listeners
            .iter()
            .filter(|(_, e)| e.from_bootstrap)
            .map(|(n, _)| n.clone())
            .collect();
        for n in statics {
            if let Some(e) = st.listeners.remove(&n) {
                next.insert(n, e);
            }
        }
        for (cfg, any) in parsed {
            let name = cfg.name.clone();
            let updated = match st.listeners.remove(&name) {
                Some(old) if old.any.as_ref() == Some(&any) => old.updated,
                Some(_) => {
                    self.stats.listener_modified.inc();
                    now()
                }
                None => {
                    self.stats.listener_added.inc();
                    now()
                }
            };
            next.insert(
                name,
                ListenerEntry {
                    config: cfg,
                    any: Some(any),
                    from_bootstrap: false,
                    updated,
                },
            );
        }
        for _ in st.listeners.values() {
            self.stats.listener_removed.inc();
        }
        st.listeners = next;
        st.lds_applied = true;
        self.publish(&mut st);
        Ok(())
    }

    fn apply_routes(&self, resources: &BTreeMap<String, Any>) -> Result<(), String> {
        let mut parsed = BTreeMap::new();
        for (name, any) in resources {
            let rc: RouteConfiguration = legate_proto::any::unpack(any)
                .map_err(|e| format!("route configuration `{name}`: {e}"))?;
            let table = config::route_table(&rc).map_err(|e| e.to_string())?;
            parsed.insert(name.clone(), (Arc::new(table), any.clone(), now()));
        }
        let mut st = self.lock()?;
        for (name, (table, any, updated)) in parsed.iter_mut() {
            if let Some((old_table, old_any, old_updated)) = st.routes.get(name)
                && old_any == any
            {
                *table = old_table.clone();
                *updated = *old_updated;
            }
        }
        st.routes = parsed;
        self.publish(&mut st);
        Ok(())
    }

    /// Every cluster (warm or not), with whether it came from xDS, for `/clusters`.
    pub fn clusters(&self) -> Vec<(Arc<Cluster>, bool)> {
        self.lock()
            .map(|st| {
                st.clusters
                    .values()
                    .map(|e| (e.cluster.clone(), !e.from_bootstrap))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The dynamic part of Envoy's `/config_dump`: clusters, endpoints, listeners and routes.
    pub fn dump(&self) -> ConfigDumpParts {
        let Ok(st) = self.lock() else {
            return ConfigDumpParts::default();
        };
        let mut parts = ConfigDumpParts::default();
        for (name, e) in &st.clusters {
            match &e.any {
                Some(any) => parts.dynamic_clusters.push(DumpEntry {
                    name: name.clone(),
                    any: any.clone(),
                    updated: e.updated,
                    warming: !e.cluster.is_warm(),
                }),
                None => parts.static_clusters.push(name.clone()),
            }
        }
        for (name, (_, any, updated)) in &st.assignments {
            parts.endpoints.push(DumpEntry {
                name: name.clone(),
                any: any.clone(),
                updated: *updated,
                warming: false,
            });
        }
        for (name, e) in &st.listeners {
            if let Some(any) = &e.any {
                let warming = match &e.config.routes {
                    RouteSource::Rds(r) => !st.routes.contains_key(r),
                    RouteSource::Inline(_) => false,
                };
                parts.dynamic_listeners.push(DumpEntry {
                    name: name.clone(),
                    any: any.clone(),
                    updated: e.updated,
                    warming,
                });
            }
        }
        for (name, (_, any, updated)) in &st.routes {
            parts.routes.push(DumpEntry {
                name: name.clone(),
                any: any.clone(),
                updated: *updated,
                warming: false,
            });
        }
        parts
    }
}

/// One dynamic resource for `/config_dump`.
#[derive(Clone, Debug)]
pub struct DumpEntry {
    /// Resource name.
    pub name: String,
    /// The resource as received.
    pub any: Any,
    /// When it last changed.
    pub updated: SystemTime,
    /// Still warming.
    pub warming: bool,
}

/// What the manager contributes to `/config_dump`.
#[derive(Clone, Debug, Default)]
pub struct ConfigDumpParts {
    /// Static cluster names (their config is in the bootstrap).
    pub static_clusters: Vec<String>,
    /// Clusters from CDS.
    pub dynamic_clusters: Vec<DumpEntry>,
    /// Load assignments from EDS.
    pub endpoints: Vec<DumpEntry>,
    /// Listeners from LDS.
    pub dynamic_listeners: Vec<DumpEntry>,
    /// Route configurations from RDS.
    pub routes: Vec<DumpEntry>,
}

/// The endpoints a cluster has now (and their DNS names), to carry them over.
fn endpoints_of(c: &Cluster) -> (Vec<EndpointConfig>, Vec<Option<String>>) {
    let hosts = c.hosts();
    let eps = hosts
        .all
        .iter()
        .map(|h| EndpointConfig {
            address: h.address,
            weight: h.weight,
            locality_weight: 1,
            priority: h.priority,
            health: h.health,
        })
        .collect();
    let names = hosts.all.iter().map(|h| h.hostname.clone()).collect();
    (eps, names)
}

impl crate::xds::ConfigSink for Manager {
    fn apply(&self, type_url: &str, resources: &BTreeMap<String, Any>) -> Result<(), String> {
        let (result, stats) = match type_url {
            type_url::CLUSTER => (self.apply_clusters(resources), &self.stats.cds),
            type_url::ENDPOINT => (self.apply_endpoints(resources), &self.stats.eds),
            type_url::LISTENER => (self.apply_listeners(resources), &self.stats.lds),
            type_url::ROUTE => (self.apply_routes(resources), &self.stats.rds),
            other => return Err(format!("resources of type {other} are not supported")),
        };
        stats.record(&result);
        if let Err(e) = &result {
            tracing::warn!(type_url, error = %e, "rejected configuration update");
        }
        result
    }

    fn wanted(&self, type_url: &str) -> BTreeSet<String> {
        let Ok(st) = self.lock() else {
            return BTreeSet::new();
        };
        match type_url {
            type_url::ENDPOINT => st
                .clusters
                .values()
                .filter_map(|e| match &e.cluster.config.discovery {
                    Discovery::Eds { service_name } => Some(service_name.clone()),
                    _ => None,
                })
                .collect(),
            type_url::ROUTE => st
                .listeners
                .values()
                .filter_map(|e| match &e.config.routes {
                    RouteSource::Rds(name) => Some(name.clone()),
                    RouteSource::Inline(_) => None,
                })
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    fn connected(&self, up: bool) {
        self.stats.connected_state.set(u64::from(up));
    }
}
