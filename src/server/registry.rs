//! The registry: which nodes are in the cluster, who leads, and how alive each node is.
//!
//! This module is pure logic. It opens no sockets, spawns no threads and never reads a clock:
//! every method that depends on time takes a [`Now`] from the caller, so tests drive time by hand.
//! Every change that alters what `/nodes` or `/leader` would return goes through
//! `Registry::record`, which bumps `registry_version` and queues an [`Event`] for the owner to
//! announce.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::api::{NodeId, NodeStatus, Registration, limits};
use crate::server::journal::{Change, Journal};

mod budget;

pub use budget::{Budget, node_bytes};
use budget::{Wire, record_bytes};

/// A point in time, as both clocks see it.
///
/// `instant` drives liveness (it never jumps); `unix` is what the wire shows as `last_seen` and
/// `join_timestamp` (seconds since 1970, as the original gateway reported them).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time: the only clock that decides suspicion and reaping.
    pub instant: Instant,
    /// Wall-clock time in Unix seconds, for display only.
    pub unix: f64,
}

impl Now {
    /// Reads both system clocks.
    pub fn system() -> Now {
        Now {
            instant: Instant::now(),
            unix: unix_now(),
        }
    }
}

/// The wall clock in Unix seconds (0.0 if the clock is before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How long a silent node is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Silence after which a node is marked `suspected`.
    pub suspect_after: Duration,
    /// Silence after which a node is removed (reaped).
    pub node_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            suspect_after: Duration::from_secs(90),
            node_timeout: Duration::from_secs(300),
        }
    }
}

/// The parts of a node that change only when it re-registers.
///
/// Shared behind an `Arc` so a snapshot of the registry costs a reference count per node, not a
/// deep copy: the lock is held for the snapshot, serialisation happens after it is released.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Address other nodes reach this one at (IP address or host name).
    pub ip_address: String,
    /// Port other nodes reach this one at.
    pub port: u16,
    /// What the node offers, e.g. `raft`, `gossip`: shared by the nodes that offer the same (see
    /// `SharedCapabilities`).
    pub capabilities: Arc<[String]>,
    /// A JSON object, kept as compact text: it is only ever written back out.
    pub metadata: Box<RawValue>,
}

impl PartialEq for NodeInfo {
    fn eq(&self, other: &NodeInfo) -> bool {
        self.ip_address == other.ip_address
            && self.port == other.port
            && self.capabilities == other.capabilities
            && self.metadata.get() == other.metadata.get()
    }
}

/// One registered node.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    /// The node's id, unique in the registry.
    pub node_id: NodeId,
    /// Address, capabilities and metadata.
    pub info: Arc<NodeInfo>,
    /// `active`, or `suspected` once silent for `suspect_after`.
    pub status: NodeStatus,
    /// Wall-clock time of the last registration or heartbeat.
    pub last_seen: f64,
    /// Wall-clock time of the first registration.
    pub join_timestamp: f64,
    /// Monotonic time of the last registration or heartbeat.
    pub heard_at: Instant,
}

/// Writes a record in the wire shape of [`crate::api::Node`].
impl Serialize for NodeRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            node_id: self.node_id,
            ip_address: &self.info.ip_address,
            port: self.info.port,
            capabilities: &self.info.capabilities,
            status: self.status,
            last_seen: self.last_seen,
            join_timestamp: self.join_timestamp,
            metadata: &self.info.metadata,
        }
        .serialize(serializer)
    }
}

/// Something that changed what `/nodes` or `/leader` return.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new node registered.
    Joined {
        /// The node.
        node_id: NodeId,
        /// `ip:port` it registered with.
        address: String,
    },
    /// A known node re-registered with a different address, capabilities or metadata.
    Updated {
        /// The node.
        node_id: NodeId,
        /// What changed: `address`, `capabilities`, `metadata`.
        changed: Vec<&'static str>,
    },
    /// A node was removed on request.
    Left {
        /// The node.
        node_id: NodeId,
    },
    /// A node was silent for `node_timeout` and was removed.
    Reaped {
        /// The node.
        node_id: NodeId,
    },
    /// A node was silent for `suspect_after`.
    Suspected {
        /// The node.
        node_id: NodeId,
    },
    /// A suspected node was heard from again.
    Recovered {
        /// The node.
        node_id: NodeId,
    },
    /// The leader changed (`None`: no leader).
    LeaderChanged {
        /// The leader before.
        from: Option<NodeId>,
        /// The leader now.
        to: Option<NodeId>,
    },
}

impl Event {
    /// What the change journal keeps of it.
    pub fn change(&self) -> Change {
        match *self {
            Event::Joined { node_id, .. } => Change::Joined(node_id),
            Event::Updated { node_id, .. } => Change::Updated(node_id),
            Event::Left { node_id } => Change::Left(node_id),
            Event::Reaped { node_id } => Change::Reaped(node_id),
            Event::Suspected { node_id } => Change::Suspected(node_id),
            Event::Recovered { node_id } => Change::Recovered(node_id),
            Event::LeaderChanged { to, .. } => Change::Leader(to),
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// True if the node was not known before.
    pub created: bool,
    /// True if this registration bootstrapped the cluster (the node became leader).
    pub is_bootstrap: bool,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// Merging the new metadata into the stored one would exceed the limits.
    MetadataTooLarge(String),
    /// The registry holds `max_nodes` nodes already; a new one does not fit.
    Full {
        /// The limit (`--max-nodes`).
        max_nodes: usize,
    },
    /// The registration would take the registry past its budget (`--max-registry-bytes`).
    OverBudget {
        /// What the node would take (all of it, for a new node; what it grows by, for a known
        /// one).
        needs: u64,
        /// The budget and what is taken of it.
        budget: Budget,
    },
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::MetadataTooLarge(why) => write!(f, "Invalid metadata: {why}"),
            RegistryError::Full { max_nodes } => write!(
                f,
                "Registry full: it holds {max_nodes} nodes, the most it may (--max-nodes); \
                 a new node is admitted when one leaves or is reaped"
            ),
            RegistryError::OverBudget { needs, budget } => write!(
                f,
                "Registry over its memory budget: this registration needs {needs} bytes, and \
                 {} of the {} bytes the registry may hold (--max-registry-bytes) are left; \
                 nothing was changed (smaller metadata or capabilities fit, or room is made \
                 when nodes leave or are reaped)",
                budget.max.saturating_sub(budget.used),
                budget.max
            ),
        }
    }
}

impl std::error::Error for RegistryError {}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Nodes newly marked suspected.
    pub suspected: Vec<NodeId>,
    /// Nodes removed for silence.
    pub reaped: Vec<NodeId>,
}

/// Counters an operator reads from `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Registered nodes, active or suspected.
    pub total_nodes: usize,
    /// Nodes heard from recently.
    pub active_nodes: usize,
    /// Nodes silent for `suspect_after` but not yet reaped.
    pub suspected_nodes: usize,
    /// Registrations that created a node, since start.
    pub joins_total: u64,
    /// Nodes removed on request, since start.
    pub removed_total: u64,
    /// Nodes removed for silence, since start.
    pub reaped_total: u64,
    /// Heartbeats acknowledged, since start.
    pub heartbeats_total: u64,
}

/// The capability sets of the last few nodes that registered with distinct ones, handed out
/// again to a node that registers with the same: most nodes of a cluster offer the same few
/// sets, so each set is kept once, not once a node (about 128 bytes a node with two).
/// Bounded: a cluster of all-different sets only misses.
#[derive(Debug, Default)]
struct SharedCapabilities {
    /// Most recently used first.
    recent: Vec<Arc<[String]>>,
}

impl SharedCapabilities {
    /// How many distinct sets are kept.
    const KEEP: usize = 8;

    fn share(&mut self, capabilities: Vec<String>) -> Arc<[String]> {
        match self.find(&capabilities) {
            Some(shared) => shared,
            None => self.keep(capabilities.into()),
        }
    }

    fn share_slice(&mut self, capabilities: &Arc<[String]>) -> Arc<[String]> {
        match self.find(capabilities) {
            Some(shared) => shared,
            None => self.keep(Arc::clone(capabilities)),
        }
    }

    fn find(&mut self, capabilities: &[String]) -> Option<Arc<[String]>> {
        let i = self.recent.iter().position(|c| **c == *capabilities)?;
        let found = self.recent.remove(i);
        self.recent.insert(0, Arc::clone(&found));
        Some(found)
    }

    fn keep(&mut self, capabilities: Arc<[String]>) -> Arc<[String]> {
        self.recent.insert(0, Arc::clone(&capabilities));
        self.recent.truncate(Self::KEEP);
        capabilities
    }
}

/// The registry: nodes, leader, bootstrap state and the version of what it shows.
#[derive(Debug)]
pub struct Registry {
    nodes: HashMap<NodeId, NodeRecord>,
    leader: Option<NodeId>,
    version: u64,
    /// Bumped whenever any `last_seen` changes, so a cached list knows it is behind.
    touches: u64,
    bootstrap_initiated: bool,
    /// The next node to join an empty registry bootstraps the cluster.
    bootstrap_armed: bool,
    liveness: Liveness,
    max_nodes: usize,
    /// What the nodes take, as [`node_bytes`] counts them, and the most they may.
    budget: Budget,
    counts: Counts,
    events: Vec<Event>,
    /// What each recent version changed.
    journal: Journal,
    capabilities: SharedCapabilities,
}

/// What a durable store kept of a registry: enough to bring it back after a restart.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Every node, with the wall-clock time it first joined.
    pub nodes: Vec<(NodeId, Arc<NodeInfo>, f64)>,
    /// The leader (ignored unless it is one of `nodes`).
    pub leader: Option<NodeId>,
    /// The last registry version shown.
    pub version: u64,
    /// True once a node bootstrapped the cluster (or a rejoining node disarmed bootstrap).
    pub bootstrap_initiated: bool,
    /// True if the next node to join an empty registry would bootstrap.
    pub bootstrap_armed: bool,
}

impl Registry {
    /// An empty registry, armed for bootstrap.
    pub fn new(liveness: Liveness) -> Registry {
        Registry {
            nodes: HashMap::new(),
            leader: None,
            version: 0,
            touches: 0,
            bootstrap_initiated: false,
            bootstrap_armed: true,
            liveness,
            max_nodes: usize::MAX,
            budget: Budget {
                used: 0,
                max: u64::MAX,
            },
            counts: Counts::default(),
            events: Vec::new(),
            journal: Journal::new(0),
            capabilities: SharedCapabilities::default(),
        }
    }

    /// The same registry, refusing new nodes once it holds `max_nodes`.
    pub fn with_max_nodes(mut self, max_nodes: usize) -> Registry {
        self.max_nodes = max_nodes;
        self
    }

    /// From now on, refuses a registration that would take the nodes past `max_bytes` (as
    /// [`node_bytes`] counts them). Nodes already there stay, whatever they take.
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.budget.max = max_bytes;
    }

    /// A registry brought back from what a store kept.
    ///
    /// Every node is active and gets a full grace period from `now`, as a lease does when an
    /// etcd member restarts: its silence is counted from the restart, so a node that never comes
    /// back is reaped `node_timeout` later. `join_timestamp` is kept; `last_seen` is `now`.
    pub fn restore(liveness: Liveness, state: Restored, now: Now) -> Registry {
        let mut registry = Registry::new(liveness);
        for (node_id, mut info, join_timestamp) in state.nodes {
            let shared = registry.capabilities.share_slice(&info.capabilities);
            if !Arc::ptr_eq(&shared, &info.capabilities) {
                info = Arc::new(NodeInfo {
                    capabilities: shared,
                    ..NodeInfo::clone(&info)
                });
            }
            let replaced = registry.nodes.insert(
                node_id,
                NodeRecord {
                    node_id,
                    info: Arc::clone(&info),
                    status: NodeStatus::Active,
                    last_seen: now.unix,
                    join_timestamp,
                    heard_at: now.instant,
                },
            );
            registry.budget.used += record_bytes(node_id, &info);
            if let Some(replaced) = replaced {
                registry.budget.used -= record_bytes(node_id, &replaced.info);
            }
        }
        registry.leader = state.leader.filter(|id| registry.nodes.contains_key(id));
        registry.version = state.version;
        registry.journal.restart(state.version);
        registry.bootstrap_initiated = state.bootstrap_initiated;
        registry.bootstrap_armed = state.bootstrap_armed;
        registry
    }

    /// Puts back the registry a durable store last wrote (`state`), after a write failed: what
    /// the failed write changed goes, and so does anything else that never reached the disk.
    /// Nodes still there keep their liveness (when last heard from, suspected or not); nodes
    /// that come back get a full grace period from `now`. The version moves on, never back, so
    /// every reader and watcher sees the change.
    pub fn roll_back(&mut self, state: Restored, now: Now) {
        let version = self.version.max(state.version) + 1;
        let mut restored = Registry::restore(self.liveness, state, now);
        for (node_id, record) in &mut restored.nodes {
            if let Some(old) = self.nodes.get(node_id) {
                record.status = old.status;
                record.last_seen = old.last_seen;
                record.heard_at = old.heard_at;
            }
        }
        self.nodes = restored.nodes;
        self.budget.used = restored.budget.used;
        self.leader = restored.leader;
        self.bootstrap_initiated = restored.bootstrap_initiated;
        self.bootstrap_armed = restored.bootstrap_armed;
        self.version = version;
        self.journal.restart(version);
        self.touches += 1;
    }

    /// Registers a node, or updates it if known.
    ///
    /// A known node gets the new address, port and capabilities; its metadata is merged key by
    /// key; it becomes active. A node that joins an empty registry with no leader while bootstrap
    /// is armed bootstraps the cluster and becomes leader, unless it says it is rejoining
    /// (`previous_epoch`): that disarms bootstrap instead.
    pub fn register(&mut self, reg: Registration, now: Now) -> Result<Registered, RegistryError> {
        let Registration {
            node_id,
            ip_address,
            port,
            capabilities,
            metadata,
            previous_epoch,
        } = reg;
        // A node that says it registered with some gateway run before belongs to a cluster that
        // already exists: it never bootstraps, and no one may bootstrap beside it.
        let rejoining = previous_epoch.is_some();
        if let Some(stored) = self.nodes.get(&node_id) {
            let merged = merge_metadata(&stored.info.metadata, metadata)?;
            let old = &stored.info;
            let changed: Vec<&'static str> = [
                ("address", old.ip_address != ip_address || old.port != port),
                ("capabilities", old.capabilities[..] != capabilities[..]),
                ("metadata", old.metadata.get() != merged.get()),
            ]
            .into_iter()
            .filter_map(|(what, differs)| differs.then_some(what))
            .collect();
            // Only a change can change the node's cost: a re-registration with what the node
            // registered with (a restart) serialises nothing here, under the registry lock.
            let costs = if changed.is_empty() {
                None
            } else {
                let old_bytes = record_bytes(node_id, old);
                let new_bytes = node_bytes(node_id, &ip_address, port, &capabilities, &merged);
                self.check_budget(old_bytes, new_bytes)?;
                Some((old_bytes, new_bytes))
            };
            if rejoining {
                self.disarm_bootstrap();
            }
            let record = self
                .nodes
                .get_mut(&node_id)
                .expect("the node was found above");
            if let Some((old_bytes, new_bytes)) = costs {
                record.info = Arc::new(NodeInfo {
                    ip_address,
                    port,
                    capabilities: self.capabilities.share(capabilities),
                    metadata: merged,
                });
                self.budget.used = self.budget.used - old_bytes + new_bytes;
            }
            let info_changed = costs.is_some();
            let recovered = record.status == NodeStatus::Suspected;
            record.status = NodeStatus::Active;
            record.last_seen = now.unix;
            record.heard_at = now.instant;
            self.touches += 1;
            if info_changed {
                self.record(Event::Updated { node_id, changed });
            }
            if recovered {
                self.record(Event::Recovered { node_id });
            }
            return Ok(Registered {
                created: false,
                is_bootstrap: false,
            });
        }

        if self.nodes.len() >= self.max_nodes {
            return Err(RegistryError::Full {
                max_nodes: self.max_nodes,
            });
        }
        let metadata = merge_metadata(&empty_object(), metadata)?;
        let bytes = node_bytes(node_id, &ip_address, port, &capabilities, &metadata);
        self.check_budget(0, bytes)?;
        if rejoining {
            self.disarm_bootstrap();
        }
        let address = crate::api::host_port(&ip_address, port);
        let is_bootstrap = self.bootstrap_armed && self.nodes.is_empty() && self.leader.is_none();
        self.nodes.insert(
            node_id,
            NodeRecord {
                node_id,
                info: Arc::new(NodeInfo {
                    ip_address,
                    port,
                    capabilities: self.capabilities.share(capabilities),
                    metadata,
                }),
                status: NodeStatus::Active,
                last_seen: now.unix,
                join_timestamp: now.unix,
                heard_at: now.instant,
            },
        );
        self.budget.used += bytes;
        self.counts.joins_total += 1;
        self.record(Event::Joined { node_id, address });
        if is_bootstrap {
            self.disarm_bootstrap();
            self.set_leader_unchecked(Some(node_id));
        }
        Ok(Registered {
            created: true,
            is_bootstrap,
        })
    }

    /// Records a heartbeat. Returns false if the node is not registered.
    ///
    /// Only a suspected node coming back changes the version; a plain heartbeat refreshes
    /// `last_seen` and nothing else.
    pub fn heartbeat(&mut self, node_id: NodeId, now: Now) -> bool {
        let Some(record) = self.nodes.get_mut(&node_id) else {
            return false;
        };
        record.last_seen = now.unix;
        record.heard_at = now.instant;
        let recovered = record.status == NodeStatus::Suspected;
        record.status = NodeStatus::Active;
        self.touches += 1;
        self.counts.heartbeats_total += 1;
        if recovered {
            self.record(Event::Recovered { node_id });
        }
        true
    }

    /// Removes a node on request. Returns false if it was not registered.
    ///
    /// When this empties the registry, the whole cluster left on purpose, so the next node to
    /// register bootstraps a new one.
    pub fn remove(&mut self, node_id: NodeId) -> bool {
        let Some(removed) = self.nodes.remove(&node_id) else {
            return false;
        };
        self.budget.used -= record_bytes(node_id, &removed.info);
        self.counts.removed_total += 1;
        self.record(Event::Left { node_id });
        if self.leader == Some(node_id) {
            self.set_leader_unchecked(None);
        }
        if self.nodes.is_empty() {
            self.bootstrap_armed = true;
        }
        self.shrink();
        true
    }

    /// Makes a registered node the leader. Returns false if it is not registered.
    pub fn set_leader(&mut self, node_id: NodeId) -> bool {
        if !self.nodes.contains_key(&node_id) {
            return false;
        }
        self.set_leader_unchecked(Some(node_id));
        true
    }

    /// Marks nodes silent for `suspect_after` as suspected and removes those silent for
    /// `node_timeout`.
    ///
    /// A registry emptied by reaping is not re-armed for bootstrap: the gateway may merely have
    /// been cut off from a cluster that is still running, and a new bootstrap node would split it.
    pub fn sweep(&mut self, now: Now) -> Swept {
        let mut swept = Swept::default();
        for record in self.nodes.values_mut() {
            let silence = now.instant.saturating_duration_since(record.heard_at);
            if silence >= self.liveness.node_timeout {
                swept.reaped.push(record.node_id);
            } else if silence >= self.liveness.suspect_after && record.status == NodeStatus::Active
            {
                record.status = NodeStatus::Suspected;
                swept.suspected.push(record.node_id);
            }
        }
        swept.suspected.sort_unstable();
        swept.reaped.sort_unstable();
        for &node_id in &swept.suspected {
            self.record(Event::Suspected { node_id });
        }
        for &node_id in &swept.reaped {
            if let Some(reaped) = self.nodes.remove(&node_id) {
                self.budget.used -= record_bytes(node_id, &reaped.info);
            }
            self.counts.reaped_total += 1;
            self.record(Event::Reaped { node_id });
            if self.leader == Some(node_id) {
                self.set_leader_unchecked(None);
            }
        }
        self.shrink();
        swept
    }

    /// The node with this id.
    pub fn get(&self, node_id: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&node_id)
    }

    /// All registered nodes, active and suspected, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// The leader's id. A leader is always a registered node.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader
    }

    /// The version of what `/nodes` and `/leader` show; it only grows.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Grows whenever anything changes, `last_seen` included.
    pub fn touches(&self) -> u64 {
        self.touches
    }

    /// True once some node has bootstrapped the cluster.
    pub fn bootstrap_initiated(&self) -> bool {
        self.bootstrap_initiated
    }

    /// True if the next node to join an empty registry will bootstrap.
    pub fn bootstrap_armed(&self) -> bool {
        self.bootstrap_armed
    }

    /// The liveness settings this registry applies.
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// Node counts and lifetime counters.
    pub fn counts(&self) -> Counts {
        let suspected = self
            .nodes
            .values()
            .filter(|r| r.status == NodeStatus::Suspected)
            .count();
        Counts {
            total_nodes: self.nodes.len(),
            active_nodes: self.nodes.len() - suspected,
            suspected_nodes: suspected,
            ..self.counts
        }
    }

    /// What each recent version changed.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The budget (`--max-registry-bytes`) and what the nodes take of it.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Takes the events queued since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The one place a visible change is recorded: bumps the version and queues the event.
    fn record(&mut self, event: Event) {
        self.version += 1;
        self.touches += 1;
        self.journal.push(self.version, event.change());
        self.events.push(event);
    }

    /// Refuses a node that would go from `old` to `new` bytes when that takes the registry past
    /// its budget; a node that does not grow always fits (its heartbeats and re-registrations
    /// go on whatever the budget).
    fn check_budget(&self, old: u64, new: u64) -> Result<(), RegistryError> {
        let budget = self.budget;
        if new > old && budget.used - old + new > budget.max {
            return Err(RegistryError::OverBudget {
                needs: new - old,
                budget,
            });
        }
        Ok(())
    }

    /// Gives back the table's room once three quarters of it is empty (a mass departure).
    fn shrink(&mut self) {
        if self.nodes.capacity() > 1024 && self.nodes.len() < self.nodes.capacity() / 4 {
            self.nodes.shrink_to(self.nodes.len() * 2);
        }
    }

    /// As if the cluster had bootstrapped: the next node to join an empty registry will not.
    fn disarm_bootstrap(&mut self) {
        self.bootstrap_armed = false;
        self.bootstrap_initiated = true;
    }

    fn set_leader_unchecked(&mut self, to: Option<NodeId>) {
        let from = self.leader;
        if from != to {
            self.leader = to;
            self.record(Event::LeaderChanged { from, to });
        }
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

/// Merges `update` into `stored` key by key (Python's `dict.update`), within the limits.
fn merge_metadata(
    stored: &RawValue,
    update: Option<Map<String, Value>>,
) -> Result<Box<RawValue>, RegistryError> {
    let update = match update {
        Some(update) if !update.is_empty() => update,
        _ => return Ok(stored.to_owned()),
    };
    let mut merged: Map<String, Value> =
        serde_json::from_str(stored.get()).expect("stored metadata is a JSON object");
    merged.extend(update);
    if merged.len() > limits::METADATA_KEYS {
        return Err(RegistryError::MetadataTooLarge(format!(
            "more than {} keys after merging with the stored metadata",
            limits::METADATA_KEYS
        )));
    }
    let text = serde_json::to_string(&merged).expect("a JSON map serialises");
    if text.len() > limits::METADATA_BYTES {
        return Err(RegistryError::MetadataTooLarge(format!(
            "more than {} bytes after merging with the stored metadata",
            limits::METADATA_BYTES
        )));
    }
    Ok(RawValue::from_string(text).expect("serde_json output is JSON"))
}

#[cfg(test)]
mod tests;
