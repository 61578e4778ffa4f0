//! The gateway's shared state: the registry behind its lock, the cached peer list, and the one
//! place where changes are announced.
//!
//! [`Gateway`] is the small interface the HTTP layer talks to. It never holds the registry lock
//! across serialisation or I/O: a new version's list is made from the previous one and the
//! changes after it (the store's delta, taken under the lock in O(changes)), or rebuilt from a
//! snapshot (a reference count per node) at most once every `LIST_MAX_AGE` for the heartbeats'
//! `last_seen`; then shared by every request until the registry changes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::api::{NodeId, Registration, Settings, Stats};
use crate::lock;
use crate::server::auth::Auth;
use crate::server::config::{ServerConfig, StoreKind};
use crate::server::metrics::{Gauges, Metrics};
use crate::server::registry::{NodeRecord, Now, Registered, Registry};
use crate::server::store::log::OpenError;
use crate::server::store::{
    Delta, Durability, EtcdStore, LocalStore, Pending, Settled, Store, StoreError,
};

pub use crate::server::node_list::{Filter, LIST_MAX_AGE, NodeList, Part};

/// The registry and everything derived from it, shared by all request handlers.
#[derive(Debug)]
pub struct Gateway {
    store: Box<dyn Store>,
    lists: Mutex<Option<Arc<NodeList>>>,
    epoch: String,
    started: Instant,
    heartbeat_interval: Duration,
    /// The liveness settings advertised in `/register` and `/health`: read once, at start, not
    /// from the store on every answer.
    settings: Settings,
    /// The most nodes seen since memory was last given back, and until when sweeps give memory
    /// back again (see [`Gateway::sweep`]).
    trim: Mutex<Trim>,
    metrics: Arc<Metrics>,
    /// Called with the new registry version after every change (the server's watchers).
    wake: Arc<OnceLock<Wake>>,
    /// Who may do what: see `auth.rs`.
    auth: Auth,
    /// The most changes a delta answer carries; past it the answer is the full list.
    delta_limit: AtomicUsize,
}

/// The most changes a delta answer (`GET /nodes?index=V&changes=1`) carries: a watcher further
/// behind than this gets the full list, which then costs about as much as the events would.
pub const DELTA_MAX_CHANGES: usize = 4096;

/// What [`Gateway::on_change`] installs.
struct Wake(Box<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

impl Gateway {
    /// A gateway around an in-memory `registry`; `heartbeat_interval` is reported in `/stats`.
    pub fn new(registry: Registry, heartbeat_interval: Duration) -> Gateway {
        Gateway::local(LocalStore::from(registry), heartbeat_interval)
    }

    /// A gateway over any store, not told of its changes: long-polls are answered when their
    /// wait ends, and suspicions and reaps are not counted. [`Gateway::new`] and
    /// [`Gateway::open`] wire a [`LocalStore`]'s hook (and an [`EtcdStore`]'s, which wakes
    /// long-polls but counts no suspicions) to the gateway.
    pub fn with_store(store: Box<dyn Store>, heartbeat_interval: Duration) -> Gateway {
        let liveness = store.liveness();
        let settings = Settings {
            heartbeat_interval: Some(heartbeat_interval.as_secs_f64()),
            suspect_after: Some(liveness.suspect_after.as_secs_f64()),
            node_timeout: Some(liveness.node_timeout.as_secs_f64()),
        };
        Gateway {
            store,
            settings,
            lists: Mutex::new(None),
            epoch: new_epoch(),
            started: Instant::now(),
            heartbeat_interval,
            trim: Mutex::new(Trim::default()),
            metrics: Arc::new(Metrics::new()),
            wake: Arc::new(OnceLock::new()),
            auth: Auth::default(),
            delta_limit: AtomicUsize::new(DELTA_MAX_CHANGES),
        }
    }

    /// A gateway over `store`, told of every change it makes.
    pub(crate) fn local(store: LocalStore, heartbeat_interval: Duration) -> Gateway {
        let metrics = Arc::new(Metrics::new());
        let wake: Arc<OnceLock<Wake>> = Arc::new(OnceLock::new());
        let hook = {
            let (metrics, wake) = (Arc::clone(&metrics), Arc::clone(&wake));
            Box::new(
                move |version: u64, events: &[crate::server::registry::Event]| {
                    metrics.events(events);
                    if let Some(Wake(wake)) = wake.get() {
                        wake(version);
                    }
                },
            )
        };
        Gateway {
            metrics,
            wake,
            ..Gateway::with_store(Box::new(store.on_change(hook)), heartbeat_interval)
        }
    }

    /// Calls `wake` with the new registry version after every change, outside the registry
    /// lock (once: a second call is ignored).
    pub fn on_change(&self, wake: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.wake.set(Wake(Box::new(wake)));
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let summary = self.store.summary();
        let durability = self.store.durability();
        let gauges = Gauges {
            active: summary.counts.active_nodes,
            suspected: summary.counts.suspected_nodes,
            version: summary.version,
            leader: summary.leader.is_some(),
            budget: summary.budget,
            store: durability.data_dir.as_ref().map(|_| {
                (
                    durability.syncs,
                    durability.log_bytes,
                    durability.snapshot_bytes,
                    durability.failed.is_some(),
                )
            }),
            writable: durability.failed.is_none(),
        };
        self.metrics.render(&gauges)
    }

    /// The registry version now (cheap; it may not be on disk yet).
    pub fn version(&self) -> u64 {
        self.store.versions().0
    }

    /// The gateway `config` asks for: in memory, kept in `config.data_dir`, or in etcd.
    pub fn open(config: &ServerConfig) -> Result<Gateway, OpenError> {
        let (liveness, max_nodes) = (config.liveness, config.max_nodes);
        let local = match (&config.store, &config.data_dir) {
            (StoreKind::Etcd, _) => {
                // The watch thread tells of changes other gateways made: long-polls wake.
                let wake: Arc<OnceLock<Wake>> = Arc::new(OnceLock::new());
                let hook = {
                    let wake = Arc::clone(&wake);
                    Box::new(move |version: u64| {
                        if let Some(Wake(wake)) = wake.get() {
                            wake(version);
                        }
                    })
                };
                let store = EtcdStore::open(
                    config.etcd_endpoints.clone(),
                    crate::server::store::etcd::PREFIX,
                    liveness,
                    max_nodes,
                )
                .on_change(hook);
                return Ok(Gateway {
                    wake,
                    ..Gateway::with_store(Box::new(store), config.heartbeat_interval)
                });
            }
            (StoreKind::Memory, None) => LocalStore::memory(liveness, max_nodes),
            (StoreKind::Memory, Some(dir)) => {
                LocalStore::open(dir, liveness, max_nodes, Now::system())?
            }
        }
        .with_max_bytes(config.max_registry_bytes);
        Ok(Gateway::local(local, config.heartbeat_interval))
    }

    /// The tokens requests are checked against (none: open).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Id of this gateway run: it changes on every start.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The liveness settings advertised to nodes (fixed at start).
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Registers or updates a node.
    pub fn register(&self, reg: Registration) -> Result<Registered, StoreError> {
        let node_id = reg.node_id;
        let registered = self.store.register(reg, Now::system())?;
        counted(&self.metrics, node_id, &registered);
        Ok(registered)
    }

    /// Registers or updates a node, and the list that shows it: the answer to `/register`.
    /// With a data directory, one wait for the disk covers the change and the list.
    pub fn register_with_list(
        &self,
        reg: Registration,
    ) -> Result<(Registered, Arc<NodeList>), StoreError> {
        let (registered, list, unsettled) = self.register_unsettled(reg)?;
        self.settle_answer(unsettled)?;
        Ok((registered, list))
    }

    /// [`Gateway::register_with_list`] without the wait for the disk: the answer may be sent
    /// only once the [`Unsettled`] (if any) is settled ([`Gateway::when_settled`]), and must
    /// then be replaced by the error it gives, if it gives one.
    pub fn register_unsettled(
        &self,
        reg: Registration,
    ) -> Result<(Registered, Arc<NodeList>, Option<Unsettled>), StoreError> {
        let node_id = reg.node_id;
        let (registered, pending) = self.store.register_pending(reg, Now::system())?;
        // The list's version is at or past the change: once it is durable, so is the change.
        let list = self.cached_list();
        let unsettled = self.unsettled(node_id, registered, pending, list.version)?;
        Ok((registered, list, unsettled))
    }

    /// Registers or updates a node, and the registry version and leader after it: the answer to
    /// `/register` with `Prefer: return=minimal`.
    pub fn register_with_leader(
        &self,
        reg: Registration,
    ) -> Result<(Registered, u64, Option<NodeRecord>), StoreError> {
        let (registered, version, leader, unsettled) = self.register_unsettled_leader(reg)?;
        self.settle_answer(unsettled)?;
        Ok((registered, version, leader))
    }

    /// [`Gateway::register_with_leader`] without the wait for the disk (see
    /// [`Gateway::register_unsettled`]).
    pub fn register_unsettled_leader(
        &self,
        reg: Registration,
    ) -> Result<(Registered, u64, Option<NodeRecord>, Option<Unsettled>), StoreError> {
        let node_id = reg.node_id;
        let (registered, pending) = self.store.register_pending(reg, Now::system())?;
        let (version, leader) = self.store.leader_unsettled();
        let unsettled = self.unsettled(node_id, registered, pending, version)?;
        Ok((registered, version, leader, unsettled))
    }

    /// What an answer showing `version` after a registration still waits for: `None` if
    /// nothing (in memory, or on disk already; the registration is counted then).
    fn unsettled(
        &self,
        node_id: NodeId,
        registered: Registered,
        pending: Pending,
        version: u64,
    ) -> Result<Option<Unsettled>, StoreError> {
        if self.store.is_settled(&pending, version) {
            self.store.confirm(pending)?;
            counted(&self.metrics, node_id, &registered);
            return Ok(None);
        }
        Ok(Some(Unsettled {
            pending,
            version,
            registered: (node_id, registered),
        }))
    }

    /// Waits until an answer's write and the version it shows are durable.
    pub fn settle_answer(&self, unsettled: Option<Unsettled>) -> Result<(), StoreError> {
        let Some(Unsettled {
            pending,
            version,
            registered: (node_id, registered),
        }) = unsettled
        else {
            return Ok(());
        };
        self.store.settle(version);
        self.store.confirm(pending)?;
        counted(&self.metrics, node_id, &registered);
        Ok(())
    }

    /// Calls `done` once an answer's write and the version it shows are durable (`Ok`: send
    /// the answer), or once the write never will be (`Err`: send that instead), without
    /// waiting: see [`Store::when_settled`] (`done` must be quick).
    pub fn when_settled(&self, unsettled: Unsettled, done: Settled) {
        let Unsettled {
            pending,
            version,
            registered: (node_id, registered),
        } = unsettled;
        let metrics = Arc::clone(&self.metrics);
        self.store.when_settled(
            pending,
            version,
            Box::new(move |settled| {
                if settled.is_ok() {
                    counted(&metrics, node_id, &registered);
                }
                done(settled);
            }),
        );
    }

    /// Records a heartbeat; `None` if the node is not registered, else the registry version.
    pub fn heartbeat(&self, node_id: NodeId) -> Result<Option<u64>, StoreError> {
        let version = self.store.heartbeat(node_id, Now::system())?;
        self.metrics.heartbeat(version.is_some());
        Ok(version)
    }

    /// Removes a node; false if it was not registered.
    pub fn remove(&self, node_id: NodeId) -> Result<bool, StoreError> {
        self.store.remove(node_id)
    }

    /// Makes a registered node leader; false if it is not registered.
    pub fn set_leader(&self, node_id: NodeId) -> Result<bool, StoreError> {
        self.store.set_leader(node_id)
    }

    /// Suspects and reaps silent nodes, then gives memory back to the system if the registry
    /// shrank a lot since it last did (and on the sweeps of the next [`TRIM_AGAIN_FOR`], for
    /// what is freed late: see [`crate::server::allocator`]).
    pub fn sweep(&self, now: Now) {
        self.store.sweep(now);
        let nodes = self.store.summary().counts.total_nodes;
        let departed = lock(&self.trim).after_sweep(nodes, now.instant);
        match departed {
            Some(peak) => {
                log::debug!("{nodes} nodes left of {peak}: giving freed memory back");
                // The cached list still holds the departed nodes: let it go first (the next
                // reader builds a new one; readers that hold the old one keep it alive until
                // they finish, and a later sweep gives that back).
                lock(&self.lists).take();
                crate::server::allocator::release();
            }
            None if lock(&self.trim).again(now.instant) => crate::server::allocator::release(),
            None => {}
        }
    }

    /// The registry version and the leader's record, without building a list.
    pub fn leader(&self) -> (u64, Option<NodeRecord>) {
        self.store.leader()
    }

    /// Whether reads may be answered (`Err`: a 503 saying why): see [`Store::readable`].
    pub fn readable(&self) -> Result<(), StoreError> {
        self.store.readable()
    }

    /// Where the registry is kept.
    pub fn durability(&self) -> Durability {
        self.store.durability()
    }

    /// The current node list: made anew if the registry changed (from the changes, see
    /// `cached_list`), or if heartbeats moved `last_seen` values and the list is older than
    /// [`LIST_MAX_AGE`].
    pub fn list(&self) -> Arc<NodeList> {
        let list = self.cached_list();
        // Outside the cache lock: readers of a version wait for it together, never in a row.
        self.store.settle(list.version);
        list
    }

    fn cached_list(&self) -> Arc<NodeList> {
        let mut cached = lock(&self.lists);
        let (version, touches) = self.store.versions();
        // Holding the cache lock while building makes concurrent readers wait for this build
        // instead of each building their own; the store's lock is held only for the delta or
        // the snapshot.
        let list = match cached.as_ref() {
            Some(list) => match Next::of(list, version, touches, Instant::now()) {
                Next::Keep => return Arc::clone(list),
                // The journal may not reach back, or hold too many changes: a snapshot then.
                Next::Delta => match self.store.delta(list.version, list.max_changes()) {
                    Some(delta) => list.apply(delta),
                    None => NodeList::build(self.store.snapshot(), Some(list)),
                },
                Next::Snapshot => NodeList::build(self.store.snapshot(), Some(list)),
            },
            None => NodeList::build(self.store.snapshot(), None),
        };
        let list = Arc::new(list);
        *cached = Some(Arc::clone(&list));
        list
    }

    /// What changed after registry version `since`, settled (a durable store: on disk before
    /// anyone sees it): O(changes). `None` when the journal does not reach back to `since` or
    /// more than [`DELTA_MAX_CHANGES`] changes were made since: the full list is the answer.
    pub fn delta(&self, since: u64) -> Option<Delta> {
        let delta = self
            .store
            .delta(since, self.delta_limit.load(Ordering::Relaxed))?;
        self.store.settle(delta.version);
        Some(delta)
    }

    /// Sets the most changes a delta answer carries (a test seam: a tiny limit makes a
    /// watcher "too far behind" after a few changes).
    #[doc(hidden)]
    pub fn set_delta_limit(&self, max_changes: usize) {
        self.delta_limit.store(max_changes, Ordering::Relaxed);
    }

    /// Counters for `/stats`.
    pub fn stats(&self) -> Stats {
        let summary = self.store.summary();
        let counts = summary.counts;
        let durability = self.store.durability();
        Stats {
            total_nodes: counts.total_nodes,
            active_nodes: counts.active_nodes,
            suspected_nodes: counts.suspected_nodes,
            leader_id: summary.leader,
            registry_version: summary.version,
            bootstrap_initiated: summary.bootstrap_initiated,
            bootstrap_armed: summary.bootstrap_armed,
            uptime: self.started.elapsed().as_secs_f64(),
            joins_total: counts.joins_total,
            removed_total: counts.removed_total,
            reaped_total: counts.reaped_total,
            heartbeats_total: counts.heartbeats_total,
            suspect_after: summary.liveness.suspect_after.as_secs_f64(),
            node_timeout: summary.liveness.node_timeout.as_secs_f64(),
            heartbeat_interval: self.heartbeat_interval.as_secs_f64(),
            version: crate::VERSION.to_owned(),
            epoch: self.epoch.clone(),
            durable: durability.data_dir.is_some(),
            data_dir: durability
                .data_dir
                .as_ref()
                .map(|d| d.display().to_string()),
            log_bytes: durability.log_bytes,
            snapshot_bytes: durability.snapshot_bytes,
            last_compaction: durability.last_compaction,
            log_syncs: durability.syncs,
            store_error: durability.failed,
        }
    }
}

/// A write's answer made before the write is on disk: it may be sent only once
/// [`Gateway::settle_answer`] or [`Gateway::when_settled`] says so.
#[derive(Debug)]
#[must_use = "an answer is sent only once what it shows is durable"]
pub struct Unsettled {
    pending: Pending,
    /// The registry version the answer shows.
    version: u64,
    /// Counted once durable.
    registered: (NodeId, Registered),
}

/// Counts a registration acknowledged, and says so when it bootstrapped the cluster.
fn counted(metrics: &Metrics, node_id: NodeId, registered: &Registered) {
    metrics.registered(registered.created, registered.is_bootstrap);
    if registered.is_bootstrap {
        log::info!("node {node_id} bootstrapped the cluster: it was the first, and leads it");
    }
}

/// What a reader does with the cached list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Answer from it: the version is the same, and so are the `last_seen` values or they are
    /// younger than [`LIST_MAX_AGE`].
    Keep,
    /// Make the next list from it and the changes after its version (O(changes)): its
    /// `last_seen` values are young enough to keep.
    Delta,
    /// Compare a whole snapshot with it: its `last_seen` values are older than
    /// [`LIST_MAX_AGE`] (at most once that often under churn), or the version went back.
    Snapshot,
}

impl Next {
    /// The decision for `list` while the registry is at `version` and `touches`; pure.
    fn of(list: &NodeList, version: u64, touches: u64, now: Instant) -> Next {
        let young = now.saturating_duration_since(list.built) < LIST_MAX_AGE;
        if list.version == version && (young || list.touches == Some(touches)) {
            Next::Keep
        } else if young && list.version < version {
            Next::Delta
        } else {
            Next::Snapshot
        }
    }
}

/// A registry that lost at least this many nodes (and half of them) gives memory back.
const TRIM_AFTER_NODES: usize = 1000;

/// How long after a mass departure sweeps keep giving memory back: longer than tiny_http keeps
/// an idle connection thread (5 s), whose cached blocks return to the allocator when it ends.
pub const TRIM_AGAIN_FOR: Duration = Duration::from_secs(15);

/// When the gateway gives memory back: pure, driven by the sweep's clock.
#[derive(Debug, Default)]
struct Trim {
    /// The most nodes seen since memory was last given back.
    peak: usize,
    /// Sweeps before this instant give memory back again.
    again_until: Option<Instant>,
}

impl Trim {
    /// Notes a sweep that found `nodes`; the peak they came down from if that is a mass
    /// departure (memory should be given back now).
    fn after_sweep(&mut self, nodes: usize, now: Instant) -> Option<usize> {
        let peak = self.peak.max(nodes);
        if peak >= nodes + TRIM_AFTER_NODES && nodes <= peak / 2 {
            self.peak = nodes;
            self.again_until = Some(now + TRIM_AGAIN_FOR);
            Some(peak)
        } else {
            self.peak = peak;
            None
        }
    }

    /// Whether a sweep at `now`, after no departure, should give memory back again.
    fn again(&mut self, now: Instant) -> bool {
        match self.again_until {
            Some(until) if now < until => true,
            Some(_) => {
                // One last time, then stop: an idle gateway does no work.
                self.again_until = None;
                true
            }
            None => false,
        }
    }
}

fn new_epoch() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(node_id: NodeId, zone: &str) -> Registration {
        Registration {
            node_id,
            ip_address: format!("10.0.0.{node_id}"),
            port: 5000,
            capabilities: vec!["raft".into()],
            metadata: serde_json::json!({ "zone": zone }).as_object().cloned(),
            previous_epoch: None,
        }
    }

    #[test]
    fn a_new_version_is_made_from_the_changes_and_shows_them() {
        let gateway = Gateway::new(
            Registry::new(crate::server::registry::Liveness::default()),
            Duration::from_secs(1),
        );
        for id in 0..300 {
            gateway.register(registration(id, "a")).unwrap();
        }
        let first = gateway.list();
        gateway.register(registration(150, "b")).unwrap();
        gateway.remove(7).unwrap();
        gateway.register(registration(1000, "c")).unwrap();
        let second = gateway.list();
        assert_eq!(second.version, gateway.version());
        assert!(second.version > first.version);
        let scratch = NodeList::build(gateway.store.snapshot(), None);
        let all = Filter::default();
        let text = |list: &NodeList| -> Vec<u8> {
            let parts = list.select(all);
            parts
                .iter()
                .flat_map(|p| match p {
                    Part::Static(b) => b.to_vec(),
                    Part::Owned(b) => b.clone(),
                    Part::Cached { chunk, range } => list.bytes(*chunk, range.clone()).to_vec(),
                    Part::Compressed { .. } => unreachable!("a plain answer"),
                })
                .collect()
        };
        assert!(text(&second) == text(&scratch));
        assert!(
            Arc::ptr_eq(&second, &gateway.list()),
            "the same version is shared"
        );
    }

    #[test]
    fn a_new_version_comes_from_the_changes_until_last_seen_is_too_old() {
        let snapshot = crate::server::store::Snapshot {
            version: 5,
            touches: 9,
            leader: None,
            records: Vec::new(),
        };
        let list = NodeList::build(snapshot, None);
        let young = list.built;
        let old = list.built + LIST_MAX_AGE;
        assert_eq!(Next::of(&list, 5, 9, young), Next::Keep);
        assert_eq!(
            Next::of(&list, 5, 10, young),
            Next::Keep,
            "heartbeats, young"
        );
        assert_eq!(Next::of(&list, 5, 9, old), Next::Keep, "nothing moved");
        assert_eq!(
            Next::of(&list, 5, 10, old),
            Next::Snapshot,
            "heartbeats, old"
        );
        assert_eq!(Next::of(&list, 6, 11, young), Next::Delta, "a change");
        assert_eq!(Next::of(&list, 6, 11, old), Next::Snapshot, "a change, old");
        assert_eq!(
            Next::of(&list, 4, 11, young),
            Next::Snapshot,
            "the version went back"
        );
        // A list made from a delta shows `last_seen` as of its predecessor's snapshot: past
        // LIST_MAX_AGE it is compared with a snapshot even if nothing moved since.
        let delta = crate::server::store::Delta {
            version: 6,
            touches: 11,
            leader: None,
            changes: Vec::new(),
            records: Vec::new(),
        };
        let next = list.apply(delta);
        assert_eq!(Next::of(&next, 6, 11, young), Next::Keep);
        assert_eq!(Next::of(&next, 6, 11, old), Next::Snapshot);
        assert_eq!(Next::of(&next, 7, 12, young), Next::Delta);
    }

    #[test]
    fn memory_is_given_back_after_a_mass_departure_and_on_the_sweeps_that_follow_then_never() {
        let start = Instant::now();
        let mut trim = Trim::default();
        assert_eq!(
            trim.after_sweep(5000, start),
            None,
            "growing gives nothing back"
        );
        assert!(!trim.again(start));
        assert_eq!(
            trim.after_sweep(4500, start),
            None,
            "a small loss is no departure"
        );
        assert_eq!(trim.after_sweep(0, start), Some(5000), "a mass departure");
        let step = Duration::from_secs(2);
        let mut later = start;
        while later + step < start + TRIM_AGAIN_FOR {
            later += step;
            assert_eq!(trim.after_sweep(0, later), None);
            assert!(trim.again(later), "again within TRIM_AGAIN_FOR");
        }
        let after = start + TRIM_AGAIN_FOR + step;
        assert!(trim.again(after), "once more after it");
        assert!(
            !trim.again(after + step),
            "then the idle gateway does nothing"
        );
        assert!(!trim.again(after + TRIM_AGAIN_FOR * 10));
    }

    #[test]
    fn a_departure_of_fewer_than_a_thousand_nodes_keeps_the_memory_for_reuse() {
        let now = Instant::now();
        let mut trim = Trim::default();
        trim.after_sweep(1500, now);
        assert_eq!(trim.after_sweep(600, now), None, "900 left");
        assert_eq!(
            trim.after_sweep(400, now),
            Some(1500),
            "1,100 left, more than half"
        );
    }
}
