//! Where the registry lives: the seam between the gateway and its storage.
//!
//! The HTTP layer talks to the gateway (`gateway::Gateway`), which talks to a [`Store`]. A store
//! applies the membership operations (register, heartbeat, remove, set leader, sweep) and
//! answers consistent snapshots for the node lists. [`LocalStore`] is the pure
//! [`Registry`](crate::server::registry::Registry) behind a mutex, in memory only, or with a durable
//! [`log`] in a data directory. [`EtcdStore`] keeps the registry in etcd for several gateways:
//! a transaction per write, reads from a local copy fed by a watch.
//!
//! The contract every store keeps:
//! - an operation that returns `Ok` is applied and, for a durable store, on disk;
//! - an operation that returns `Err` changed nothing (or, for `Unavailable`, nothing that was
//!   acknowledged);
//! - a snapshot never shows a `registry_version` that could be lost by a crash.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::NodeId;
use crate::server::journal::{Change, Journal};
use crate::server::registry::{
    Budget, Counts, Liveness, NodeRecord, Now, Registered, RegistryError,
};

pub mod etcd;
mod local;
pub mod log;

pub use etcd::EtcdStore;
pub use local::LocalStore;

/// The membership operations and reads the gateway needs from wherever the registry lives.
pub trait Store: Send + Sync + fmt::Debug {
    /// Registers or updates a node.
    fn register(
        &self,
        registration: crate::api::Registration,
        now: Now,
    ) -> Result<Registered, StoreError>;

    /// [`Store::register`] that may return once the change is applied and before it is
    /// durable. The caller then settles a version at or past the change (an answer must settle
    /// the version it shows anyway) and confirms: one wait for the disk instead of two.
    fn register_pending(
        &self,
        registration: crate::api::Registration,
        now: Now,
    ) -> Result<(Registered, Pending), StoreError> {
        Ok((self.register(registration, now)?, Pending(None, None)))
    }

    /// Whether a change from [`Store::register_pending`] is durable; call it after settling a
    /// version at or past the change.
    fn confirm(&self, pending: Pending) -> Result<(), StoreError> {
        let _ = pending;
        Ok(())
    }

    /// Whether a change from [`Store::register_pending`], and registry version `version`, can
    /// no longer be lost (cheap: it does not wait).
    fn is_settled(&self, pending: &Pending, version: u64) -> bool {
        let _ = (pending, version);
        true
    }

    /// Calls `done` once a change from [`Store::register_pending`] and registry version
    /// `version` can no longer be lost (`Ok`), or once the change never will be (`Err`): what
    /// [`Store::settle`] and [`Store::confirm`] wait for, without waiting. `done` may be
    /// called at once, on this thread, or later on the thread that made it durable: it must
    /// be quick (hand the answer to a thread that writes it).
    fn when_settled(&self, pending: Pending, version: u64, done: Settled) {
        self.settle(version);
        done(self.confirm(pending));
    }

    /// The registry version and the leader's record as they are now, perhaps not durable yet:
    /// [`Store::settle`] the version before showing it.
    fn leader_unsettled(&self) -> (u64, Option<NodeRecord>) {
        self.leader()
    }

    /// Records a heartbeat: `None` if the node is not registered, else the registry version.
    fn heartbeat(&self, node_id: NodeId, now: Now) -> Result<Option<u64>, StoreError>;

    /// Removes a node; false if it was not registered.
    fn remove(&self, node_id: NodeId) -> Result<bool, StoreError>;

    /// Makes a registered node leader; false if it is not registered.
    fn set_leader(&self, node_id: NodeId) -> Result<bool, StoreError>;

    /// Suspects and reaps silent nodes.
    fn sweep(&self, now: Now);

    /// `(registry_version, touches)`: cheap, to tell whether a cached list is behind.
    fn versions(&self) -> (u64, u64);

    /// Every node, with the leader and the version they belong to. The version may not be
    /// durable yet: [`Store::settle`] it before showing it.
    fn snapshot(&self) -> Snapshot;

    /// What changed after `since`, with the changed nodes as they are now: O(changes), not
    /// O(nodes). `None` if the journal no longer reaches back to `since`, or if more than
    /// `max_changes` changes were made since (a full [`Store::snapshot`] is then the answer).
    /// Like a snapshot's, its version may not be durable yet.
    fn delta(&self, since: u64, max_changes: usize) -> Option<Delta>;

    /// Waits until registry version `version` can no longer be lost (a durable store: until
    /// its records are on disk). Call it outside any lock, before an answer shows `version`.
    fn settle(&self, version: u64);

    /// Counts, leader, version and bootstrap state, for `/stats` (may cost a pass over every
    /// node).
    fn summary(&self) -> Summary;

    /// The liveness settings (cheap).
    fn liveness(&self) -> Liveness {
        self.summary().liveness
    }

    /// The registry version and the leader's record, settled (cheap: no pass over the nodes).
    fn leader(&self) -> (u64, Option<NodeRecord>) {
        let snapshot = self.snapshot();
        self.settle(snapshot.version);
        let leader = snapshot
            .leader
            .and_then(|id| snapshot.records.into_iter().find(|r| r.node_id == id));
        (snapshot.version, leader)
    }

    /// Where the registry is kept, for `/stats`.
    fn durability(&self) -> Durability;

    /// Whether reads may be answered: `Err` (a 503) while what the store shows cannot be
    /// trusted to be the registry (over etcd: not read yet, or a copy that fell behind).
    fn readable(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What [`Store::when_settled`] calls.
pub type Settled = log::Synced;

/// A change applied, perhaps not yet durable (see [`Store::register_pending`]).
#[derive(Debug)]
#[must_use = "a pending change is acknowledged only once confirmed"]
pub struct Pending(
    pub(crate) Option<log::Ticket>,
    /// Over etcd: a registration that went with a group, until it is written and shown.
    pub(crate) Option<etcd::Ticket>,
);

/// A consistent view of the registry.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The registry version.
    pub version: u64,
    /// Grows whenever anything changes, `last_seen` included.
    pub touches: u64,
    /// The leader (always one of `records`).
    pub leader: Option<NodeId>,
    /// Every node, active and suspected, in no particular order.
    pub records: Vec<NodeRecord>,
}

/// What changed after a version (see [`Store::delta`]).
#[derive(Debug, Clone)]
pub struct Delta {
    /// The registry version the changes lead to.
    pub version: u64,
    /// Grows whenever anything changes, `last_seen` included.
    pub touches: u64,
    /// The leader now (always one of the nodes).
    pub leader: Option<NodeId>,
    /// Every change after the version asked for, oldest first, each with its version.
    pub changes: Vec<(u64, Change)>,
    /// The current record of each node named in `changes` that is still registered, once.
    pub records: Vec<NodeRecord>,
}

impl Delta {
    /// Gathers the changes after `since` from `journal`, and the current records of the nodes
    /// they name from `get`; `None` if the journal does not reach back to `since` or holds
    /// more than `max_changes` changes after it.
    pub fn gather<'a>(
        journal: &Journal,
        since: u64,
        max_changes: usize,
        (version, touches, leader): (u64, u64, Option<NodeId>),
        get: impl Fn(NodeId) -> Option<&'a NodeRecord>,
    ) -> Option<Delta> {
        let changes = journal.since(since)?;
        if changes.len() > max_changes {
            return None;
        }
        let changes: Vec<(u64, Change)> = changes.collect();
        let mut named = std::collections::HashSet::new();
        let records = changes
            .iter()
            .filter_map(|(_, change)| change.node_id())
            .filter(|id| named.insert(*id))
            .filter_map(|id| get(id).cloned())
            .collect();
        Some(Delta {
            version,
            touches,
            leader,
            changes,
            records,
        })
    }
}

/// What `/stats` shows of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Node counts and lifetime counters.
    pub counts: Counts,
    /// The leader.
    pub leader: Option<NodeId>,
    /// The registry version.
    pub version: u64,
    /// True once a node bootstrapped the cluster.
    pub bootstrap_initiated: bool,
    /// True if the next node to join an empty registry bootstraps.
    pub bootstrap_armed: bool,
    /// The liveness settings.
    pub liveness: Liveness,
    /// The registry's memory budget and what its nodes take of it (`None` over etcd, which
    /// keeps no budget of its own).
    pub budget: Option<Budget>,
}

/// Where the registry is kept, and how its log is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durability {
    /// The data directory; `None` when the registry is in memory only.
    pub data_dir: Option<PathBuf>,
    /// Bytes in the log since the last compaction.
    pub log_bytes: u64,
    /// Bytes in the last snapshot.
    pub snapshot_bytes: u64,
    /// Wall-clock time (Unix seconds) of the last compaction, if one ran since start.
    pub last_compaction: Option<f64>,
    /// Why the log cannot be written any more, if it cannot.
    pub failed: Option<String>,
    /// Syncs of the log since start (each one a batch of changes).
    pub syncs: u64,
}

/// Why a store refused an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The request itself cannot be applied (a 4xx, or 503 when the registry is full).
    Registry(RegistryError),
    /// The store cannot serve now (a 503): the data directory cannot be written, or etcd
    /// cannot be used (cut off, not read yet, or this gateway's copy of it is stale).
    Unavailable(Arc<str>),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Registry(e) => e.fmt(f),
            StoreError::Unavailable(why) => write!(f, "Registry unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

#[cfg(test)]
mod tests;

impl From<RegistryError> for StoreError {
    fn from(e: RegistryError) -> StoreError {
        StoreError::Registry(e)
    }
}
