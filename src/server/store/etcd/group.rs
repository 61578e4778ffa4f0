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
//! As with lease renewals, a registration that finds a group pending and fewer than
//! [`MAX_SENDING`] in flight sends it (its own and every one that joined it); the others wait
//! for their outcome. A group etcd took is shown in the copy at once when the copy was at the
//! revision just before it (`Shared::show_written`): the registrations need not wait for the
//! watch to bring their own write back.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use crate::api::NodeId;
use crate::lock;
use crate::server::registry::Now;

use super::wire::{self, Change, Kv};
use super::{APPLY_WAIT, Shared};

/// Most registrations in one group: etcd refuses a transaction of over 128 operations in a
/// branch (its default `--max-txn-ops`); a group has one put (and one read) per member and at
/// most one compare per member plus the bootstrap key's.
pub(super) const MAX_GROUP: usize = 64;

/// Groups in flight at once: the next group need not wait for the one before to be answered.
const MAX_SENDING: usize = 2;

/// How often a group is sent again without the members whose keys moved.
const RESENDS: usize = 3;

/// One registration in a group.
#[derive(Debug)]
pub(super) struct Member {
    pub node_id: NodeId,
    /// What its decision rests on.
    pub compares: Vec<Value>,
    /// What it writes (key, value, lease), and the node key's revisions it read: `mod_revision`
    /// (0: absent) is what its compare expects, `create_revision` (0: absent) what the key
    /// keeps once written.
    pub put: Kv,
}

/// What became of a registration offered to a group.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Grouped {
    /// Written at this revision.
    Written(i64),
    /// Not written: it decides again and runs its own transaction.
    NotWritten,
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
    /// The outcome of each member whose group was answered: the revision it was written at,
    /// or `None`. Keyed by node: a node is in one group at most.
    outcomes: HashMap<NodeId, Option<i64>>,
}

impl Shared {
    /// Sends `member` with the next group. Unless this answers [`Grouped::Full`] or
    /// [`Grouped::Busy`], the node stays busy until [`Shared::ungroup`].
    pub(super) fn grouped(&self, member: Member) -> Grouped {
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
        loop {
            if let Some(outcome) = groups.outcomes.remove(&node_id) {
                return outcome.map_or(Grouped::NotWritten, Grouped::Written);
            }
            if groups.sending < MAX_SENDING && !groups.pending.is_empty() {
                // This registration sends the pending group (perhaps not its own: that one
                // may be in flight already).
                groups.sending += 1;
                let members = std::mem::take(&mut groups.pending);
                drop(groups);
                let outcomes = self.send_group(members);
                groups = lock(&self.groups);
                groups.sending -= 1;
                groups.outcomes.extend(outcomes);
                self.grouped.notify_all();
                continue;
            }
            groups = self.grouped.wait(groups).unwrap_or_else(|p| p.into_inner());
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
    fn send_group(&self, mut members: Vec<Member>) -> Vec<(NodeId, Option<i64>)> {
        let mut outcomes = Vec::with_capacity(members.len());
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
                outcomes.extend(members.iter().map(|m| (m.node_id, Some(answer.revision))));
                return outcomes;
            }
            let (kept, moved) = split_moved(members, &answer.ranges);
            members = kept;
            if moved.is_empty() {
                // No node key moved: the bootstrap key did, and every member decides again.
                break;
            }
            outcomes.extend(moved.iter().map(|m| (m.node_id, None)));
        }
        outcomes.extend(members.iter().map(|m| (m.node_id, None)));
        outcomes
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
