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
use crate::stats::{Counter, Gauge, Histogram, Store};
use crate::xds::{ConfigSink, Update};
use arc_swap::ArcSwap;
use legate_proto::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use legate_proto::pb::envoy::config::listener::v3::Listener as ListenerProto;
use legate_proto::pb::google::protobuf::Any;
use legate_proto::type_url;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

/// One cluster known to the manager (warm or warming).
struct ClusterEntry {
    cluster: Arc<Cluster>,
    /// The resource as received (for `/config_dump`); `None` for static clusters.
    any: Option<Any>,
    from_bootstrap: bool,
    updated: SystemTime,
    /// The version of the CDS update that last changed it (empty for static clusters).
    version: String,
    /// The statistics of its EDS subscription (EDS clusters only).
    eds: Option<EdsStats>,
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
    /// The version of the LDS update that last changed it (empty for static listeners).
    version: String,
}

/// One route configuration from RDS.
struct RouteEntry {
    table: Arc<RouteTable>,
    any: Any,
    updated: SystemTime,
    /// The version of the RDS update that last changed it.
    version: String,
}

#[derive(Default)]
struct State {
    clusters: BTreeMap<String, ClusterEntry>,
    /// ClusterLoadAssignments by service name.
    assignments: BTreeMap<String, (Vec<EndpointConfig>, Any, SystemTime)>,
    listeners: BTreeMap<String, ListenerEntry>,
    routes: BTreeMap<String, RouteEntry>,
    /// The RDS subscriptions: one per route configuration name a listener references, with the
    /// statistics Envoy keeps under the HTTP connection manager that first referenced it.
    rds: BTreeMap<String, RdsStats>,
    /// The SDS subscriptions: one per secret name a cluster ever referenced (`sds.<name>.*`).
    sds: BTreeMap<String, SdsStats>,
    cds_applied: bool,
    lds_applied: bool,
    /// A CDS (LDS) response arrived, accepted or not (Envoy then stops its initial fetch timer).
    cds_responded: bool,
    lds_responded: bool,
    /// The version of the last CDS (LDS) update that added, changed or removed something:
    /// Envoy's `ClustersConfigDump.version_info` (`ListenersConfigDump.version_info`).
    cds_version: String,
    lds_version: String,
}

/// Envoy's statistics of one xDS subscription (`SubscriptionStats`) under `<prefix>.`:
/// `update_attempt` counts the subscription's start and every response, success, rejection
/// and connection failure it sees.
struct SubscriptionStats {
    attempt: Counter,
    success: Counter,
    failure: Counter,
    rejected: Counter,
    init_fetch_timeout: Counter,
    /// How long accepted updates took to apply, in ms.
    duration: Histogram,
}

impl SubscriptionStats {
    fn new(store: &Store, prefix: &str) -> Self {
        let c = |s: &str| store.counter(&format!("{prefix}.{s}"));
        SubscriptionStats {
            attempt: c("update_attempt"),
            success: c("update_success"),
            failure: c("update_failure"),
            rejected: c("update_rejected"),
            init_fetch_timeout: c("init_fetch_timeout"),
            duration: store.histogram(&format!("{prefix}.update_duration")),
        }
    }

    /// The subscription started (Envoy's `GrpcSubscriptionImpl::start`).
    fn started(&self) {
        self.attempt.inc();
    }

    /// An update was accepted; applying it took `took`.
    fn accepted(&self, took: Duration) {
        self.attempt.inc();
        self.success.inc();
        self.took(took);
    }

    fn took(&self, took: Duration) {
        self.duration
            .record(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
    }

    fn rejected(&self) {
        self.attempt.inc();
        self.rejected.inc();
    }

    fn connection_failed(&self) {
        self.attempt.inc();
        self.failure.inc();
    }

    fn fetch_timed_out(&self) {
        self.attempt.inc();
        self.init_fetch_timeout.inc();
    }
}

/// The statistics of one EDS cluster's subscription, under `cluster.<name>.` as in Envoy.
///
/// `update_success` is the same counter as `runtime::cluster`'s, which counts every host set
/// applied to the cluster ([`Cluster::set_endpoints`]); so the manager counts a success itself
/// only for an accepted update that does not reach `set_endpoints` (the assignment did not
/// change, or was removed).
struct EdsStats {
    sub: SubscriptionStats,
    empty: Counter,
    no_rebuild: Counter,
}

impl EdsStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let prefix = format!("cluster.{cluster}");
        EdsStats {
            sub: SubscriptionStats::new(store, &prefix),
            empty: store.counter(&format!("{prefix}.update_empty")),
            no_rebuild: store.counter(&format!("{prefix}.update_no_rebuild")),
        }
    }
}

/// The statistics of one RDS subscription, under `http.<stat_prefix>.rds.<route config>.`.
struct RdsStats {
    sub: SubscriptionStats,
    config_reload: Counter,
}

impl RdsStats {
    fn new(store: &Store, stat_prefix: &str, route_config: &str) -> Self {
        let prefix = format!("http.{stat_prefix}.rds.{route_config}");
        let _ = store.counter(&format!("{prefix}.update_empty"));
        RdsStats {
            sub: SubscriptionStats::new(store, &prefix),
            config_reload: store.counter(&format!("{prefix}.config_reload")),
        }
    }
}

/// The statistics of one SDS subscription, under `sds.<secret name>.` as in Envoy.
struct SdsStats {
    sub: SubscriptionStats,
}

impl SdsStats {
    fn new(store: &Store, secret: &str) -> Self {
        let prefix = format!("sds.{secret}");
        let _ = store.counter(&format!("{prefix}.key_rotation_failed"));
        SdsStats {
            sub: SubscriptionStats::new(store, &prefix),
        }
    }
}

/// How long a TLS cluster waits for its SDS secrets before it warms without them: Envoy's
/// default `initial_fetch_timeout` of the `sds_config` (legate-cp sets none).
pub const SDS_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The ADS stream counted against the xDS cluster's statistics (`cluster.<ads cluster>.*`), as
/// Envoy counts its own gRPC stream: one HTTP/2 connection and one request while the stream is
/// up, the request's `200` charged when the response headers arrive.
///
/// The ADS client uses its own (tonic) channel, not the cluster's connection pool, so these
/// counters are kept here from the client's `connected` events rather than by the pool; the
/// cluster's per-host counters in `/clusters` do not include the ADS connection.
struct AdsConnectionStats {
    cx_total: Counter,
    cx_http2_total: Counter,
    cx_active: Gauge,
    cx_destroy: Counter,
    rq_total: Counter,
    rq_pending_total: Counter,
    rq_active: Gauge,
    rq_completed: Counter,
    rq_2xx: Counter,
    rq_200: Counter,
    /// The stream counted as up.
    up: AtomicBool,
}

impl AdsConnectionStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let c = |s: &str| store.counter(&format!("cluster.{cluster}.{s}"));
        let g = |s: &str| store.gauge(&format!("cluster.{cluster}.{s}"));
        AdsConnectionStats {
            cx_total: c("upstream_cx_total"),
            cx_http2_total: c("upstream_cx_http2_total"),
            cx_active: g("upstream_cx_active"),
            cx_destroy: c("upstream_cx_destroy"),
            rq_total: c("upstream_rq_total"),
            rq_pending_total: c("upstream_rq_pending_total"),
            rq_active: g("upstream_rq_active"),
            rq_completed: c("upstream_rq_completed"),
            rq_2xx: c("upstream_rq_2xx"),
            rq_200: c("upstream_rq_200"),
            up: AtomicBool::new(false),
        }
    }

    fn connected(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        if up {
            self.cx_total.inc();
            self.cx_http2_total.inc();
            self.cx_active.inc();
            self.rq_total.inc();
            self.rq_pending_total.inc();
            self.rq_active.inc();
            self.rq_completed.inc();
            self.rq_2xx.inc();
            self.rq_200.inc();
        } else {
            self.rq_active.dec();
            self.cx_active.dec();
            self.cx_destroy.inc();
        }
    }
}

/// The statistics that exist only with ADS (see [`Manager::xds_started`]).
struct XdsStats {
    /// `cluster_manager.cds.*`, when clusters come from ADS.
    cds: Option<SubscriptionStats>,
    /// `cluster_manager.cds.config_reload`: CDS updates that added or changed a cluster.
    cds_config_reload: Option<Counter>,
    /// `listener_manager.lds.*`, when listeners come from ADS.
    lds: Option<SubscriptionStats>,
    connected_state: Gauge,
    ads: AdsConnectionStats,
}

struct ManagerStats {
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
    /// Set by [`Manager::xds_started`].
    xds: OnceLock<XdsStats>,
    /// SDS secrets in force (TLS clusters build their client configurations from them).
    secrets: crate::tls::SecretStore,
    /// How long a TLS cluster waits for its secrets, in ms ([`SDS_INITIAL_FETCH_TIMEOUT`]).
    sds_fetch_timeout_ms: std::sync::atomic::AtomicU64,
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
        };
        Arc::new_cyclic(|this| Manager {
            store,
            runtime,
            listeners,
            state: Mutex::new(State::default()),
            stats,
            xds: OnceLock::new(),
            secrets: crate::tls::SecretStore::default(),
            sds_fetch_timeout_ms: std::sync::atomic::AtomicU64::new(
                SDS_INITIAL_FETCH_TIMEOUT.as_millis() as u64,
            ),
            init,
            live: AtomicBool::new(false),
            this: this.clone(),
        })
    }

    /// Called once, when the ADS client starts: creates the statistics that exist only with
    /// ADS (`control_plane.*`, `cluster_manager.cds.*` if `cds`, `listener_manager.lds.*` if
    /// `lds`), counts the start of the CDS and LDS subscriptions as Envoy does (one
    /// `update_attempt` each, before any response), and names the cluster the ADS stream is
    /// charged to (`cluster.<ads_cluster>.upstream_*`, see [`AdsConnectionStats`]).
    pub fn xds_started(&self, ads_cluster: &str, cds: bool, lds: bool) {
        let s = &self.store;
        let stats = XdsStats {
            cds: cds.then(|| SubscriptionStats::new(s, "cluster_manager.cds")),
            cds_config_reload: cds.then(|| s.counter("cluster_manager.cds.config_reload")),
            lds: lds.then(|| SubscriptionStats::new(s, "listener_manager.lds")),
            connected_state: s.gauge("control_plane.connected_state"),
            ads: AdsConnectionStats::new(s, ads_cluster),
        };
        let _ = s.gauge("control_plane.pending_requests");
        let _ = s.counter("control_plane.rate_limit_enforced");
        for sub in [&stats.cds, &stats.lds].into_iter().flatten() {
            sub.started();
        }
        let _ = self.xds.set(stats);
    }

    /// Sets how long TLS clusters created from now on wait for their SDS secrets before they
    /// warm without them (default [`SDS_INITIAL_FETCH_TIMEOUT`], Envoy's `initial_fetch_timeout`
    /// default).
    pub fn set_sds_initial_fetch_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.sds_fetch_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// True once the initial configuration is in place (Envoy's `LIVE`).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Declares the proxy live regardless of warming (Envoy's initial fetch timeout). CDS and
    /// LDS subscriptions that have had no response yet count an `init_fetch_timeout`.
    pub fn force_live(&self) {
        if let (Some(x), Ok(st)) = (self.xds.get(), self.lock()) {
            for (sub, responded) in [(&x.cds, st.cds_responded), (&x.lds, st.lds_responded)] {
                if let Some(sub) = sub.as_ref().filter(|_| !responded) {
                    sub.fetch_timed_out();
                }
            }
        }
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
            self.secrets
                .check(&cfg)
                .map_err(|e| format!("static_resources.clusters: {e}"))?;
            if matches!(cfg.discovery, Discovery::Eds { .. }) {
                return Err(format!(
                    "static_resources.clusters: cluster `{}`: type: EDS clusters cannot be static here",
                    cfg.name
                ));
            }
            let name = cfg.name.clone();
            let entry = self.start_cluster(cfg, None, &st.assignments, None, true);
            // Envoy counts the bootstrap's clusters as added, as it does those from CDS.
            self.stats.cluster_added.inc();
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
            self.stats.listener_added.inc();
            st.listeners.insert(
                cfg.name.clone(),
                ListenerEntry {
                    config: cfg,
                    any: None,
                    from_bootstrap: true,
                    updated: now(),
                    version: String::new(),
                },
            );
        }
        self.sync_rds(&mut st);
        self.publish(&mut st);
        Ok(())
    }

    /// Creates a live cluster and starts its endpoint discovery (for an EDS cluster, a new
    /// subscription: one `update_attempt`, as in Envoy).
    fn start_cluster(
        &self,
        cfg: config::ClusterConfig,
        previous: Option<&Arc<Cluster>>,
        assignments: &BTreeMap<String, (Vec<EndpointConfig>, Any, SystemTime)>,
        any: Option<Any>,
        from_bootstrap: bool,
    ) -> ClusterEntry {
        let eds = matches!(cfg.discovery, Discovery::Eds { .. }).then(|| {
            let stats = EdsStats::new(&self.store, &cfg.name);
            stats.sub.started();
            stats
        });
        let cluster = Cluster::new(cfg, &self.store);
        // A TLS cluster warms once its SDS secrets are in (at once if they already are), or
        // without them after the initial fetch timeout.
        self.secrets.attach(&cluster);
        self.time_out_secrets(&cluster);
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
            version: String::new(),
            eds,
            dns: dns_task,
        }
    }

    /// Arms the SDS initial fetch timeout of a TLS cluster still waiting for its secrets: if
    /// they have not arrived by then, the cluster warms without them (its connections fail
    /// with `upstream_context_secrets_not_ready` until they arrive) and each missing secret's
    /// subscription counts an `init_fetch_timeout`, as in Envoy.
    fn time_out_secrets(&self, cluster: &Arc<Cluster>) {
        let Some(tls) = cluster.tls.as_ref().filter(|t| !t.is_ready()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tls = Arc::downgrade(tls);
        let manager = self.this.clone();
        let name = cluster.config.name.clone();
        let timeout = Duration::from_millis(self.sds_fetch_timeout_ms.load(Ordering::Relaxed));
        runtime.spawn(async move {
            tokio::time::sleep(timeout).await;
            let (Some(tls), Some(manager)) = (tls.upgrade(), manager.upgrade()) else {
                return;
            };
            if tls.is_ready() {
                return;
            }
            tls.give_up_waiting();
            let missing: Vec<String> = tls
                .config
                .sds_names()
                .filter(|n| manager.secrets.get(n).is_none())
                .map(str::to_string)
                .collect();
            tracing::warn!(
                cluster = %name,
                secrets = ?missing,
                "SDS secrets did not arrive within the initial fetch timeout; the cluster is \
                 used without them (its connections fail until they arrive)"
            );
            if let Ok(mut st) = manager.lock() {
                for n in &missing {
                    if let Some(sds) = st.sds.get(n) {
                        sds.sub.fetch_timed_out();
                    }
                }
                manager.publish(&mut st);
            }
        });
    }

    /// Starts the SDS subscription statistics of secrets the clusters reference for the first
    /// time (one `update_attempt` each, as Envoy's subscription start).
    fn sync_sds(&self, st: &mut State) {
        let names: BTreeSet<String> = st
            .clusters
            .values()
            .filter_map(|e| e.cluster.config.tls.as_ref())
            .flat_map(|t| t.sds_names().map(str::to_string))
            .collect();
        for name in names {
            if let std::collections::btree_map::Entry::Vacant(slot) = st.sds.entry(name) {
                let stats = SdsStats::new(&self.store, slot.key());
                stats.sub.started();
                slot.insert(stats);
            }
        }
    }

    /// Publishes again (after a cluster warmed asynchronously).
    pub fn republish(&self) {
        if let Ok(mut st) = self.lock() {
            self.publish(&mut st);
        }
    }

    fn publish(&self, st: &mut State) {
        self.sync_sds(st);
        let clusters = st
            .clusters
            .iter()
            .filter(|(_, e)| e.cluster.is_warm())
            .map(|(n, e)| (n.clone(), e.cluster.clone()))
            .collect();
        let routes = st
            .routes
            .iter()
            .map(|(n, e)| (n.clone(), e.table.clone()))
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

    /// Keeps one RDS subscription per route configuration the listeners reference: a new one
    /// counts its start (`update_attempt`) under the `stat_prefix` of the first listener that
    /// references it, as Envoy shares one subscription between connection managers.
    fn sync_rds(&self, st: &mut State) {
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for e in st.listeners.values() {
            if let RouteSource::Rds(r) = &e.config.routes {
                wanted
                    .entry(r.clone())
                    .or_insert_with(|| e.config.stat_prefix.clone());
            }
        }
        st.rds.retain(|name, _| wanted.contains_key(name));
        for (name, stat_prefix) in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = st.rds.entry(name) {
                let stats = RdsStats::new(&self.store, &stat_prefix, slot.key());
                stats.sub.started();
                slot.insert(stats);
            }
        }
    }

    fn apply_clusters(
        &self,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String> {
        let mut parsed = Vec::new();
        let mut st = self.lock()?;
        for (name, any, cfg) in convert_each(resources, "cluster", config::cluster)? {
            // A new or changed TLS context must build (inline material, secret kinds).
            if !st
                .clusters
                .get(name)
                .is_some_and(|e| e.cluster.config == cfg)
            {
                self.secrets.check(&cfg)?;
            }
            if st.clusters.get(name).is_some_and(|e| e.from_bootstrap) {
                return Err(format!(
                    "cluster `{name}`: name: a static cluster from the bootstrap has this name"
                ));
            }
            parsed.push((name.clone(), cfg, any.clone()));
        }
        let mut next = take_static(&mut st.clusters, |e| e.from_bootstrap);
        // Envoy's CDS: a cluster whose resource changed in any way is added or updated (and
        // takes the version of this update); an identical one is skipped.
        let mut added_or_updated = 0;
        for (name, cfg, any) in parsed {
            let version = update.version_of(&name).to_string();
            match st.clusters.remove(&name) {
                Some(old) if old.any.as_ref() == Some(&any) => {
                    next.insert(name, old);
                }
                Some(mut old) if old.cluster.config == cfg => {
                    // Nothing legate-proxy uses changed: keep the cluster (and its pools).
                    self.stats.cluster_modified.inc();
                    added_or_updated += 1;
                    old.any = Some(any);
                    old.updated = now();
                    old.version = version;
                    next.insert(name, old);
                }
                Some(old) => {
                    self.stats.cluster_modified.inc();
                    added_or_updated += 1;
                    let mut entry = self.start_cluster(
                        cfg,
                        Some(&old.cluster),
                        &st.assignments,
                        Some(any),
                        false,
                    );
                    entry.version = version;
                    next.insert(name, entry);
                }
                None => {
                    self.stats.cluster_added.inc();
                    added_or_updated += 1;
                    let mut entry =
                        self.start_cluster(cfg, None, &st.assignments, Some(any), false);
                    entry.version = version;
                    next.insert(name, entry);
                }
            }
        }
        let removed = st.clusters.len();
        for _ in 0..removed {
            self.stats.cluster_removed.inc();
        }
        if added_or_updated > 0 || removed > 0 {
            st.cds_version = update.version_info.to_string();
        }
        if added_or_updated > 0
            && let Some(reload) = self.xds.get().and_then(|x| x.cds_config_reload.as_ref())
        {
            reload.inc();
        }
        st.clusters = next;
        st.cds_applied = true;
        self.publish(&mut st);
        Ok(())
    }

    /// Applies the load assignments, and counts the EDS subscription statistics of every
    /// cluster whose assignment the response carried (as Envoy delivers an EDS response only to
    /// the clusters it names).
    fn apply_endpoints(
        &self,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let mut parsed = BTreeMap::new();
        for (name, any, eps) in convert_each(
            resources,
            "cluster load assignment",
            config::load_assignment,
        )? {
            parsed.insert(name.clone(), (eps, any.clone(), now()));
        }
        let mut st = self.lock()?;
        for entry in st.clusters.values() {
            let Discovery::Eds { service_name } = &entry.cluster.config.discovery else {
                continue;
            };
            let touched = update.received.contains(service_name);
            match (parsed.get(service_name), &entry.eds) {
                (Some((eps, _, _)), eds) => {
                    let (current, _) = endpoints_of(&entry.cluster);
                    if !entry.cluster.is_warm() || &current != eps {
                        // `set_endpoints` counts `update_success`.
                        entry.cluster.set_endpoints(eps, &[]);
                        if let Some(eds) = eds.as_ref().filter(|_| touched) {
                            eds.sub.attempt.inc();
                            eds.sub.took(t0.elapsed());
                        }
                    } else if let Some(eds) = eds.as_ref().filter(|_| touched) {
                        eds.sub.accepted(t0.elapsed());
                        eds.no_rebuild.inc();
                    }
                }
                // Removed (delta): Envoy keeps the hosts and counts an empty update.
                (None, Some(eds)) if touched => {
                    eds.sub.accepted(t0.elapsed());
                    eds.empty.inc();
                }
                (None, _) => {}
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

    fn apply_listeners(
        &self,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String> {
        let parsed: Vec<(ListenerConfig, Any)> =
            convert_each(resources, "listener", config::listener)?
                .into_iter()
                .map(|(_, any, cfg)| (cfg, any.clone()))
                .collect();
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
        let mut next = take_static(&mut st.listeners, |e| e.from_bootstrap);
        let mut any_applied = false;
        for (cfg, any) in parsed {
            let name = cfg.name.clone();
            let (updated, version) = match st.listeners.remove(&name) {
                Some(old) if old.any.as_ref() == Some(&any) => (old.updated, old.version),
                Some(_) => {
                    self.stats.listener_modified.inc();
                    any_applied = true;
                    (now(), update.version_of(&name).to_string())
                }
                None => {
                    self.stats.listener_added.inc();
                    any_applied = true;
                    (now(), update.version_of(&name).to_string())
                }
            };
            next.insert(
                name,
                ListenerEntry {
                    config: cfg,
                    any: Some(any),
                    from_bootstrap: false,
                    updated,
                    version,
                },
            );
        }
        for _ in st.listeners.values() {
            self.stats.listener_removed.inc();
            any_applied = true;
        }
        if any_applied {
            st.lds_version = update.version_info.to_string();
        }
        st.listeners = next;
        st.lds_applied = true;
        self.sync_rds(&mut st);
        self.publish(&mut st);
        Ok(())
    }

    /// Applies the route configurations, and counts the RDS subscription statistics of every
    /// route configuration the response carried (`config_reload` when it changed).
    fn apply_routes(
        &self,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let mut parsed = BTreeMap::new();
        for (name, any, table) in
            convert_each(resources, "route configuration", config::route_table)?
        {
            parsed.insert(name.clone(), (table, any.clone()));
        }
        let mut st = self.lock()?;
        let mut next = BTreeMap::new();
        let mut changed = BTreeSet::new();
        for (name, (table, any)) in parsed {
            let entry = match st.routes.remove(&name) {
                Some(old) if old.any == any => old,
                _ => {
                    changed.insert(name.clone());
                    RouteEntry {
                        table: Arc::new(table),
                        any,
                        updated: now(),
                        version: update.version_of(&name).to_string(),
                    }
                }
            };
            next.insert(name, entry);
        }
        st.routes = next;
        for (name, rds) in &st.rds {
            if update.received.contains(name) {
                rds.sub.accepted(t0.elapsed());
                if changed.contains(name) {
                    rds.config_reload.inc();
                }
            }
        }
        self.publish(&mut st);
        Ok(())
    }

    /// SDS: validates the complete set of secrets and installs new TLS client configurations
    /// in the clusters whose secrets changed (see `tls::SecretStore`); a cluster waiting for
    /// its secrets warms. A bad secret rejects the update and changes nothing.
    fn apply_secrets(
        &self,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let mut st = self.lock()?;
        let clusters: Vec<Arc<Cluster>> = st.clusters.values().map(|e| e.cluster.clone()).collect();
        self.secrets.apply(resources, &clusters, &|name| {
            update.version_of(name).to_string()
        })?;
        // Envoy hands a response to the subscriptions of the secrets it carried.
        for (name, sds) in &st.sds {
            if update.received.contains(name) {
                sds.sub.accepted(t0.elapsed());
            }
        }
        self.publish(&mut st);
        Ok(())
    }

    /// Counts a response to the subscriptions it concerns: CDS and LDS count every response;
    /// EDS and RDS subscriptions count their successes in `apply_*` and, as Envoy does, a
    /// rejection on every subscription of the type.
    fn count_response(&self, type_url: &str, accepted: bool, took: Duration) {
        let Ok(mut st) = self.lock() else { return };
        let xds = self.xds.get();
        let sub = match type_url {
            type_url::CLUSTER => {
                st.cds_responded = true;
                xds.and_then(|x| x.cds.as_ref())
            }
            type_url::LISTENER => {
                st.lds_responded = true;
                xds.and_then(|x| x.lds.as_ref())
            }
            _ if accepted => None,
            type_url::ENDPOINT => {
                for eds in st.clusters.values().filter_map(|e| e.eds.as_ref()) {
                    eds.sub.rejected();
                }
                None
            }
            type_url::ROUTE => {
                for rds in st.rds.values() {
                    rds.sub.rejected();
                }
                None
            }
            type_url::SECRET => {
                for sds in st.sds.values() {
                    sds.sub.rejected();
                }
                None
            }
            _ => None,
        };
        match sub {
            Some(sub) if accepted => sub.accepted(took),
            Some(sub) => sub.rejected(),
            None => {}
        }
    }

    /// The listeners accepting connections (not those still warming), by name, for
    /// `/listeners`.
    pub fn active_listeners(&self) -> Vec<(String, std::net::SocketAddr)> {
        let mut active: Vec<_> = self
            .listeners
            .list()
            .into_iter()
            .filter(|(_, _, active)| *active)
            .map(|(name, address, _)| (name, address))
            .collect();
        active.sort();
        active
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

    /// What Envoy's `/config_dump` shows of the configuration in force: when each static
    /// resource was installed, the dynamic clusters, endpoints, listeners and routes with the
    /// version and time of their last change, and the version of the last CDS and LDS updates
    /// that changed something.
    pub fn dump(&self) -> ConfigDumpParts {
        let Ok(st) = self.lock() else {
            return ConfigDumpParts::default();
        };
        let mut parts = ConfigDumpParts {
            clusters_version: st.cds_version.clone(),
            listeners_version: st.lds_version.clone(),
            ..ConfigDumpParts::default()
        };
        for (name, e) in &st.clusters {
            match &e.any {
                Some(any) => parts.dynamic_clusters.push(DumpEntry {
                    name: name.clone(),
                    any: any.clone(),
                    updated: e.updated,
                    version: e.version.clone(),
                    warming: !e.cluster.is_warm(),
                }),
                None => {
                    parts.static_clusters.insert(name.clone(), e.updated);
                }
            }
        }
        for (name, (_, any, updated)) in &st.assignments {
            parts.endpoints.push(DumpEntry {
                name: name.clone(),
                any: any.clone(),
                updated: *updated,
                version: String::new(),
                warming: false,
            });
        }
        for (name, e) in &st.listeners {
            let Some(any) = &e.any else {
                parts.static_listeners.insert(name.clone(), e.updated);
                continue;
            };
            let warming = match &e.config.routes {
                RouteSource::Rds(r) => !st.routes.contains_key(r),
                RouteSource::Inline(_) => false,
            };
            parts.dynamic_listeners.push(DumpEntry {
                name: name.clone(),
                any: any.clone(),
                updated: e.updated,
                version: e.version.clone(),
                warming,
            });
        }
        for (name, e) in self.secrets.entries() {
            parts.secrets.push(DumpEntry {
                name,
                any: e.any,
                updated: e.updated,
                version: e.version,
                warming: false,
            });
        }
        for (name, e) in &st.routes {
            parts.routes.push(DumpEntry {
                name: name.clone(),
                any: e.any.clone(),
                updated: e.updated,
                version: e.version.clone(),
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
    /// The version of the update that last changed it: the response's `version_info` (SotW)
    /// or the resource's own version (delta). Empty for endpoints, which Envoy dumps without.
    pub version: String,
    /// Still warming.
    pub warming: bool,
}

/// What the manager contributes to `/config_dump`.
#[derive(Clone, Debug, Default)]
pub struct ConfigDumpParts {
    /// When each static cluster (by name) was installed; their config is in the bootstrap.
    pub static_clusters: BTreeMap<String, SystemTime>,
    /// When each static listener (by name) was installed.
    pub static_listeners: BTreeMap<String, SystemTime>,
    /// The version of the last CDS update that added, changed or removed a cluster.
    pub clusters_version: String,
    /// The version of the last LDS update that added, changed or removed a listener.
    pub listeners_version: String,
    /// Clusters from CDS.
    pub dynamic_clusters: Vec<DumpEntry>,
    /// Load assignments from EDS.
    pub endpoints: Vec<DumpEntry>,
    /// Listeners from LDS.
    pub dynamic_listeners: Vec<DumpEntry>,
    /// Route configurations from RDS.
    pub routes: Vec<DumpEntry>,
    /// Secrets from SDS (private keys are redacted by the admin when rendered).
    pub secrets: Vec<DumpEntry>,
}

/// Unpacks every resource of one type and converts it with `convert`; the first failure
/// rejects the whole set. An unpack error names the resource (`<kind> `name`: ...`); a
/// conversion error already names it and the field.
fn convert_each<'a, P, T, E>(
    resources: &'a BTreeMap<String, Any>,
    kind: &str,
    convert: impl Fn(&P) -> Result<T, E>,
) -> Result<Vec<(&'a String, &'a Any, T)>, String>
where
    P: prost::Message + prost::Name + Default,
    E: std::fmt::Display,
{
    resources
        .iter()
        .map(|(name, any)| {
            let proto: P =
                legate_proto::any::unpack(any).map_err(|e| format!("{kind} `{name}`: {e}"))?;
            let converted = convert(&proto).map_err(|e| e.to_string())?;
            Ok((name, any, converted))
        })
        .collect()
}

/// Moves the entries that came from the bootstrap out of `entries` (an xDS update never
/// replaces or removes them); what is left is the previous xDS-delivered set.
fn take_static<V>(
    entries: &mut BTreeMap<String, V>,
    from_bootstrap: impl Fn(&V) -> bool,
) -> BTreeMap<String, V> {
    let (statics, dynamic) = std::mem::take(entries)
        .into_iter()
        .partition(|(_, e)| from_bootstrap(e));
    *entries = dynamic;
    statics
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

impl ConfigSink for Manager {
    fn apply(
        &self,
        type_url: &str,
        resources: &BTreeMap<String, Any>,
        update: &Update<'_>,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let result = match type_url {
            type_url::CLUSTER => self.apply_clusters(resources, update),
            type_url::ENDPOINT => self.apply_endpoints(resources, update),
            type_url::LISTENER => self.apply_listeners(resources, update),
            type_url::ROUTE => self.apply_routes(resources, update),
            type_url::SECRET => self.apply_secrets(resources, update),
            other => return Err(format!("resources of type {other} are not supported")),
        };
        self.count_response(type_url, result.is_ok(), t0.elapsed());
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
            type_url::SECRET => st
                .clusters
                .values()
                .filter_map(|e| e.cluster.config.tls.as_ref())
                .flat_map(|t| t.sds_names().map(str::to_string))
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    fn connected(&self, up: bool) {
        if let Some(x) = self.xds.get() {
            x.connected_state.set(u64::from(up));
            x.ads.connected(up);
        }
    }

    /// Envoy reports a lost or failed ADS stream to every subscription (`update_failure`).
    fn connection_failed(&self) {
        let Some(x) = self.xds.get() else { return };
        for sub in [&x.cds, &x.lds].into_iter().flatten() {
            sub.connection_failed();
        }
        if let Ok(st) = self.lock() {
            for eds in st.clusters.values().filter_map(|e| e.eds.as_ref()) {
                eds.sub.connection_failed();
            }
            for rds in st.rds.values() {
                rds.sub.connection_failed();
            }
            for sds in st.sds.values() {
                sds.sub.connection_failed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_proto::any::pack;
    use legate_proto::json::from_json;
    use legate_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use legate_proto::type_url::{CLUSTER, ENDPOINT};
    use serde_json::json;

    fn manager() -> (Arc<Manager>, Store) {
        let store = Store::new();
        let runtime = Arc::new(ArcSwap::from_pointee(Runtime::default()));
        let listeners = Arc::new(ListenerManager::new(store.clone(), runtime.clone()));
        let init = InitPolicy {
            wait_cds: true,
            wait_lds: false,
        };
        let m = Manager::new(store.clone(), runtime, listeners, init);
        (m, store)
    }

    fn static_cluster(name: &str) -> ClusterProto {
        from_json(&json!({
            "name": name, "type": "STATIC",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18000}}}}
            ]}]}
        }))
        .expect("a Cluster")
    }

    fn eds_cluster(name: &str, connect_timeout: &str) -> Any {
        let c: ClusterProto = from_json(&json!({
            "name": name, "type": "EDS", "connect_timeout": connect_timeout,
            "eds_cluster_config": {"eds_config": {"ads": {}}}
        }))
        .expect("a Cluster");
        pack(&c)
    }

    fn cla(name: &str, port: u16) -> Any {
        let c: ClusterLoadAssignment = from_json(&json!({
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
            ]}]
        }))
        .expect("a ClusterLoadAssignment");
        pack(&c)
    }

    fn apply(
        m: &Manager,
        t: &str,
        resources: &[(&str, Any)],
        version: &str,
        resource_versions: Option<&BTreeMap<String, String>>,
    ) -> Result<(), String> {
        let resources: BTreeMap<String, Any> = resources
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect();
        let received: BTreeSet<String> = resources.keys().cloned().collect();
        let update = Update {
            version_info: version,
            resource_versions,
            received: &received,
        };
        m.apply(t, &resources, &update)
    }

    fn counter(store: &Store, name: &str) -> u64 {
        store.counter(name).value()
    }

    /// Envoy's counts for the same sequence (bootstrap with one static cluster, ADS with CDS,
    /// one EDS cluster), as in Envoy 1.40's `/stats` and `/config_dump`.
    #[tokio::test]
    async fn xds_statistics_and_versions_follow_envoy() {
        let (m, store) = manager();
        m.install_static(&[static_cluster("xds")], &[])
            .expect("static");
        m.xds_started("xds", true, false);
        assert_eq!(counter(&store, "cluster_manager.cds.update_attempt"), 1);
        assert_eq!(counter(&store, "cluster_manager.cluster_added"), 1);
        assert!(
            store
                .render_text(None, false)
                .contains("control_plane.pending_requests: 0")
        );
        assert!(
            !store
                .render_text(None, false)
                .contains("listener_manager.lds.")
        );

        m.connected(true);
        apply(
            &m,
            CLUSTER,
            &[("payments", eds_cluster("payments", "1s"))],
            "v1",
            None,
        )
        .expect("CDS");
        assert_eq!(counter(&store, "cluster_manager.cds.update_attempt"), 2);
        assert_eq!(counter(&store, "cluster_manager.cds.update_success"), 1);
        assert_eq!(counter(&store, "cluster_manager.cds.config_reload"), 1);
        assert_eq!(counter(&store, "cluster_manager.cluster_added"), 2);
        // The cluster's EDS subscription started.
        assert_eq!(counter(&store, "cluster.payments.update_attempt"), 1);

        apply(
            &m,
            ENDPOINT,
            &[("payments", cla("payments", 9001))],
            "e1",
            None,
        )
        .expect("EDS");
        assert_eq!(counter(&store, "cluster.payments.update_attempt"), 2);
        assert_eq!(counter(&store, "cluster.payments.update_success"), 1);
        assert_eq!(counter(&store, "cluster.payments.update_no_rebuild"), 0);
        assert!(m.is_live());
        // The same assignment again: a success without rebuild.
        apply(
            &m,
            ENDPOINT,
            &[("payments", cla("payments", 9001))],
            "e2",
            None,
        )
        .expect("EDS");
        assert_eq!(counter(&store, "cluster.payments.update_attempt"), 3);
        assert_eq!(counter(&store, "cluster.payments.update_success"), 2);
        assert_eq!(counter(&store, "cluster.payments.update_no_rebuild"), 1);

        // An identical CDS update changes nothing: same versions in the dump.
        apply(
            &m,
            CLUSTER,
            &[("payments", eds_cluster("payments", "1s"))],
            "v2",
            None,
        )
        .expect("CDS");
        assert_eq!(counter(&store, "cluster_manager.cds.config_reload"), 1);
        let dump = m.dump();
        assert_eq!(dump.clusters_version, "v1");
        assert_eq!(dump.dynamic_clusters[0].version, "v1");
        assert!(dump.static_clusters.contains_key("xds"));
        assert_eq!(dump.endpoints[0].version, "");

        // Delta: the resource's own version.
        let versions = BTreeMap::from([("payments".to_string(), "r7".to_string())]);
        apply(
            &m,
            CLUSTER,
            &[("payments", eds_cluster("payments", "2s"))],
            "v3",
            Some(&versions),
        )
        .expect("CDS");
        assert_eq!(counter(&store, "cluster_manager.cluster_modified"), 1);
        assert_eq!(counter(&store, "cluster_manager.cds.config_reload"), 2);
        let dump = m.dump();
        assert_eq!(dump.clusters_version, "v3");
        assert_eq!(dump.dynamic_clusters[0].version, "r7");
        // The new cluster's subscription started again.
        assert_eq!(counter(&store, "cluster.payments.update_attempt"), 4);

        // A rejection counts on the subscription (all EDS clusters for EDS).
        let bad = pack(&ClusterLoadAssignment::default());
        apply(&m, CLUSTER, &[("payments", bad.clone())], "v4", None).expect_err("not a cluster");
        assert_eq!(counter(&store, "cluster_manager.cds.update_rejected"), 1);
        assert_eq!(counter(&store, "cluster_manager.cds.update_attempt"), 5);
        apply(
            &m,
            ENDPOINT,
            &[("payments", eds_cluster("x", "1s"))],
            "e3",
            None,
        )
        .expect_err("not an assignment");
        assert_eq!(counter(&store, "cluster.payments.update_rejected"), 1);
        assert_eq!(counter(&store, "cluster.payments.update_attempt"), 5);

        // The ADS stream is charged to the xDS cluster; losing it is a failure everywhere.
        assert_eq!(store.gauge("cluster.xds.upstream_cx_active").value(), 1);
        assert_eq!(counter(&store, "cluster.xds.upstream_rq_total"), 1);
        assert_eq!(store.gauge("control_plane.connected_state").value(), 1);
        m.connected(false);
        m.connection_failed();
        assert_eq!(store.gauge("cluster.xds.upstream_cx_active").value(), 0);
        assert_eq!(store.gauge("cluster.xds.upstream_rq_active").value(), 0);
        assert_eq!(counter(&store, "cluster_manager.cds.update_failure"), 1);
        assert_eq!(counter(&store, "cluster.payments.update_failure"), 1);
        assert_eq!(counter(&store, "cluster_manager.cds.update_attempt"), 6);
    }

    /// An EDS cluster with TLS whose client certificate is the SDS secret `<name>/cert`.
    fn sds_cluster(name: &str) -> Any {
        let c: ClusterProto = from_json(&json!({
            "name": name, "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [
                    {"name": format!("{name}/cert"), "sds_config": {"ads": {}}}
                ]}}}
        }))
        .expect("a Cluster");
        pack(&c)
    }

    /// Envoy's `sds.<secret>.*` subscription stats: the start, every response carrying the
    /// secret, and rejections; and the SDS initial fetch timeout: a cluster whose secret never
    /// arrives warms without it (and the proxy goes LIVE), counting `init_fetch_timeout`.
    #[tokio::test]
    async fn sds_subscriptions_and_initial_fetch_timeout() {
        use legate_proto::type_url::SECRET;
        let (m, store) = manager();
        m.set_sds_initial_fetch_timeout(Duration::from_millis(300));
        m.xds_started("xds", true, false);
        apply(
            &m,
            CLUSTER,
            &[("a", sds_cluster("a")), ("b", sds_cluster("b"))],
            "v1",
            None,
        )
        .expect("CDS");
        apply(
            &m,
            ENDPOINT,
            &[("a", cla("a", 9001)), ("b", cla("b", 9002))],
            "e1",
            None,
        )
        .expect("EDS");
        assert_eq!(counter(&store, "sds.a/cert.update_attempt"), 1);
        assert_eq!(counter(&store, "sds.b/cert.update_attempt"), 1);
        assert!(
            !m.is_live(),
            "both clusters warm until their secrets arrive"
        );

        let ca = crate::tls::tests::Ca::new("dev");
        let leaf = ca.leaf(vec![crate::tls::tests::dns("a")], 1);
        apply(
            &m,
            SECRET,
            &[("a/cert", crate::tls::tests::cert_secret("a/cert", &leaf))],
            "s1",
            None,
        )
        .expect("SDS");
        assert_eq!(counter(&store, "sds.a/cert.update_success"), 1);
        assert_eq!(counter(&store, "sds.a/cert.update_attempt"), 2);
        assert_eq!(counter(&store, "sds.b/cert.update_success"), 0);
        let expiry = crate::tls::not_after(&leaf.der).expect("notAfter");
        assert_eq!(
            store
                .gauge("cluster.a.ssl.certificate.a/cert.expiration_unix_time_seconds")
                .value(),
            expiry
        );
        assert!(!m.is_live(), "b still waits");

        // A bad secret is rejected: every SDS subscription counts it.
        let bad = {
            let mut other = ca.leaf(vec![crate::tls::tests::dns("b")], 2);
            other.key_pem = ca.leaf(vec![], 3).key_pem;
            crate::tls::tests::cert_secret("b/cert", &other)
        };
        let err = apply(&m, SECRET, &[("b/cert", bad)], "s2", None).expect_err("mismatched key");
        assert!(err.contains("b/cert"), "{err}");
        assert_eq!(counter(&store, "sds.a/cert.update_rejected"), 1);
        assert_eq!(counter(&store, "sds.b/cert.update_rejected"), 1);

        // b's secret never arrives: after the fetch timeout b warms without it.
        let started = Instant::now();
        while !m.is_live() {
            assert!(started.elapsed() < Duration::from_secs(10), "never LIVE");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(counter(&store, "sds.b/cert.init_fetch_timeout"), 1);
        assert_eq!(counter(&store, "sds.a/cert.init_fetch_timeout"), 0);
        assert_eq!(store.gauge("cluster_manager.warming_clusters").value(), 0);
        let b = m
            .clusters()
            .into_iter()
            .find(|(c, _)| c.config.name == "b")
            .expect("cluster b")
            .0;
        assert!(b.is_warm());
        let tls = b.tls.as_ref().expect("TLS");
        assert!(!tls.is_configured());
        // Its connections fail as Envoy's: secrets not ready.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        assert!(matches!(
            tls.handshake(tcp).await,
            Err(crate::tls::HandshakeError::NotReady)
        ));
        assert_eq!(
            counter(
                &store,
                "cluster.b.client_ssl_socket_factory.upstream_context_secrets_not_ready"
            ),
            1
        );
    }
}
