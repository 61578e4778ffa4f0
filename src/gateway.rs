//! The gateway's shared state: the registry behind its lock, the cached peer list, and the one
//! place where changes are announced.
//!
//! [`Gateway`] is the small interface the HTTP layer talks to. It never holds the registry lock
//! across serialisation or I/O: a list is rebuilt from a snapshot (a reference count per node)
//! taken under the lock, then serialised once and shared by every request until the registry
//! changes.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{NodeId, NodeStatus, Registration, Settings, Stats};
use crate::lock;
use crate::registry::{Event, NodeInfo, NodeRecord, Now, Registered, Registry, RegistryError};

/// How stale `last_seen` inside a cached list may get before the list is rebuilt.
pub const LIST_MAX_AGE: Duration = Duration::from_secs(1);

/// The registry and everything derived from it, shared by all request handlers.
#[derive(Debug)]
pub struct Gateway {
    registry: Mutex<Registry>,
    lists: Mutex<Option<Arc<NodeList>>>,
    epoch: String,
    started: Instant,
    heartbeat_interval: Duration,
}

impl Gateway {
    /// A gateway around `registry`; `heartbeat_interval` is reported in `/stats`.
    pub fn new(registry: Registry, heartbeat_interval: Duration) -> Gateway {
        Gateway {
            registry: Mutex::new(registry),
            lists: Mutex::new(None),
            epoch: new_epoch(),
            started: Instant::now(),
            heartbeat_interval,
        }
    }

    /// Id of this gateway run: it changes on every start.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The liveness settings advertised to nodes.
    pub fn settings(&self) -> Settings {
        let liveness = lock(&self.registry).liveness();
        Settings {
            heartbeat_interval: Some(self.heartbeat_interval.as_secs_f64()),
            suspect_after: Some(liveness.suspect_after.as_secs_f64()),
            node_timeout: Some(liveness.node_timeout.as_secs_f64()),
        }
    }

    /// Registers or updates a node.
    pub fn register(&self, reg: Registration) -> Result<Registered, RegistryError> {
        let now = Now::system();
        self.with_registry(|r| r.register(reg, now))
    }

    /// Records a heartbeat; `None` if the node is not registered, else the registry version.
    pub fn heartbeat(&self, node_id: NodeId) -> Option<u64> {
        let now = Now::system();
        self.with_registry(|r| r.heartbeat(node_id, now).then(|| r.version()))
    }

    /// Removes a node; false if it was not registered.
    pub fn remove(&self, node_id: NodeId) -> bool {
        self.with_registry(|r| r.remove(node_id))
    }

    /// Makes a registered node leader; false if it is not registered.
    pub fn set_leader(&self, node_id: NodeId) -> bool {
        self.with_registry(|r| r.set_leader(node_id))
    }

    /// Suspects and reaps silent nodes.
    pub fn sweep(&self, now: Now) {
        self.with_registry(|r| r.sweep(now));
    }

    /// The current node list, rebuilt if the registry changed or `last_seen` values in it are
    /// older than [`LIST_MAX_AGE`].
    pub fn list(&self) -> Arc<NodeList> {
        let mut cached = lock(&self.lists);
        let (version, touches) = {
            let registry = lock(&self.registry);
            (registry.version(), registry.touches())
        };
        if let Some(list) = cached.as_ref() {
            let fresh = list.touches == touches || list.built.elapsed() < LIST_MAX_AGE;
            if list.version == version && fresh {
                return Arc::clone(list);
            }
        }
        // Holding the cache lock while building makes concurrent readers wait for this build
        // instead of each building their own; the registry lock is held only for the snapshot.
        let list = Arc::new(NodeList::build(&self.registry));
        *cached = Some(Arc::clone(&list));
        list
    }

    /// Counters for `/stats`.
    pub fn stats(&self) -> Stats {
        let registry = lock(&self.registry);
        let counts = registry.counts();
        let liveness = registry.liveness();
        Stats {
            total_nodes: counts.total_nodes,
            active_nodes: counts.active_nodes,
            suspected_nodes: counts.suspected_nodes,
            leader_id: registry.leader_id(),
            registry_version: registry.version(),
            bootstrap_initiated: registry.bootstrap_initiated(),
            bootstrap_armed: registry.bootstrap_armed(),
            uptime: self.started.elapsed().as_secs_f64(),
            joins_total: counts.joins_total,
            removed_total: counts.removed_total,
            reaped_total: counts.reaped_total,
            heartbeats_total: counts.heartbeats_total,
            suspect_after: liveness.suspect_after.as_secs_f64(),
            node_timeout: liveness.node_timeout.as_secs_f64(),
            heartbeat_interval: self.heartbeat_interval.as_secs_f64(),
            version: crate::VERSION.to_owned(),
            epoch: self.epoch.clone(),
        }
    }

    /// Runs `f` under the registry lock, then announces what it changed, after the lock is
    /// released.
    fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let (result, events) = {
            let mut registry = lock(&self.registry);
            let result = f(&mut registry);
            (result, registry.take_events())
        };
        announce(&events);
        result
    }
}

/// The one place a change to the registry is announced. Today: the log. Watches and metrics
/// hook in here.
fn announce(events: &[Event]) {
    for event in events {
        match event {
            Event::Joined { node_id, address } => log::info!("node {node_id} joined at {address}"),
            Event::Updated { node_id } => log::info!("node {node_id} re-registered with changes"),
            Event::Left { node_id } => log::info!("node {node_id} left"),
            Event::Reaped { node_id } => log::info!("node {node_id} reaped after silence"),
            Event::Suspected { node_id } => log::info!("node {node_id} suspected: silent"),
            Event::Recovered { node_id } => log::info!("node {node_id} heard from again"),
            Event::LeaderChanged { from, to } => match to {
                Some(to) => log::info!("leader is now node {to} (was {from:?})"),
                None => log::info!("no leader (was {from:?})"),
            },
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

/// Every registered node serialised once, by node id, as one JSON array.
///
/// Answers are cut from it: a list without one node is the bytes before it and the bytes after
/// it, so the common request costs two copies, not a serialisation.
#[derive(Debug)]
pub struct NodeList {
    /// The registry version this list shows.
    pub version: u64,
    /// The leader, if any (always one of `entries`).
    pub leader: Option<NodeId>,
    touches: u64,
    built: Instant,
    /// `[node,node,...]` for every node, active and suspected.
    json: Vec<u8>,
    entries: Vec<Entry>,
    suspected: usize,
}

#[derive(Debug)]
struct Entry {
    node_id: NodeId,
    status: NodeStatus,
    info: Arc<NodeInfo>,
    /// Where this node's object sits in `json`.
    start: usize,
    end: usize,
}

/// Which nodes a list answer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter<'a> {
    /// Leave this node out (the asker itself).
    pub exclude: Option<NodeId>,
    /// Include suspected nodes too.
    pub include_suspected: bool,
    /// Only nodes offering this capability.
    pub capability: Option<&'a str>,
}

impl NodeList {
    fn build(registry: &Mutex<Registry>) -> NodeList {
        let (version, touches, leader, mut records) = {
            let registry = lock(registry);
            let records: Vec<NodeRecord> = registry.nodes().cloned().collect();
            (
                registry.version(),
                registry.touches(),
                registry.leader_id(),
                records,
            )
        };
        records.sort_unstable_by_key(|r| r.node_id);
        let mut json = Vec::with_capacity(2 + records.len() * 200);
        let mut entries = Vec::with_capacity(records.len());
        json.push(b'[');
        for (i, record) in records.into_iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let start = json.len();
            serde_json::to_writer(&mut json, &record).expect("a node record serialises");
            entries.push(Entry {
                node_id: record.node_id,
                status: record.status,
                info: record.info,
                start,
                end: json.len(),
            });
        }
        json.push(b']');
        let suspected = entries
            .iter()
            .filter(|e| e.status == NodeStatus::Suspected)
            .count();
        NodeList {
            version,
            leader,
            touches,
            built: Instant::now(),
            json,
            entries,
            suspected,
        }
    }

    /// The JSON array of the nodes that pass `filter`, as pieces of the cached bytes.
    pub fn select(&self, filter: Filter<'_>) -> Vec<Part> {
        let plain =
            filter.capability.is_none() && (filter.include_suspected || self.suspected == 0);
        if plain {
            return self.without(filter.exclude);
        }
        let mut parts = vec![Part::Static(b"[")];
        let picked = self.entries.iter().filter(|e| {
            Some(e.node_id) != filter.exclude
                && (filter.include_suspected || e.status == NodeStatus::Active)
                && filter
                    .capability
                    .is_none_or(|c| e.info.capabilities.iter().any(|have| have == c))
        });
        for (i, entry) in picked.enumerate() {
            if i > 0 {
                parts.push(Part::Static(b","));
            }
            parts.push(Part::Cached(entry.start..entry.end));
        }
        parts.push(Part::Static(b"]"));
        parts
    }

    /// The JSON object of one node, if registered.
    pub fn node(&self, node_id: NodeId) -> Option<Part> {
        let i = self.position(node_id)?;
        Some(Part::Cached(self.entries[i].start..self.entries[i].end))
    }

    /// The bytes a [`Part::Cached`] points at.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.json[range]
    }

    fn position(&self, node_id: NodeId) -> Option<usize> {
        self.entries
            .binary_search_by_key(&node_id, |e| e.node_id)
            .ok()
    }

    /// The whole array, less one node: the bytes before it and the bytes after it.
    fn without(&self, exclude: Option<NodeId>) -> Vec<Part> {
        let whole = 0..self.json.len();
        let Some(i) = exclude.and_then(|id| self.position(id)) else {
            return vec![Part::Cached(whole)];
        };
        let entry = &self.entries[i];
        let (before, after) = if self.entries.len() == 1 {
            (1, self.json.len() - 1)
        } else if i == 0 {
            // Drop the node and the comma after it.
            (entry.start, entry.end + 1)
        } else {
            // Drop the comma before the node and the node.
            (entry.start - 1, entry.end)
        };
        vec![Part::Cached(0..before), Part::Cached(after..whole.end)]
    }
}

/// A piece of an answer body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Fixed bytes.
    Static(&'static [u8]),
    /// Bytes of a [`NodeList`]'s cached JSON.
    Cached(Range<usize>),
    /// Bytes made for this answer.
    Owned(Vec<u8>),
}
