//! Registrations over etcd: decided as in memory on what the copy (or etcd) shows, written by
//! a transaction that compares what the decision read, and answered once the copy shows the
//! write. A registration that goes with a group (`group.rs`) holds no worker meanwhile: it
//! hands back a [`Ticket`], which the thread that sent the group completes once the write is
//! in the copy (the gateway's `when_settled` path then sends the answer), or which a thread of
//! its own completes after deciding again if the group failed for it. That answer was made
//! when the registration was decided: it shows the registry as it was then (its list leaves
//! the registrant out anyway), and it is sent only once its write is in etcd and in the copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use crate::api::{NodeId, Registration};
use crate::lock;
use crate::server::registry::{Now, Registered, Registry, RegistryError, Restored};

use super::copy::Stored;
use super::group::{Grouped, MAX_GROUP, Member, Then};
use super::wire::{self, Kv};
use super::{ATTEMPTS, RENEW_SLACK, Shared, StoreError, Ticket};

/// Most registrations deciding again at once on threads of their own after their group
/// failed: as many as the gateway's sending threads, far above what a bootstrap race needs.
pub(super) const MAX_ALONE: usize = 64;

/// How a registration is to be decided.
struct Attempt {
    /// A lease granted for the node, if one was (revoked if the registration does not use it).
    granted: Option<i64>,
    /// Whether it may go with a group: not twice, nor when deciding again after its group failed.
    group: bool,
    /// What its answer says already (deciding again after its group failed): a decision that
    /// differs writes nothing and fails.
    promised: Option<Registered>,
}

/// A registration decided.
enum Decided {
    /// Written at a revision, with a lease.
    Written(Registered, i64, i64),
    /// Handed to a group, with a lease: the ticket completes once it is written and shown.
    Grouped(Registered, Ticket, i64),
}

impl Decided {
    fn lease(&self) -> i64 {
        match self {
            Decided::Written(_, _, lease) | Decided::Grouped(_, _, lease) => *lease,
        }
    }
}

impl Shared {
    /// Registers, and returns once the write is in etcd and in the copy.
    pub(super) fn register(
        self: &Arc<Self>,
        registration: Registration,
        now: Now,
    ) -> Result<Registered, StoreError> {
        let (registered, ticket) = self.register_pending(registration, now)?;
        if let Some(ticket) = ticket {
            ticket.wait()?;
        }
        Ok(registered)
    }

    /// Registers; if the registration went with a group, returns before the group is
    /// answered, with the ticket that says once it is written and in the copy.
    pub(super) fn register_pending(
        self: &Arc<Self>,
        registration: Registration,
        now: Now,
    ) -> Result<(Registered, Option<Ticket>), StoreError> {
        let node_id = registration.node_id;
        let attempt = Attempt {
            granted: None,
            group: true,
            promised: None,
        };
        match self.decide(registration, now, attempt)? {
            Decided::Written(registered, revision, _) => {
                self.shown(node_id, registered, revision, now);
                Ok((registered, None))
            }
            Decided::Grouped(registered, ticket, _) => Ok((registered, Some(ticket))),
        }
    }

    /// After a write at `revision`: waits until the copy shows it, and notes the node heard
    /// from here.
    fn shown(self: &Arc<Self>, node_id: NodeId, registered: Registered, revision: i64, now: Now) {
        self.wait_applied(revision);
        let mut copy = lock(&self.copy);
        let before = copy.version();
        copy.heard(node_id, now);
        if registered.created {
            copy.counts.joins_total += 1;
        }
        let after = copy.version();
        drop(copy);
        self.changed(before, after);
    }

    /// What a grouped registration does once its group was answered: `Some(revision)`, it was
    /// written (its lease is renewed if it must be, the copy shows it, the ticket completes);
    /// `None`, it was not, and it decides again on a thread of its own, off the sender's.
    fn then(
        self: &Arc<Self>,
        (registration, now): (Registration, Now),
        registered: Registered,
        (lease, granted): (i64, Option<i64>),
        ticket: Ticket,
    ) -> Then {
        let shared = Arc::clone(self);
        Box::new(move |written: Option<i64>| {
            let node_id = registration.node_id;
            if let Some(revision) = written {
                let outcome = shared
                    .written(
                        node_id,
                        (registered.created, registered.is_bootstrap),
                        revision,
                        lease,
                    )
                    .map(|_| shared.shown(node_id, registered, revision, now));
                shared.ungroup(node_id);
                return ticket.complete(outcome);
            }
            // A group fails whole when etcd refuses it: then every member would hold a
            // thread on etcd's timeout while registrations keep coming (workers no longer
            // wait for them). Past MAX_ALONE, the registration is refused instead: it was
            // not written, and the client asks again.
            if shared.alone.fetch_add(1, Ordering::SeqCst) >= MAX_ALONE {
                shared.alone.fetch_sub(1, Ordering::SeqCst);
                shared.ungroup(node_id);
                return ticket.complete(Err(StoreError::Unavailable(Arc::from(
                    "etcd refused a group of registrations and too many are being retried; \
                     try again",
                ))));
            }
            let (alone, told) = (Arc::clone(&shared), ticket.clone());
            let spawned = thread::Builder::new()
                .name("gateway-etcd-register".to_owned())
                .spawn(move || {
                    let attempt = Attempt {
                        granted,
                        group: false,
                        promised: Some(registered),
                    };
                    let outcome = alone.decide(registration, now, attempt).map(|decided| {
                        if let Decided::Written(registered, revision, _) = decided {
                            alone.shown(node_id, registered, revision, now);
                        }
                    });
                    alone.ungroup(node_id);
                    alone.alone.fetch_sub(1, Ordering::SeqCst);
                    told.complete(outcome);
                });
            if let Err(e) = spawned {
                shared.alone.fetch_sub(1, Ordering::SeqCst);
                shared.ungroup(node_id);
                ticket.complete(Err(StoreError::Unavailable(Arc::from(
                    format!("cannot start a thread to register again: {e}").as_str(),
                ))));
            }
        })
    }

    /// Decides and writes (or hands the write to a group); revokes a lease it granted and
    /// did not use.
    fn decide(
        self: &Arc<Self>,
        registration: Registration,
        now: Now,
        mut attempt: Attempt,
    ) -> Result<Decided, StoreError> {
        let node_id = registration.node_id;
        let rejoining = registration.previous_epoch.is_some();
        let mut basis = self.basis(node_id)?;
        let outcome = (|| {
            for _ in 0..ATTEMPTS {
                let known = basis
                    .node
                    .as_ref()
                    .and_then(|kv| Stored::decode(&kv.value).map(|(info, join)| (kv, info, join)));
                // The pure registry merges metadata and checks the limits, exactly as in memory.
                let mut scratch = Registry::restore(
                    self.liveness,
                    Restored {
                        nodes: known
                            .iter()
                            .map(|(_, info, join)| (node_id, Arc::new(info.clone()), *join))
                            .collect(),
                        ..Restored::default()
                    },
                    now,
                );
                scratch.register(registration.clone(), now)?;
                let record = scratch.get(node_id).expect("the node was just registered");
                let created = known.is_none();
                if created && basis.count >= self.max_nodes as i64 {
                    return Err(RegistryError::Full {
                        max_nodes: self.max_nodes,
                    }
                    .into());
                }
                let created = known.is_none();
                let lease = match (&known, attempt.granted) {
                    (Some((kv, _, _)), _) => kv.lease,
                    (None, Some(lease)) => lease,
                    (None, None) => {
                        let ttl = (self.liveness.node_timeout + RENEW_SLACK)
                            .as_secs_f64()
                            .ceil() as u64;
                        let lease = self.etcd.grant(ttl).map_err(|e| self.unavailable(e))?;
                        attempt.granted = Some(lease);
                        lease
                    }
                };
                let join = known.as_ref().map_or(now.unix, |(_, _, join)| *join);
                let value = Stored::encode(&record.info, join);
                let is_bootstrap = created
                    && !rejoining
                    && basis.bootstrap.armed
                    && basis.count == 0
                    && basis.leader.1.is_none();
                if let Some(promised) = attempt.promised
                    && promised
                        != (Registered {
                            created,
                            is_bootstrap,
                        })
                {
                    // Its answer, made when it went with a group, says otherwise: write nothing.
                    return Err(StoreError::Unavailable(Arc::from(
                        "etcd: the registry changed while this registration was being written; \
                         nothing was written, try again",
                    )));
                }
                // The decision rests on the node's key and the bootstrap state; while bootstrap
                // is armed, also on the leader and on whether the registry is empty.
                let mut compares = vec![
                    self.node_compare(node_id, &basis, "MOD"),
                    wire::compare(
                        &self.keys.bootstrap(),
                        "MOD",
                        "EQUAL",
                        basis.bootstrap.mod_revision,
                    ),
                ];
                if created && basis.bootstrap.armed {
                    compares.push(wire::compare(
                        &self.keys.leader(),
                        "MOD",
                        "EQUAL",
                        basis.leader.0,
                    ));
                    compares.extend(self.emptiness(&basis, node_id));
                }
                let mut success = vec![wire::put(&self.keys.node(node_id), &value, lease)];
                if is_bootstrap {
                    success.push(wire::put(
                        &self.keys.leader(),
                        node_id.to_string().as_bytes(),
                        lease,
                    ));
                }
                if is_bootstrap || (rejoining && basis.bootstrap.armed) {
                    success.push(wire::put(&self.keys.bootstrap(), b"disarmed", 0));
                }
                // A registration that writes only its own node's key, on a decision no other
                // registration can change, goes with the next group (once: if the group is not
                // written, it decides again on its own).
                let alone = success.len() == 1
                    && !(created && basis.bootstrap.armed)
                    && (!created || basis.count + (MAX_GROUP as i64) < self.max_nodes as i64);
                if alone && attempt.group {
                    attempt.group = false;
                    let read = basis.node.as_ref();
                    let registered = Registered {
                        created,
                        is_bootstrap,
                    };
                    let ticket = Ticket::new();
                    let member = Member {
                        node_id,
                        compares: compares.clone(),
                        put: Kv {
                            key: self.keys.node(node_id),
                            value: value.clone(),
                            create_revision: read.map_or(0, |kv| kv.create_revision),
                            mod_revision: read.map_or(0, |kv| kv.mod_revision),
                            lease,
                        },
                        then: self.then(
                            (registration.clone(), now),
                            registered,
                            (lease, attempt.granted),
                            ticket.clone(),
                        ),
                    };
                    match self.grouped(member) {
                        Grouped::Joined => return Ok(Decided::Grouped(registered, ticket, lease)),
                        Grouped::Full => {}
                        Grouped::Busy => {
                            // Another registration of this node is in a group: decide again
                            // on what it wrote, once the copy shows it.
                            self.wait_ungrouped(node_id);
                            basis = self.basis(node_id)?;
                            attempt.group = true;
                            continue;
                        }
                    }
                }
                let answer = match self.etcd.txn(compares, success, self.basis_reads(node_id)) {
                    Ok(answer) => answer,
                    Err(e) if e.contains("lease not found") => {
                        // The node's lease expired meanwhile: its key is going; read again.
                        basis.node = None;
                        let answer = self
                            .etcd
                            .txn(Vec::new(), self.basis_reads(node_id), Vec::new())
                            .map_err(|e| self.unavailable(e))?;
                        basis = self
                            .basis_from(node_id, &answer.ranges)
                            .map_err(|e| self.unavailable(e))?;
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
                return self
                    .written(node_id, (created, is_bootstrap), answer.revision, lease)
                    .map(|(registered, revision, lease)| {
                        Decided::Written(registered, revision, lease)
                    });
            }
            Err(self.unavailable(format!(
                "other gateways changed the registry {ATTEMPTS} times during one registration"
            )))
        })();
        if let Some(lease) = attempt.granted
            && outcome
                .as_ref()
                .map_or(true, |decided| decided.lease() != lease)
            && let Err(e) = self.etcd.revoke(lease)
        {
            log::debug!("revoking an unused lease: {e}");
        }
        outcome
    }

    /// After a registration's write at `revision`: a node that was known is heard from, as a
    /// heartbeat is (its lease renewed less than [`RENEW_SLACK`] ago, or now).
    fn written(
        self: &Arc<Self>,
        node_id: NodeId,
        (created, is_bootstrap): (bool, bool),
        revision: i64,
        lease: i64,
    ) -> Result<(Registered, i64, i64), StoreError> {
        if !created {
            let age = lock(&self.copy)
                .nodes
                .get(&node_id)
                .filter(|entry| entry.lease == lease)
                .and_then(|entry| entry.renewed.map(|at| at.elapsed()));
            let connected = lock(&self.cut_off).is_none();
            match age {
                Some(age) if age < RENEW_SLACK && connected => {
                    if age >= RENEW_SLACK / 2 {
                        self.renew(lease, node_id, false)
                            .map_err(|e| self.unavailable(e))?;
                    }
                }
                _ => {
                    self.renew(lease, node_id, true)
                        .map_err(|e| self.unavailable(e))?;
                }
            }
        }
        let registered = Registered {
            created,
            is_bootstrap,
        };
        Ok((registered, revision, lease))
    }
}
