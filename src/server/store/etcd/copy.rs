//! The gateway's copy of the registry kept in etcd, fed by the watch: every read comes from
//! here, as fast as the in-memory store.
//!
//! What etcd holds under the prefix (see [`Keys`]): one key per node (its address,
//! capabilities, metadata and join time as JSON, attached to the node's lease), the leader's id
//! (attached to the leader's lease, so it goes when the leader is reaped), and the bootstrap
//! state. What only this copy holds: when this gateway last heard from each node, and so
//! whether it suspects it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api::{NodeId, NodeStatus};
use crate::server::journal::{self, Journal};
use crate::server::registry::{Counts, Liveness, NodeInfo, NodeRecord, Now};
use crate::server::store::{Delta, Snapshot};

use super::wire::{Change, Kv};

/// The keys the registry is kept under.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Every key starts with this.
    pub prefix: Vec<u8>,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    /// Where node keys start.
    pub fn nodes(&self) -> Vec<u8> {
        [&self.prefix[..], b"nodes/"].concat()
    }

    /// The key of one node.
    pub fn node(&self, node_id: NodeId) -> Vec<u8> {
        [&self.prefix[..], b"nodes/", node_id.to_string().as_bytes()].concat()
    }

    /// The leader's id.
    pub fn leader(&self) -> Vec<u8> {
        [&self.prefix[..], b"leader"].concat()
    }

    /// `armed` or `disarmed`; absent in a registry no node ever joined.
    pub fn bootstrap(&self) -> Vec<u8> {
        [&self.prefix[..], b"bootstrap"].concat()
    }

    fn node_id(&self, key: &[u8]) -> Option<NodeId> {
        let rest = key.strip_prefix(&self.nodes()[..])?;
        std::str::from_utf8(rest).ok()?.parse().ok()
    }
}

/// A node's value in etcd.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    /// Address peers reach it at.
    pub ip_address: String,
    /// Port peers reach it at.
    pub port: u16,
    /// What it offers.
    pub capabilities: Vec<String>,
    /// Its metadata, a JSON object.
    pub metadata: Box<RawValue>,
    /// Wall-clock time of its first registration.
    pub join_timestamp: f64,
}

impl Stored {
    /// The value for `info`.
    pub fn encode(info: &NodeInfo, join_timestamp: f64) -> Vec<u8> {
        serde_json::to_vec(&Stored {
            ip_address: info.ip_address.clone(),
            port: info.port,
            capabilities: info.capabilities.to_vec(),
            metadata: info.metadata.clone(),
            join_timestamp,
        })
        .expect("a node serialises")
    }

    /// The node a value holds; `None` if it holds none.
    pub fn decode(value: &[u8]) -> Option<(NodeInfo, f64)> {
        let stored: Stored = serde_json::from_slice(value).ok()?;
        Some((
            NodeInfo {
                ip_address: stored.ip_address,
                port: stored.port,
                capabilities: stored.capabilities.into(),
                metadata: stored.metadata,
            },
            stored.join_timestamp,
        ))
    }
}

/// One node in the copy.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The node as `/nodes` shows it.
    pub record: NodeRecord,
    /// The revision that created its key: a node removed and registered again is another key.
    pub create_revision: i64,
    /// The revision of the last change to its key.
    pub mod_revision: i64,
    /// Its lease.
    pub lease: i64,
    /// When this gateway last sent a renewal of its lease that etcd confirmed.
    pub renewed: Option<std::time::Instant>,
    /// True once this gateway heard from it (a heartbeat or a registration through it): only
    /// then may this gateway suspect it.
    pub heard_here: bool,
}

/// The bootstrap state as etcd holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// The revision of its key (0: absent).
    pub mod_revision: i64,
    /// True if the next node to join an empty registry bootstraps.
    pub armed: bool,
    /// True once some node bootstrapped (or a rejoining node disarmed bootstrap).
    pub initiated: bool,
}

impl Bootstrap {
    /// The state a key holds (`None`: absent).
    pub fn of(kv: Option<&Kv>) -> Bootstrap {
        match kv {
            None => Bootstrap {
                mod_revision: 0,
                armed: true,
                initiated: false,
            },
            Some(kv) => Bootstrap {
                mod_revision: kv.mod_revision,
                armed: kv.value == b"armed",
                initiated: true,
            },
        }
    }
}

/// The registry as this gateway last saw it in etcd.
#[derive(Debug)]
pub struct Copy {
    keys: Keys,
    liveness: Liveness,
    /// The etcd revision the copy reflects; 0 until it is first loaded.
    pub revision: i64,
    /// True once loaded from etcd.
    pub loaded: bool,
    /// How many keys are under the prefix at `revision` (the freshness probe compares it with
    /// etcd's count to notice deletions the watch has not shown).
    pub held: i64,
    /// Every node.
    pub nodes: HashMap<NodeId, Entry>,
    /// The leader's id and the revision of its key.
    pub leader: Option<(NodeId, i64)>,
    /// The bootstrap state.
    pub bootstrap: Bootstrap,
    /// Visible changes made here alone (suspicion); added to the revision for
    /// `registry_version`, which then still only grows.
    pub local_changes: u64,
    /// Grows with every change, `last_seen` included.
    pub touches: u64,
    /// What this gateway did and saw.
    pub counts: Counts,
    /// Nodes this gateway removed whose deletion the watch has not shown yet.
    pub removing: HashSet<NodeId>,
    /// What each recent version changed.
    journal: Journal,
    /// Changes seen in a watch batch, written to the journal with the batch's version.
    seen: Vec<journal::Change>,
}

impl Copy {
    /// An empty copy, not loaded yet.
    pub fn new(keys: Keys, liveness: Liveness) -> Copy {
        Copy {
            keys,
            liveness,
            revision: 0,
            loaded: false,
            held: 0,
            nodes: HashMap::new(),
            leader: None,
            bootstrap: Bootstrap::of(None),
            local_changes: 0,
            touches: 0,
            counts: Counts::default(),
            removing: HashSet::new(),
            journal: Journal::new(0),
            seen: Vec::new(),
        }
    }

    /// `registry_version`: the etcd revision plus the changes made here alone.
    pub fn version(&self) -> u64 {
        self.revision.max(0) as u64 + self.local_changes
    }

    /// The leader, if it is a node in the copy.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader
            .map(|(id, _)| id)
            .filter(|id| self.nodes.contains_key(id))
    }

    /// A consistent view for the node lists.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version(),
            touches: self.touches,
            leader: self.leader_id(),
            records: self.nodes.values().map(|e| e.record.clone()).collect(),
        }
    }

    /// What changed after `since` (see [`crate::server::store::Store::delta`]).
    pub fn delta(&self, since: u64, max_changes: usize) -> Option<Delta> {
        let now = (self.version(), self.touches, self.leader_id());
        Delta::gather(&self.journal, since, max_changes, now, |id| {
            self.nodes.get(&id).map(|e| &e.record)
        })
    }

    /// Writes what was seen to the journal, with the version it led to.
    fn journal_seen(&mut self) {
        let version = self.version();
        for change in self.seen.drain(..) {
            self.journal.push(version, change);
        }
    }

    /// Node counts and this gateway's counters.
    pub fn counts(&self) -> Counts {
        let suspected = self
            .nodes
            .values()
            .filter(|e| e.record.status == NodeStatus::Suspected)
            .count();
        Counts {
            total_nodes: self.nodes.len(),
            active_nodes: self.nodes.len() - suspected,
            suspected_nodes: suspected,
            ..self.counts
        }
    }

    /// Replaces the copy with everything under the prefix at `revision` (a fresh range), keeping
    /// what this gateway knows of the nodes that are still the same keys.
    pub fn reload(&mut self, kvs: &[Kv], revision: i64, now: Now) {
        if self.loaded && revision <= self.revision {
            return;
        }
        let mut seen = HashSet::new();
        let mut leader = None;
        let mut bootstrap = None;
        for kv in kvs {
            if let Some(id) = self.keys.node_id(&kv.key) {
                seen.insert(id);
                let same = self
                    .nodes
                    .get(&id)
                    .is_some_and(|e| e.mod_revision == kv.mod_revision);
                if !same {
                    self.put_node(id, kv, now);
                }
            } else if kv.key == self.keys.leader() {
                leader = Some(kv);
            } else if kv.key == self.keys.bootstrap() {
                bootstrap = Some(kv);
            }
        }
        let gone: Vec<NodeId> = self
            .nodes
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.delete_node(id);
        }
        self.set_leader(leader);
        self.bootstrap = Bootstrap::of(bootstrap);
        self.revision = revision;
        self.loaded = true;
        self.held = kvs.len() as i64;
        self.touches += 1;
        // What the reload changed is not known change by change: only a full list shows it.
        self.seen.clear();
        self.journal.restart(self.version());
    }

    /// Applies what a watch reported, up to `revision`; changes the copy already reflects (it
    /// was reloaded past them) are skipped.
    pub fn apply(&mut self, changes: &[Change], revision: i64, now: Now) {
        for change in changes {
            let (kv, deleted) = match change {
                Change::Put(kv) => (kv, false),
                Change::Delete(kv) => (kv, true),
            };
            if kv.mod_revision <= self.revision {
                continue;
            }
            if deleted {
                self.held -= 1;
            } else if kv.create_revision == kv.mod_revision {
                self.held += 1;
            }
            if let Some(id) = self.keys.node_id(&kv.key) {
                if deleted {
                    self.delete_node(id);
                } else {
                    self.put_node(id, kv, now);
                }
            } else if kv.key == self.keys.leader() {
                self.set_leader((!deleted).then_some(kv));
            } else if kv.key == self.keys.bootstrap() {
                self.bootstrap = Bootstrap::of((!deleted).then_some(kv));
            }
            self.touches += 1;
        }
        self.revision = self.revision.max(revision);
        self.journal_seen();
    }

    /// Applies this gateway's own write at `revision` (its puts, as etcd took them), if the
    /// copy is at the revision just before it: nothing else happened in between, and the watch
    /// will show exactly these puts (and skip them, as [`Copy::apply`] skips what it holds).
    /// Otherwise false, changing nothing: a revision the copy has not seen lies in between,
    /// and the copy must not move past it.
    pub fn written(&mut self, puts: &[Change], revision: i64, now: Now) -> bool {
        if !self.loaded || self.revision != revision - 1 {
            return false;
        }
        self.apply(puts, revision, now);
        true
    }

    /// Records that this gateway heard from `node_id` (a heartbeat or a registration through
    /// it): the node is active here again. False if the copy does not hold it.
    pub fn heard(&mut self, node_id: NodeId, now: Now) -> bool {
        let Some(entry) = self.nodes.get_mut(&node_id) else {
            return false;
        };
        entry.heard_here = true;
        entry.record.last_seen = now.unix;
        entry.record.heard_at = now.instant;
        self.touches += 1;
        if entry.record.status == NodeStatus::Suspected {
            entry.record.status = NodeStatus::Active;
            self.local_changes += 1;
            self.journal
                .push(self.version(), journal::Change::Recovered(node_id));
            log::info!("node {node_id} heard from again");
        }
        true
    }

    /// Suspects the nodes this gateway heard from and then not for `suspect_after`. Reaping is
    /// etcd's: a node's lease expires `node_timeout` after the last renewal by any gateway.
    pub fn sweep(&mut self, now: Now) {
        let mut suspected = Vec::new();
        for entry in self.nodes.values_mut() {
            let silence = now.instant.saturating_duration_since(entry.record.heard_at);
            if entry.heard_here
                && entry.record.status == NodeStatus::Active
                && silence >= self.liveness.suspect_after
            {
                entry.record.status = NodeStatus::Suspected;
                suspected.push(entry.record.node_id);
            }
        }
        suspected.sort_unstable();
        for node_id in suspected {
            self.local_changes += 1;
            self.touches += 1;
            self.journal
                .push(self.version(), journal::Change::Suspected(node_id));
            log::info!("node {node_id} suspected: silent");
        }
    }

    fn put_node(&mut self, node_id: NodeId, kv: &Kv, now: Now) {
        let Some((info, join_timestamp)) = Stored::decode(&kv.value) else {
            log::warn!(
                "etcd key {} does not hold a node; ignored",
                String::from_utf8_lossy(&kv.key)
            );
            return;
        };
        match self.nodes.get_mut(&node_id) {
            Some(entry) if entry.create_revision == kv.create_revision => {
                // A registration through some gateway: the node was heard from just now.
                if *entry.record.info != info {
                    entry.record.info = Arc::new(info);
                    self.seen.push(journal::Change::Updated(node_id));
                    log::info!("node {node_id} re-registered with changes");
                }
                if entry.record.status == NodeStatus::Suspected {
                    entry.record.status = NodeStatus::Active;
                    self.seen.push(journal::Change::Recovered(node_id));
                    log::info!("node {node_id} heard from again");
                }
                entry.record.last_seen = now.unix;
                entry.record.heard_at = now.instant;
                entry.mod_revision = kv.mod_revision;
                if entry.lease != kv.lease {
                    entry.renewed = None;
                }
                entry.lease = kv.lease;
            }
            _ => {
                let address = crate::api::host_port(&info.ip_address, info.port);
                log::info!("node {node_id} joined at {address}");
                if self.nodes.contains_key(&node_id) {
                    // The same id under a new key: the node left and joined again.
                    self.seen.push(journal::Change::Left(node_id));
                }
                self.seen.push(journal::Change::Joined(node_id));
                self.nodes.insert(
                    node_id,
                    Entry {
                        record: NodeRecord {
                            node_id,
                            info: Arc::new(info),
                            status: NodeStatus::Active,
                            last_seen: now.unix,
                            join_timestamp,
                            heard_at: now.instant,
                        },
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        lease: kv.lease,
                        renewed: None,
                        heard_here: false,
                    },
                );
            }
        }
    }

    fn delete_node(&mut self, node_id: NodeId) {
        if self.nodes.remove(&node_id).is_none() {
            return;
        }
        if self.removing.remove(&node_id) {
            self.seen.push(journal::Change::Left(node_id));
            log::info!("node {node_id} left");
        } else {
            self.counts.reaped_total += 1;
            self.seen.push(journal::Change::Reaped(node_id));
            log::info!("node {node_id} left through another gateway or was reaped after silence");
        }
    }

    fn set_leader(&mut self, kv: Option<&Kv>) {
        let to = kv.and_then(|kv| {
            let id = std::str::from_utf8(&kv.value).ok()?.parse().ok()?;
            Some((id, kv.mod_revision))
        });
        let (from, now) = (self.leader.map(|l| l.0), to.map(|l| l.0));
        self.leader = to;
        if from != now {
            self.seen.push(journal::Change::Leader(now));
            match now {
                Some(id) => log::info!("leader is now node {id} (was {from:?})"),
                None => log::info!("no leader (was {from:?})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn keys() -> Keys {
        Keys::new("/p/")
    }

    fn node(id: NodeId, create: i64, revision: i64, port: u16) -> Kv {
        let info = NodeInfo {
            ip_address: "10.0.0.1".to_owned(),
            port,
            capabilities: vec!["raft".to_owned()].into(),
            metadata: RawValue::from_string("{}".to_owned()).unwrap(),
        };
        Kv {
            key: keys().node(id),
            value: Stored::encode(&info, 100.0),
            create_revision: create,
            mod_revision: revision,
            lease: 7,
        }
    }

    fn leader(id: NodeId, revision: i64) -> Kv {
        Kv {
            key: keys().leader(),
            value: id.to_string().into_bytes(),
            create_revision: revision,
            mod_revision: revision,
            lease: 7,
        }
    }

    fn liveness() -> Liveness {
        Liveness {
            suspect_after: Duration::from_secs(3),
            node_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn watch_events_the_copy_already_reflects_are_skipped() {
        let now = Now::system();
        let mut copy = Copy::new(keys(), liveness());
        copy.reload(&[node(1, 2, 5, 5001), leader(1, 3)], 5, now);
        assert_eq!((copy.version(), copy.leader_id()), (5, Some(1)));
        // A watch that resumed from an older revision replays changes up to 5: ignored.
        copy.apply(&[Change::Delete(node(1, 0, 4, 0))], 5, now);
        assert!(copy.nodes.contains_key(&1));
        // Newer ones apply: node 1 changes port, the leader key goes, the version follows.
        copy.apply(
            &[
                Change::Put(node(1, 2, 6, 6001)),
                Change::Delete(leader(1, 7)),
            ],
            7,
            now,
        );
        assert_eq!(copy.nodes[&1].record.info.port, 6001);
        assert_eq!((copy.version(), copy.leader_id()), (7, None));
        // The keys held follow: two loaded, an update is no new key, a deletion one fewer, a
        // creation one more (what the freshness probe compares with etcd's count).
        assert_eq!(copy.held, 1);
        copy.apply(&[Change::Put(node(2, 8, 8, 5002))], 8, now);
        assert_eq!(copy.held, 2);
    }

    #[test]
    fn a_write_of_this_gateway_is_shown_only_when_no_revision_lies_between() {
        let now = Now::system();
        let mut copy = Copy::new(keys(), liveness());
        copy.reload(&[node(1, 2, 5, 5001)], 5, now);
        // Revision 6 (another gateway's change of node 1) has not come through the watch:
        // showing our write at 7 now would move the copy past 6, and the watch's replay of
        // 6 would then be skipped for good.
        assert!(!copy.written(&[Change::Put(node(2, 7, 7, 5002))], 7, now));
        assert_eq!(copy.revision, 5);
        assert!(!copy.nodes.contains_key(&2));
        copy.apply(&[Change::Put(node(1, 2, 6, 6001))], 6, now);
        assert_eq!(copy.nodes[&1].record.info.port, 6001);
        // Now 7 directly follows: shown at once, as the watch would show it.
        assert!(copy.written(&[Change::Put(node(2, 7, 7, 5002))], 7, now));
        assert_eq!((copy.revision, copy.held), (7, 2));
        assert_eq!(copy.nodes[&2].record.info.port, 5002);
        // The watch brings 7 back later: nothing changes twice.
        let touches = copy.touches;
        copy.apply(&[Change::Put(node(2, 7, 7, 5002))], 7, now);
        assert_eq!((copy.version(), copy.touches, copy.held), (7, touches, 2));
        // Never before the registry was read.
        let mut empty = Copy::new(keys(), liveness());
        assert!(!empty.written(&[Change::Put(node(2, 1, 1, 5002))], 1, now));
    }

    #[test]
    fn suspicion_is_local_and_a_fresh_range_keeps_what_this_gateway_heard() {
        let start = Now::system();
        let mut copy = Copy::new(keys(), liveness());
        copy.reload(&[node(1, 2, 2, 5001), node(2, 3, 3, 5002)], 3, start);
        assert!(copy.heard(1, start));
        let later = Now {
            instant: start.instant + Duration::from_secs(4),
            unix: start.unix + 4.0,
        };
        copy.sweep(later);
        // Heard here and then silent: suspected; never heard here: left to its lease.
        assert_eq!(copy.nodes[&1].record.status, NodeStatus::Suspected);
        assert_eq!(copy.nodes[&2].record.status, NodeStatus::Active);
        assert_eq!(copy.version(), 3 + 1, "a local suspicion moves the version");
        // A fresh range at a newer revision without node 2 drops it and keeps node 1 as seen.
        copy.reload(&[node(1, 2, 2, 5001)], 9, later);
        assert_eq!(copy.nodes[&1].record.status, NodeStatus::Suspected);
        assert!(!copy.nodes.contains_key(&2));
        assert_eq!(copy.counts().reaped_total, 1);
        // A range older than the copy changes nothing.
        copy.reload(&[], 8, later);
        assert!(copy.nodes.contains_key(&1));
    }

    #[test]
    fn the_journal_follows_watch_batches_and_local_suspicion() {
        use crate::server::journal::Change as Seen;
        let start = Now::system();
        let mut copy = Copy::new(keys(), liveness());
        copy.reload(&[node(1, 2, 2, 5001), leader(1, 3)], 3, start);
        assert!(copy.delta(2, 100).is_none(), "nothing before a reload");
        copy.apply(
            &[
                Change::Put(node(2, 4, 4, 5002)),
                Change::Put(node(1, 2, 5, 6001)),
            ],
            5,
            start,
        );
        assert!(copy.heard(1, start));
        let later = Now {
            instant: start.instant + Duration::from_secs(4),
            unix: start.unix + 4.0,
        };
        copy.sweep(later);
        copy.removing.insert(2);
        copy.apply(
            &[
                Change::Delete(node(2, 0, 6, 0)),
                Change::Delete(leader(1, 7)),
            ],
            7,
            later,
        );
        let delta = copy.delta(3, 100).unwrap();
        assert_eq!(
            delta.changes,
            vec![
                (5, Seen::Joined(2)),
                (5, Seen::Updated(1)),
                (6, Seen::Suspected(1)),
                (8, Seen::Left(2)),
                (8, Seen::Leader(None)),
            ]
        );
        assert_eq!((delta.version, delta.leader), (copy.version(), None));
        let records: Vec<_> = delta.records.iter().map(|r| r.node_id).collect();
        assert_eq!(records, vec![1], "the changed nodes still there, once each");
        assert!(copy.delta(3, 4).is_none(), "more changes than asked for");
    }
}
