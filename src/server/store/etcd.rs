//! [`EtcdStore`]: the registry kept in etcd, shared by any number of gateways.
//!
//! Writes are etcd transactions; reads come from this gateway's [`Copy`], fed by a watch.
//! - **Bootstrap, leader, rejoin**: every decision a write makes rests on what it read (the
//!   node's key, the leader key, the bootstrap key, whether the registry is empty), and the
//!   transaction compares exactly those. If another gateway changed one of them in between, the
//!   transaction fails, its failure branch reads them afresh, and the write decides again. A
//!   bootstrap writes the bootstrap key, so of any number of racing bootstraps one succeeds.
//! - **Grouped registrations**: registrations that arrive together and each write only their
//!   own node's key go as one transaction holding every one's compares (`etcd/group.rs`); if
//!   it fails, the members whose node key did not move go again as a group, and the others
//!   each run their own. One that could bootstrap is never grouped, and a node is in one
//!   group at a time.
//! - **Liveness**: each node has a lease of `node_timeout` + `RENEW_SLACK` (1 s); its key (and the
//!   leader key, if it leads) is attached to it, so etcd reaps a node every gateway stopped
//!   hearing from. Heartbeats renew leases in groups, as a group commit: a heartbeat waits for
//!   the next group (every lease whose node beat meanwhile, 16 to a keepalive POST), unless its
//!   lease was confirmed renewed less than `RENEW_SLACK` ago; past half the slack it has the
//!   lease join the next group without waiting. Never one etcd request per heartbeat.
//! - **Suspicion is local**: a gateway suspects a node it heard from (a heartbeat or a
//!   registration through it) and then not for `suspect_after`; a node that beats through
//!   another gateway is never suspected here. `registry_version` is the etcd revision plus this
//!   gateway's own suspicion changes: it only grows.
//! - **Cut off from etcd, or a silent watch**: a write etcd does not take answers 503
//!   ([`StoreError::Unavailable`]). A probe checks every second that the copy shows etcd's
//!   revision (`etcd/fresh.rs`); a copy not shown current for 3 s is stale, and reads and writes
//!   answer 503 (`/health`, `/stats` and `/metrics` still answer, and say why) until the watch,
//!   started afresh, catches up. Before the registry is first read, reads and writes answer 503
//!   too: never an empty registry that was not read.
//! - **Long-polls**: the watch thread calls the change hook ([`EtcdStore::on_change`]) when what
//!   it applied moved the registry version, so parked long-polls wake within milliseconds.
//! - **Reads after writes**: a write is answered only once the copy shows its revision, so
//!   any read after its answer includes it. A group of registrations whose revision directly
//!   follows the copy's is shown in the copy from the transaction's answer, without waiting
//!   for the watch to bring it back. A registration that goes with a group holds no worker
//!   until then (`etcd/register.rs`): its answer, made when it was decided, shows the registry
//!   as it was then (the registrant's own node is left out of it anyway).

mod copy;
mod fresh;
mod group;
mod register;
mod renew;
mod ticket;
mod watch;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{NodeId, Registration};
use crate::lock;
use crate::server::registry::{Liveness, Now, Registered, unix_now};

use super::{Delta, Durability, Pending, Settled, Snapshot, Store, StoreError, Summary};
use copy::{Bootstrap, Copy, Keys, Stored};
use group::Groups;
use renew::Renewals;
pub(crate) use ticket::Ticket;
use wire::{Etcd, Kv};

/// The prefix every key of the registry starts with.
pub const PREFIX: &str = "/cluster-gateway/";

/// How long a write waits for the watch to show its revision before reading it afresh.
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// How often a transaction is retried when other gateways keep changing what it rests on.
const ATTEMPTS: usize = 16;

/// A heartbeat whose node's lease was renewed less than this ago is acknowledged without
/// waiting for another renewal; leases last `node_timeout` plus this, so a node is never
/// reaped sooner than `node_timeout` after a heartbeat acknowledged, and at most this later.
const RENEW_SLACK: Duration = Duration::from_secs(1);

/// How long [`EtcdStore::open`] waits for the first read of the registry.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// What [`EtcdStore::on_change`] calls: the registry version after a change.
pub type ChangeHook = Box<dyn Fn(u64) + Send + Sync>;

/// The registry in etcd; see the module docs.
#[derive(Debug)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

/// A [`ChangeHook`] that can be debug-printed.
struct HookBox(ChangeHook);

impl std::fmt::Debug for HookBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeHook")
    }
}

#[derive(Debug)]
struct Shared {
    etcd: Etcd,
    keys: Keys,
    liveness: Liveness,
    max_nodes: usize,
    copy: Mutex<Copy>,
    /// Notified whenever the copy's revision grows.
    applied: Condvar,
    renewals: Mutex<Renewals>,
    renewed: Condvar,
    /// Registrations sent to etcd together (`etcd/group.rs`).
    groups: Mutex<Groups>,
    grouped: Condvar,
    /// Registrations deciding again on a thread of their own after their group failed (at
    /// most `register::MAX_ALONE`).
    alone: AtomicUsize,
    /// Why etcd cannot be used, and since when (Unix seconds); `None` while it answers.
    cut_off: Mutex<Option<(String, f64)>>,
    /// True while a thread probes etcd until it answers again.
    probing: AtomicBool,
    /// Why the copy is stale, and since when (Unix seconds): set and cleared by the freshness
    /// probe (`fresh.rs`); reads and writes are refused while it is set.
    stale: Mutex<Option<(String, f64)>>,
    /// While stale: the etcd revision the probe last saw ahead of the copy; the watch clears
    /// the mark itself once the copy reaches it (`i64::MAX`: only the probe clears it).
    caught_up_at: AtomicI64,
    /// The watch thread that is current; an older one ends when it next wakes.
    watch_generation: AtomicU64,
    /// Told of every change of the registry version the copy makes, outside its lock.
    hook: OnceLock<HookBox>,
    stopping: AtomicBool,
    /// When the store was opened (Unix seconds).
    opened: f64,
}

impl EtcdStore {
    /// A store over the etcd members at `endpoints`, keeping the registry under `prefix`. Waits
    /// a few seconds for the first read; if etcd does not answer, the store starts cut off
    /// (reads and writes 503) and catches up when it does.
    pub fn open(
        endpoints: Vec<String>,
        prefix: &str,
        liveness: Liveness,
        max_nodes: usize,
    ) -> EtcdStore {
        let keys = Keys::new(prefix);
        let shared = Arc::new(Shared {
            etcd: Etcd::new(endpoints),
            keys: keys.clone(),
            liveness,
            max_nodes,
            copy: Mutex::new(Copy::new(keys, liveness)),
            applied: Condvar::new(),
            renewals: Mutex::new(Renewals::default()),
            renewed: Condvar::new(),
            groups: Mutex::new(Groups::default()),
            grouped: Condvar::new(),
            alone: AtomicUsize::new(0),
            cut_off: Mutex::new(None),
            probing: AtomicBool::new(false),
            stale: Mutex::new(None),
            caught_up_at: AtomicI64::new(i64::MAX),
            watch_generation: AtomicU64::new(0),
            hook: OnceLock::new(),
            stopping: AtomicBool::new(false),
            opened: unix_now(),
        });
        shared.start_watch();
        shared.start_probe();
        let deadline = Instant::now() + OPEN_WAIT;
        let mut copy = lock(&shared.copy);
        while !copy.loaded && Instant::now() < deadline {
            let wait = deadline.saturating_duration_since(Instant::now());
            copy = shared
                .applied
                .wait_timeout(copy, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if !copy.loaded {
            log::warn!(
                "etcd at {} does not answer yet; writes are refused until it does",
                shared.etcd.endpoints()
            );
        }
        drop(copy);
        EtcdStore { shared }
    }

    /// Calls `hook` with the new registry version whenever the copy's changes (from the watch,
    /// a fresh read, or local suspicion), outside the copy's lock (once: a second call is
    /// ignored).
    pub fn on_change(self, hook: ChangeHook) -> EtcdStore {
        let _ = self.shared.hook.set(HookBox(hook));
        self
    }

    /// Why reads or writes are refused, if they are (etcd cut off, the copy stale, or not
    /// read yet), and since when (Unix seconds).
    pub fn cut_off(&self) -> Option<(String, f64)> {
        if !lock(&self.shared.copy).loaded {
            return Some((
                "the registry was not read from etcd yet".to_owned(),
                self.shared.opened,
            ));
        }
        let stale = lock(&self.shared.stale)
            .clone()
            .map(|(why, since)| (format!("this gateway's copy is stale: {why}"), since));
        stale.or_else(|| lock(&self.shared.cut_off).clone())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
    }
}

/// What a write's decision rests on, read from the copy or from etcd.
#[derive(Debug, Clone, Default)]
struct Basis {
    /// The node's key.
    node: Option<Kv>,
    /// The leader key's revision (0: absent) and id.
    leader: (i64, Option<NodeId>),
    bootstrap: Bootstrap,
    /// How many nodes there are.
    count: i64,
    /// A node other than this one (its key), if there is one.
    other: Option<Kv>,
}

impl Shared {
    /// Whether the copy may be read and written from: loaded, and not stale.
    fn usable(&self) -> Result<(), StoreError> {
        if !lock(&self.copy).loaded {
            return Err(StoreError::Unavailable(Arc::from(
                "etcd: the registry was not read from etcd yet",
            )));
        }
        match &*lock(&self.stale) {
            Some((why, since)) => Err(StoreError::Unavailable(Arc::from(
                format!(
                    "etcd: this gateway's copy of the registry is stale since {}: {why}",
                    crate::logger::iso8601(*since)
                )
                .as_str(),
            ))),
            None => Ok(()),
        }
    }

    /// What a write about `node_id` rests on, from the copy.
    fn basis(self: &Arc<Self>, node_id: NodeId) -> Result<Basis, StoreError> {
        self.usable()?;
        let copy = lock(&self.copy);
        if !copy.loaded {
            drop(copy);
            return Err(self.unavailable("the registry was not read from etcd yet".to_owned()));
        }
        let node = copy.nodes.get(&node_id).map(|e| Kv {
            key: self.keys.node(node_id),
            value: Stored::encode(&e.record.info, e.record.join_timestamp),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            lease: e.lease,
        });
        let other = copy
            .nodes
            .values()
            .find(|e| e.record.node_id != node_id)
            .map(|e| Kv {
                key: self.keys.node(e.record.node_id),
                value: Vec::new(),
                create_revision: e.create_revision,
                mod_revision: e.mod_revision,
                lease: e.lease,
            });
        Ok(Basis {
            node,
            leader: copy
                .leader
                .map_or((0, None), |(id, revision)| (revision, Some(id))),
            bootstrap: copy.bootstrap,
            count: copy.nodes.len() as i64,
            other,
        })
    }

    /// The reads a failed transaction runs to give the next attempt its basis.
    fn basis_reads(&self, node_id: NodeId) -> Vec<Value> {
        let nodes = self.keys.nodes();
        let mut range = wire::count(&nodes, &wire::prefix_end(&nodes));
        range["request_range"]["count_only"] = Value::Bool(false);
        range["request_range"]["keys_only"] = Value::Bool(true);
        range["request_range"]["limit"] = Value::String("2".to_owned());
        vec![
            wire::get(&self.keys.node(node_id)),
            wire::get(&self.keys.leader()),
            wire::get(&self.keys.bootstrap()),
            range,
        ]
    }

    fn basis_from(&self, node_id: NodeId, ranges: &[(Vec<Kv>, i64)]) -> Result<Basis, String> {
        let [node, leader, bootstrap, nodes] = ranges else {
            return Err(format!(
                "a transaction answered {} reads, not 4",
                ranges.len()
            ));
        };
        let mine = self.keys.node(node_id);
        Ok(Basis {
            node: node.0.first().cloned(),
            leader: leader.0.first().map_or((0, None), |kv| {
                let id = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse().ok());
                (kv.mod_revision, id)
            }),
            bootstrap: Bootstrap::of(bootstrap.0.first()),
            count: nodes.1,
            other: nodes.0.iter().find(|kv| kv.key != mine).cloned(),
        })
    }

    /// Compares that hold while the registry is as empty, or not, as `basis` says: a node
    /// other than `node_id` still exists, or no node but `node_id` does.
    fn emptiness(&self, basis: &Basis, node_id: NodeId) -> Vec<Value> {
        if let Some(other) = &basis.other {
            return vec![wire::compare(
                &other.key,
                "CREATE",
                "EQUAL",
                other.create_revision,
            )];
        }
        let nodes = self.keys.nodes();
        let mine = self.keys.node(node_id);
        let mut after = mine.clone();
        after.push(0);
        vec![
            wire::compare_range(&nodes, &mine, "CREATE", "EQUAL", 0),
            wire::compare_range(&after, &wire::prefix_end(&nodes), "CREATE", "EQUAL", 0),
        ]
    }

    /// A compare that holds while the node's key is the one `basis` read: the same key
    /// (`CREATE`), or the same key unchanged (`MOD`).
    fn node_compare(&self, node_id: NodeId, basis: &Basis, target: &str) -> Value {
        let node = basis.node.as_ref();
        let revision = match target {
            "CREATE" => node.map_or(0, |kv| kv.create_revision),
            _ => node.map_or(0, |kv| kv.mod_revision),
        };
        wire::compare(&self.keys.node(node_id), target, "EQUAL", revision)
    }

    fn heartbeat(self: &Arc<Self>, node_id: NodeId, now: Now) -> Result<Option<u64>, StoreError> {
        self.usable()?;
        let connected = lock(&self.cut_off).is_none();
        let (lease, age) = {
            let copy = lock(&self.copy);
            match copy.nodes.get(&node_id) {
                Some(entry) => (entry.lease, entry.renewed.map(|at| at.elapsed())),
                None if copy.loaded => return Ok(None),
                None => {
                    drop(copy);
                    return Err(self.unavailable("the registry was not read yet".to_owned()));
                }
            }
        };
        // A lease renewed less than RENEW_SLACK ago runs at least `node_timeout` from now (its
        // TTL has the slack on top): this heartbeat needs no renewal of its own. Past half the
        // slack, it has the lease renewed with the next group without waiting for it, so a
        // node that beats often never waits.
        match age {
            Some(age) if age < RENEW_SLACK && connected => {
                if age >= RENEW_SLACK / 2 {
                    self.renew(lease, node_id, false)
                        .map_err(|e| self.unavailable(e))?;
                }
            }
            _ => {
                let renewed = self
                    .renew(lease, node_id, true)
                    .map_err(|e| self.unavailable(e))?;
                self.answered();
                if renewed.is_none() {
                    // Its lease expired: the node is reaped, the watch shows its key deleted.
                    return Ok(None);
                }
            }
        }
        let mut copy = lock(&self.copy);
        let before = copy.version();
        if !copy.heard(node_id, now) {
            return Ok(None);
        }
        copy.counts.heartbeats_total += 1;
        let after = copy.version();
        drop(copy);
        self.changed(before, after);
        Ok(Some(after))
    }

    fn remove(self: &Arc<Self>, node_id: NodeId) -> Result<bool, StoreError> {
        let mut basis = self.basis(node_id)?;
        for _ in 0..ATTEMPTS {
            let Some(node) = basis.node.clone() else {
                // Not in the copy: absent in etcd too, or the copy is behind; etcd says which.
                let answer = self
                    .etcd
                    .txn(
                        vec![self.node_compare(node_id, &basis, "CREATE")],
                        Vec::new(),
                        self.basis_reads(node_id),
                    )
                    .map_err(|e| self.unavailable(e))?;
                self.answered();
                if answer.succeeded {
                    return Ok(false);
                }
                basis = self
                    .basis_from(node_id, &answer.ranges)
                    .map_err(|e| self.unavailable(e))?;
                continue;
            };
            // One transaction: the node goes; the leader key goes if it names the node; and if
            // no other node is left, the whole cluster left on purpose, so the next node to
            // join bootstraps a new one. Nested transactions decide the last two inside it, so
            // removals at once through many gateways never wait on each other. (etcd evaluates
            // every compare, nested ones too, before the transaction writes anything: hence
            // "no node but this one".)
            let alone = Basis {
                other: None,
                ..Basis::default()
            };
            let success = vec![
                wire::delete(&self.keys.node(node_id)),
                wire::nested(
                    vec![wire::compare_value(
                        &self.keys.leader(),
                        node_id.to_string().as_bytes(),
                    )],
                    vec![wire::delete(&self.keys.leader())],
                ),
                wire::nested(
                    self.emptiness(&alone, node_id),
                    vec![wire::put(&self.keys.bootstrap(), b"armed", 0)],
                ),
            ];
            // Marked before the watch can show the deletion: it is a removal, not a reaping.
            lock(&self.copy).removing.insert(node_id);
            let answer = self.etcd.txn(
                vec![self.node_compare(node_id, &basis, "CREATE")],
                success,
                self.basis_reads(node_id),
            );
            if !answer.as_ref().is_ok_and(|a| a.succeeded) {
                lock(&self.copy).removing.remove(&node_id);
            }
            let answer = answer.map_err(|e| self.unavailable(e))?;
            self.answered();
            if !answer.succeeded {
                basis = self
                    .basis_from(node_id, &answer.ranges)
                    .map_err(|e| self.unavailable(e))?;
                continue;
            }
            self.wait_applied(answer.revision);
            lock(&self.copy).counts.removed_total += 1;
            if let Err(e) = self.etcd.revoke(node.lease) {
                log::debug!("revoking the lease of a removed node: {e}");
            }
            return Ok(true);
        }
        Err(self.unavailable(format!(
            "other gateways changed the registry {ATTEMPTS} times during one removal"
        )))
    }

    fn set_leader(self: &Arc<Self>, node_id: NodeId) -> Result<bool, StoreError> {
        let mut basis = self.basis(node_id)?;
        for _ in 0..ATTEMPTS {
            let compares = vec![self.node_compare(node_id, &basis, "CREATE")];
            let success = match &basis.node {
                Some(node) => vec![wire::put(
                    &self.keys.leader(),
                    node_id.to_string().as_bytes(),
                    node.lease,
                )],
                None => Vec::new(),
            };
            let answer = match self.etcd.txn(compares, success, self.basis_reads(node_id)) {
                Ok(answer) => answer,
                Err(e) if e.contains("lease not found") => {
                    // The node's lease expired meanwhile: it is reaped.
                    basis.node = None;
                    continue;
                }
                Err(e) => return Err(self.unavailable(e)),
            };
            self.answered();
            if !answer.succeeded {
                basis = self
                    .basis_from(node_id, &answer.ranges)
                    .map_err(|e| self.unavailable(e))?;
                continue;
            }
            if basis.node.is_none() {
                // Nothing was written: there is no revision of this write to wait for.
                return Ok(false);
            }
            self.wait_applied(answer.revision);
            return Ok(true);
        }
        Err(self.unavailable(format!(
            "other gateways changed the registry {ATTEMPTS} times during one leader change"
        )))
    }
}

impl Store for EtcdStore {
    fn register(&self, registration: Registration, now: Now) -> Result<Registered, StoreError> {
        self.shared.register(registration, now)
    }

    /// A registration that went with a group returns before the group is answered: see
    /// `etcd/register.rs`.
    fn register_pending(
        &self,
        registration: Registration,
        now: Now,
    ) -> Result<(Registered, Pending), StoreError> {
        let (registered, ticket) = self.shared.register_pending(registration, now)?;
        Ok((registered, Pending(None, ticket)))
    }

    fn confirm(&self, pending: Pending) -> Result<(), StoreError> {
        pending.1.map_or(Ok(()), |ticket| ticket.wait())
    }

    fn is_settled(&self, pending: &Pending, _version: u64) -> bool {
        pending.1.as_ref().is_none_or(Ticket::is_done)
    }

    /// `done` is called by the thread that learns the registration's outcome.
    fn when_settled(&self, pending: Pending, _version: u64, done: Settled) {
        match pending.1 {
            Some(ticket) => ticket.when_done(done),
            None => done(Ok(())),
        }
    }

    fn heartbeat(&self, node_id: NodeId, now: Now) -> Result<Option<u64>, StoreError> {
        self.shared.heartbeat(node_id, now)
    }

    fn remove(&self, node_id: NodeId) -> Result<bool, StoreError> {
        self.shared.remove(node_id)
    }

    fn set_leader(&self, node_id: NodeId) -> Result<bool, StoreError> {
        self.shared.set_leader(node_id)
    }

    fn sweep(&self, now: Now) {
        let mut copy = lock(&self.shared.copy);
        let before = copy.version();
        copy.sweep(now);
        let after = copy.version();
        drop(copy);
        self.shared.changed(before, after);
    }

    fn readable(&self) -> Result<(), StoreError> {
        self.shared.usable()
    }

    fn versions(&self) -> (u64, u64) {
        let copy = lock(&self.shared.copy);
        (copy.version(), copy.touches)
    }

    fn snapshot(&self) -> Snapshot {
        lock(&self.shared.copy).snapshot()
    }

    fn delta(&self, since: u64, max_changes: usize) -> Option<Delta> {
        lock(&self.shared.copy).delta(since, max_changes)
    }

    /// Nothing to wait for: what the copy shows is in etcd already.
    fn settle(&self, _version: u64) {}

    fn summary(&self) -> Summary {
        let copy = lock(&self.shared.copy);
        Summary {
            counts: copy.counts(),
            leader: copy.leader_id(),
            version: copy.version(),
            bootstrap_initiated: copy.bootstrap.initiated,
            bootstrap_armed: copy.bootstrap.armed,
            liveness: self.shared.liveness,
            budget: None,
        }
    }

    /// No data directory; `failed` says why etcd cannot be used, while it cannot.
    fn durability(&self) -> Durability {
        Durability {
            failed: self.cut_off().map(|(why, since)| {
                let refused = if self.shared.usable().is_err() {
                    "reads and writes are refused"
                } else {
                    "writes are refused; reads answer from this gateway's copy, which the \
                     freshness probe still shows current"
                };
                format!(
                    "etcd at {} cannot be used since {}: {why}; {refused}",
                    self.shared.etcd.endpoints(),
                    crate::logger::iso8601(since)
                )
            }),
            ..Durability::default()
        }
    }
}
