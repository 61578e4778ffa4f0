//! Registrations that arrive together, sent to etcd as one transaction (a group commit).
//!
//! Only registrations whose decisions cannot touch each other are grouped: each writes its own
//! node's key and nothing else (no bootstrap, no leader key, no re-arming), about a node no
//! other registration of the group names, and rests on compares of its own node's key and the
//! bootstrap key, which no member of the group writes. The group's transaction holds every
//! member's compares and every member's put: etcd applies all of them at one revision exactly
//! when every member's compares hold, which is what the members' own transactions, applied one
//! after another at that revision, would have done. So bootstrap stays exactly once: a
//! registration that could bootstrap is never grouped.
//!
//! If a compare fails, nothing is written, and the failure branch reads every member's node
//! key: the members whose key is still the one they read are sent again at once as a smaller
//! group, and only those whose key moved (or all of them, if the bootstrap key moved, or etcd
//! refused the group) run their own transaction, deciding again on what its failure branch
//! reads. One stale member costs the others one more transaction, not one each.
//!
//! A node is in at most one group at a time, from joining it until its write is in the copy:
//! a second registration of the node meanwhile ([`Grouped::Busy`]) waits for the first, then
//! decides on what it wrote, instead of sending a compare that is bound to fail (and, before,
//! took its whole group down with it).
//!
//! A registration that finds fewer than [`MAX_SENDING`] groups in flight sends the pending
//! one (its own and every one that joined it); the others return at once, and each member's
//! `then` is called with its outcome by the thread that sent its group (`etcd/register.rs`:
//! the answer then goes out, and no worker waited for it). Groups that gathered while a
//! worker sent its own are sent by a short-lived thread. While a group's transaction is in
//! flight, the leases of its known nodes that were not renewed lately are renewed, so a member
//! written need not then wait for a renewal of its own. A group etcd took is shown in the copy
//! at once when the copy was at the revision just before it (`Shared::show_written`): the
//! registrations need not wait for the watch to bring their own write back.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use serde_json::Value;

use crate::api::NodeId;
use crate::lock;
use crate::server::registry::Now;

use super::wire::{self, Change, Kv};
use super::{APPLY_WAIT, RENEW_SLACK, Shared};

/// Most registrations in one group: etcd refuses a transaction of over 128 operations in a
/// branch (its default `--max-txn-ops`); a group has one put (and one read) per member and at
/// most one compare per member plus the bootstrap key's.
pub(super) const MAX_GROUP: usize = 64;

/// Groups in flight at once: the next group need not wait for the one before to be answered.
const MAX_SENDING: usize = 2;

/// How often a group is sent again without the members whose keys moved.
const RESENDS: usize = 3;

/// What a member does once its group was answered (on the thread that sent it: quick, or
/// handed on): `Some(revision)` if it was written.
pub(super) type Then = Box<dyn FnOnce(Option<i64>) + Send>;

/// One registration in a group.
pub(super) struct Member {
    pub node_id: NodeId,
    /// What its decision rests on.
    pub compares: Vec<Value>,
    /// What it writes (key, value, lease), and the node key's revisions it read: `mod_revision`
    /// (0: absent) is what its compare expects, `create_revision` (0: absent) what the key
    /// keeps once written.
    pub put: Kv,
    /// Called with its outcome.
    pub then: Then,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Member({})", self.node_id)
    }
}

/// What became of a registration offered to a group.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Grouped {
    /// It joined the next group: its `then` is called once that group is answered, and the
    /// node stays busy until [`Shared::ungroup`].
    Joined,
    /// Not sent: the next group is full. It runs its own transaction.
    Full,
    /// Not sent: another registration of the node is in a group, or its write is not in the
    /// copy yet. Wait for it ([`Shared::wait_ungrouped`]) and decide again.
    Busy,
}

/// Registrations waiting to be sent as one transaction, and those in flight.
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// The members of the next group.
    pending: Vec<Member>,
    /// Groups being sent.
    sending: usize,
    /// Nodes with a registration in a group, until that registration is done
    /// ([`Shared::ungroup`]).
    busy: HashSet<NodeId>,
}

impl Shared {
    /// Offers `member` to the next group. A registration that finds fewer than
    /// [`MAX_SENDING`] groups in flight sends the pending one (its own and every one that
    /// joined it) and calls each member's `then`; the groups that gathered meanwhile are sent
    /// by a thread of their own ([`Shared::send_pending`]), so its own answer does not wait for
    /// them. The others return at once.
    pub(super) fn grouped(self: &Arc<Self>, member: Member) -> Grouped {
        let node_id = member.node_id;
        let mut groups = lock(&self.groups);
        if groups.busy.contains(&node_id) {
            return Grouped::Busy;
        }
        if groups.pending.len() >= MAX_GROUP {
            return Grouped::Full;
        }
        groups.busy.insert(node_id);
        groups.pending.push(member);
        if groups.sending >= MAX_SENDING {
            return Grouped::Joined;
        }
        groups.sending += 1;
        let members = std::mem::take(&mut groups.pending);
        drop(groups);
        self.send_and_tell(members);
        let mut groups = lock(&self.groups);
        if groups.pending.is_empty() {
            groups.sending -= 1;
            return Grouped::Joined;
        }
        drop(groups);
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("gateway-etcd-group".to_owned())
            .spawn(move || shared.send_pending());
        if let Err(e) = spawned {
            log::debug!("cannot start a thread to send registrations: {e}");
            self.send_pending();
        }
        Grouped::Joined
    }

    /// Sends the pending groups until none is left, then gives up its place as a sender.
    fn send_pending(self: &Arc<Self>) {
        loop {
            let mut groups = lock(&self.groups);
            let members = std::mem::take(&mut groups.pending);
            if members.is_empty() {
                groups.sending -= 1;
                return;
            }
            drop(groups);
            self.send_and_tell(members);
        }
    }

    /// Sends one group (and again without the members whose keys moved), and calls each
    /// member's `then` with its outcome.
    fn send_and_tell(self: &Arc<Self>, members: Vec<Member>) {
        for (member, outcome) in self.send_group(members) {
            (member.then)(outcome);
        }
    }

    /// The registration of `node_id` that joined a group is done: another may join one.
    pub(super) fn ungroup(&self, node_id: NodeId) {
        lock(&self.groups).busy.remove(&node_id);
        self.grouped.notify_all();
    }

    /// Waits until no registration of `node_id` is in a group (at most [`APPLY_WAIT`]).
    pub(super) fn wait_ungrouped(&self, node_id: NodeId) {
        let deadline = Instant::now() + APPLY_WAIT;
        let mut groups = lock(&self.groups);
        while groups.busy.contains(&node_id) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            groups = self
                .grouped
                .wait_timeout(groups, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sends a group, and again without the members whose keys moved: each member's outcome.
    /// The leases of known nodes that were not renewed lately are renewed meanwhile, so the
    /// members need not wait for a renewal once written (see `Shared::written`).
    fn send_group(self: &Arc<Self>, mut members: Vec<Member>) -> Vec<(Member, Option<i64>)> {
        let mut outcomes = Vec::with_capacity(members.len());
        let stale = self.stale_leases(&members);
        let mut renewing = (!stale.is_empty()).then(|| {
            let shared = Arc::clone(self);
            thread::Builder::new()
                .name("gateway-etcd-renew".to_owned())
                .spawn(move || shared.renew_all(&stale))
                .ok()
        });
        for _ in 0..RESENDS {
            if members.is_empty() {
                break;
            }
            let mut compares: Vec<Value> = Vec::with_capacity(members.len() + 1);
            let mut puts = Vec::with_capacity(members.len());
            let mut reads = Vec::with_capacity(members.len());
            for member in &members {
                for compare in &member.compares {
                    // The bootstrap key's compare is usually the same for every member.
                    if !compares.contains(compare) {
                        compares.push(compare.clone());
                    }
                }
                puts.push(wire::put(
                    &member.put.key,
                    &member.put.value,
                    member.put.lease,
                ));
                reads.push(wire::get(&member.put.key));
            }
            let answer = match self.etcd.txn(compares, puts, reads) {
                Ok(answer) => answer,
                Err(e) => {
                    // Each member runs its own transaction, which says what is wrong (a lease
                    // gone, etcd cut off) for that member.
                    log::debug!("a group of registrations was refused: {e}");
                    break;
                }
            };
            self.answered();
            if answer.succeeded {
                self.show_written(&members, answer.revision);
                if let Some(Some(renewing)) = renewing.take() {
                    let _ = renewing.join();
                }
                outcomes.extend(members.into_iter().map(|m| (m, Some(answer.revision))));
                return outcomes;
            }
            let (kept, moved) = split_moved(members, &answer.ranges);
            members = kept;
            if moved.is_empty() {
                // No node key moved: the bootstrap key did, and every member decides again.
                break;
            }
            outcomes.extend(moved.into_iter().map(|m| (m, None)));
        }
        if let Some(Some(renewing)) = renewing.take() {
            let _ = renewing.join();
        }
        outcomes.extend(members.into_iter().map(|m| (m, None)));
        outcomes
    }

    /// The leases of known members that a registration acknowledged now would have to renew
    /// and wait for (see `Shared::written`): not confirmed renewed within half of
    /// [`RENEW_SLACK`], or etcd not answering lately.
    fn stale_leases(&self, members: &[Member]) -> Vec<(i64, NodeId)> {
        let connected = lock(&self.cut_off).is_none();
        let copy = lock(&self.copy);
        members
            .iter()
            .filter(|m| m.put.create_revision != 0)
            .filter(|m| {
                let age = copy
                    .nodes
                    .get(&m.node_id)
                    .filter(|entry| entry.lease == m.put.lease)
                    .and_then(|entry| entry.renewed.map(|at| at.elapsed()));
                !connected || age.is_none_or(|age| age >= RENEW_SLACK / 2)
            })
            .map(|m| (m.put.lease, m.node_id))
            .collect()
    }

    /// Shows a group etcd wrote at `revision` in the copy, if the copy is at the revision just
    /// before it: then nothing else happened in between, and the group's puts are exactly
    /// what the watch will show of `revision` (it skips them when it does).
    fn show_written(&self, members: &[Member], revision: i64) {
        let puts: Vec<Change> = members
            .iter()
            .map(|m| {
                Change::Put(Kv {
                    create_revision: match m.put.create_revision {
                        0 => revision,
                        created => created,
                    },
                    mod_revision: revision,
                    ..m.put.clone()
                })
            })
            .collect();
        let mut copy = lock(&self.copy);
        let before = copy.version();
        if !copy.written(&puts, revision, Now::system()) {
            return;
        }
        let after = copy.version();
        drop(copy);
        self.applied.notify_all();
        self.changed(before, after);
    }
}

/// Splits the members of a group whose compares failed by what its failure branch read of
/// each one's node key (in the members' order): those whose key is still the one they read
/// (absent, or at the revision they compare), and those whose key moved.
fn split_moved(members: Vec<Member>, read: &[(Vec<Kv>, i64)]) -> (Vec<Member>, Vec<Member>) {
    members.into_iter().enumerate().fold(
        (Vec::new(), Vec::new()),
        |(mut kept, mut moved), (i, member)| {
            let now = read
                .get(i)
                .map(|(kvs, _)| kvs.first().map_or(0, |kv| kv.mod_revision));
            if now == Some(member.put.mod_revision) {
                kept.push(member);
            } else {
                moved.push(member);
            }
            (kept, moved)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: NodeId, create_revision: i64, mod_revision: i64) -> Member {
        Member {
            node_id,
            compares: Vec::new(),
            put: Kv {
                key: format!("/p/nodes/{node_id}").into_bytes(),
                value: Vec::new(),
                create_revision,
                mod_revision,
                lease: 7,
            },
            then: Box::new(|_| {}),
        }
    }

    fn read(kv: Option<(i64, i64)>) -> (Vec<Kv>, i64) {
        let kvs = kv.map(|(create_revision, mod_revision)| Kv {
            key: Vec::new(),
            value: Vec::new(),
            create_revision,
            mod_revision,
            lease: 7,
        });
        (kvs.into_iter().collect(), 0)
    }

    #[test]
    fn a_failed_group_keeps_the_members_whose_keys_did_not_move() {
        let members = vec![
            member(1, 3, 9),  // unchanged
            member(2, 4, 8),  // written meanwhile (by another registration or gateway)
            member(3, 0, 0),  // new, still absent
            member(4, 0, 0),  // new, created meanwhile
            member(5, 5, 6),  // gone meanwhile (reaped)
            member(6, 2, 10), // removed and joined again: same revision is no longer the key
        ];
        let reads = [
            read(Some((3, 9))),
            read(Some((4, 12))),
            read(None),
            read(Some((11, 11))),
            read(None),
            read(Some((13, 13))),
        ];
        let (kept, moved) = split_moved(members, &reads);
        let ids = |members: &[Member]| members.iter().map(|m| m.node_id).collect::<Vec<_>>();
        assert_eq!(ids(&kept), vec![1, 3]);
        assert_eq!(ids(&moved), vec![2, 4, 5, 6]);
        // A member the failure branch did not answer for is never taken as unchanged.
        let (kept, moved) = split_moved(vec![member(1, 3, 9)], &[]);
        assert_eq!((kept.len(), moved.len()), (0, 1));
    }
}
