//! [`LocalStore`]: the registry in this process's memory, optionally kept in a data directory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::api::{NodeId, Registration};
use crate::lock;
use crate::server::registry::{Event, Liveness, NodeRecord, Now, Registered, Registry};

use super::log::{COMPACT_MIN_BYTES, Disk, Log, OpenError, RealDisk};
use super::{Delta, Durability, Pending, Settled, Snapshot, Store, StoreError, Summary};

/// The registry behind a mutex. With a data directory, every change is appended to a [`Log`]
/// under the registry lock (so the log's order is the registry's), and the operation waits for
/// the log to be on disk after releasing the lock (so concurrent operations share one `fsync`).
pub struct LocalStore {
    registry: Arc<Mutex<Registry>>,
    log: Option<Log>,
    /// Told of every change after it is announced, outside the lock: the new registry version
    /// and the events (watchers are woken and metrics counted here).
    on_change: Option<Arc<ChangeHook>>,
}

/// What [`LocalStore::on_change`] calls: the registry version after a change, and its events.
pub type ChangeHook = Box<dyn Fn(u64, &[Event]) + Send + Sync>;

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("registry", &self.registry)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    /// An empty registry in memory: a restart forgets it.
    pub fn memory(liveness: Liveness, max_nodes: usize) -> LocalStore {
        LocalStore {
            registry: Arc::new(Mutex::new(
                Registry::new(liveness).with_max_nodes(max_nodes),
            )),
            log: None,
            on_change: None,
        }
    }

    /// The same store, refusing a registration that would take the registry past `max_bytes`
    /// (`--max-registry-bytes`; see [`crate::server::registry::node_bytes`]).
    pub fn with_max_bytes(self, max_bytes: u64) -> LocalStore {
        lock(&self.registry).set_max_bytes(max_bytes);
        self
    }

    /// Calls `hook` after every change, once it is announced (outside the registry lock).
    pub fn on_change(mut self, hook: ChangeHook) -> LocalStore {
        let hook = Arc::new(hook);
        if let Some(log) = &self.log {
            // A rollback after a failed write is a change too: readers and watchers see it.
            let hook = Arc::clone(&hook);
            log.on_rolled_back(Box::new(move |version| hook(version, &[])));
        }
        self.on_change = Some(hook);
        self
    }

    /// The registry kept in `dir`: brought back from it (every node with a full grace period from
    /// `now`), and every change written to it before it is acknowledged.
    pub fn open(
        dir: &Path,
        liveness: Liveness,
        max_nodes: usize,
        now: Now,
    ) -> Result<LocalStore, OpenError> {
        LocalStore::open_compacting_at(dir, liveness, max_nodes, now, COMPACT_MIN_BYTES)
    }

    /// [`LocalStore::open`], compacting the log once it passes `compact_at` bytes (and the
    /// snapshot's size). Tests use a small figure to compact often.
    pub fn open_compacting_at(
        dir: &Path,
        liveness: Liveness,
        max_nodes: usize,
        now: Now,
        compact_at: u64,
    ) -> Result<LocalStore, OpenError> {
        LocalStore::open_on(
            dir,
            liveness,
            max_nodes,
            now,
            compact_at,
            Arc::new(RealDisk),
        )
    }

    /// [`LocalStore::open_compacting_at`], writing through `disk`: tests see every write and
    /// sync, and make them fail.
    #[doc(hidden)]
    pub fn open_on(
        dir: &Path,
        liveness: Liveness,
        max_nodes: usize,
        now: Now,
        compact_at: u64,
        disk: Arc<dyn Disk>,
    ) -> Result<LocalStore, OpenError> {
        let (restored, resume) = super::log::recover(dir)?;
        let registry = Registry::restore(liveness, restored, now).with_max_nodes(max_nodes);
        let registry = Arc::new(Mutex::new(registry));
        let log = Log::start(dir, resume, Arc::clone(&registry), compact_at, disk)?;
        Ok(LocalStore {
            registry,
            log: Some(log),
            on_change: None,
        })
    }

    /// Applies `f` under the registry lock and logs what it changed; after releasing the lock,
    /// announces it and waits until it is on disk. With `writes`, a store whose log failed
    /// refuses before changing anything.
    fn change<T>(&self, writes: bool, f: impl FnOnce(&mut Registry) -> T) -> Result<T, StoreError> {
        let (result, pending) = self.change_pending(writes, f)?;
        self.confirm(pending)?;
        Ok(result)
    }

    /// [`LocalStore::change`] without the wait: the records are queued, not yet synced.
    fn change_pending<T>(
        &self,
        writes: bool,
        f: impl FnOnce(&mut Registry) -> T,
    ) -> Result<(T, Pending), StoreError> {
        let (result, events, ticket, version) = {
            let mut registry = lock(&self.registry);
            // Under the lock: a log that fails rolls the registry back under it too, so a
            // write is either refused here or undone there, never left showing.
            if writes && let Some(log) = &self.log {
                log.check_writable()?;
            }
            let before = bootstrap_state(&registry);
            let result = f(&mut registry);
            let events = registry.take_events();
            let ticket = self.log.as_ref().and_then(|log| {
                let bootstrap_changed = bootstrap_state(&registry) != before;
                log.append(&registry, &events, bootstrap_changed)
            });
            (result, events, ticket, registry.version())
        };
        announce(&events);
        // Watchers woken here read a list, which settles its version: they never see a change
        // before it is durable.
        if let Some(hook) = self.on_change.as_ref().filter(|_| !events.is_empty()) {
            hook(version, &events);
        }
        Ok((result, Pending(ticket, None)))
    }
}

impl LocalStore {
    /// Keeps the log's writer from writing while the guard lives.
    #[cfg(test)]
    pub(super) fn hold_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.log.as_ref().expect("a durable store").hold_writer()
    }
}

impl From<Registry> for LocalStore {
    /// A store in memory around an existing registry.
    fn from(registry: Registry) -> LocalStore {
        LocalStore {
            registry: Arc::new(Mutex::new(registry)),
            log: None,
            on_change: None,
        }
    }
}

fn bootstrap_state(registry: &Registry) -> (bool, bool) {
    (registry.bootstrap_initiated(), registry.bootstrap_armed())
}

impl Store for LocalStore {
    fn register(&self, registration: Registration, now: Now) -> Result<Registered, StoreError> {
        Ok(self.change(true, |r| r.register(registration, now))??)
    }

    fn register_pending(
        &self,
        registration: Registration,
        now: Now,
    ) -> Result<(Registered, Pending), StoreError> {
        let (registered, pending) = self.change_pending(true, |r| r.register(registration, now))?;
        match registered {
            Ok(registered) => Ok((registered, pending)),
            // Refused: nothing was queued.
            Err(e) => Err(e.into()),
        }
    }

    fn confirm(&self, pending: Pending) -> Result<(), StoreError> {
        match (&self.log, pending.0) {
            (Some(log), Some(ticket)) => log.wait(ticket),
            _ => Ok(()),
        }
    }

    fn is_settled(&self, pending: &Pending, version: u64) -> bool {
        self.log
            .as_ref()
            .is_none_or(|log| log.is_synced(pending.0, version))
    }

    fn when_settled(&self, pending: Pending, version: u64, done: Settled) {
        match &self.log {
            Some(log) => log.when_synced(pending.0, version, done),
            None => done(Ok(())),
        }
    }

    fn heartbeat(&self, node_id: NodeId, now: Now) -> Result<Option<u64>, StoreError> {
        let version = self.change(false, |r| r.heartbeat(node_id, now).then(|| r.version()))?;
        if let Some(version) = version {
            self.settle(version);
        }
        Ok(version)
    }

    fn remove(&self, node_id: NodeId) -> Result<bool, StoreError> {
        self.change(true, |r| r.remove(node_id))
    }

    fn set_leader(&self, node_id: NodeId) -> Result<bool, StoreError> {
        self.change(true, |r| r.set_leader(node_id))
    }

    fn sweep(&self, now: Now) {
        if let Err(e) = self.change(false, |r| r.sweep(now)) {
            log::warn!("a sweep's changes could not be written: {e}");
        }
    }

    fn versions(&self) -> (u64, u64) {
        let registry = lock(&self.registry);
        (registry.version(), registry.touches())
    }

    fn snapshot(&self) -> Snapshot {
        let registry = lock(&self.registry);
        Snapshot {
            version: registry.version(),
            touches: registry.touches(),
            leader: registry.leader_id(),
            records: registry.nodes().cloned().collect(),
        }
    }

    fn delta(&self, since: u64, max_changes: usize) -> Option<Delta> {
        let registry = lock(&self.registry);
        let now = (registry.version(), registry.touches(), registry.leader_id());
        Delta::gather(registry.journal(), since, max_changes, now, |id| {
            registry.get(id)
        })
    }

    /// Waits until `version` is on disk. A log that failed is not waited for: reads go on from
    /// memory.
    fn settle(&self, version: u64) {
        if let Some(log) = &self.log {
            log.wait_version(version);
        }
    }

    fn summary(&self) -> Summary {
        let summary = {
            let registry = lock(&self.registry);
            Summary {
                counts: registry.counts(),
                leader: registry.leader_id(),
                version: registry.version(),
                bootstrap_initiated: registry.bootstrap_initiated(),
                bootstrap_armed: registry.bootstrap_armed(),
                liveness: registry.liveness(),
                budget: Some(registry.budget()),
            }
        };
        self.settle(summary.version);
        summary
    }

    fn liveness(&self) -> Liveness {
        lock(&self.registry).liveness()
    }

    fn leader(&self) -> (u64, Option<NodeRecord>) {
        let (version, leader) = self.leader_unsettled();
        self.settle(version);
        (version, leader)
    }

    fn leader_unsettled(&self) -> (u64, Option<NodeRecord>) {
        let registry = lock(&self.registry);
        let leader = registry
            .leader_id()
            .and_then(|id| registry.get(id))
            .cloned();
        (registry.version(), leader)
    }

    fn durability(&self) -> Durability {
        self.log.as_ref().map(Log::durability).unwrap_or_default()
    }
}

/// The one place a change to the registry is announced. Today: the log. Watches and metrics
/// hook in here.
fn announce(events: &[Event]) {
    for event in events {
        match event {
            Event::Joined { node_id, address } => log::info!("node {node_id} joined at {address}"),
            Event::Updated { node_id, changed } => {
                log::info!(
                    "node {node_id} re-registered with a new {}",
                    changed.join(" and ")
                )
            }
            Event::Left { node_id } => log::info!("node {node_id} left"),
            Event::Reaped { node_id } => log::info!("node {node_id} reaped after silence"),
            Event::Suspected { node_id } => log::info!("node {node_id} suspected: silent"),
            Event::Recovered { node_id } => log::info!("node {node_id} heard from again"),
            Event::LeaderChanged { from, to } => match (to, from) {
                (Some(to), Some(from)) => log::info!("leader is now node {to} (was node {from})"),
                (Some(to), None) => log::info!("leader is now node {to} (there was none)"),
                (None, Some(from)) => log::info!("no leader now (was node {from})"),
                (None, None) => {}
            },
        }
    }
}
