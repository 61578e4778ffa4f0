//! Registrations that arrive together, sent to etcd as one transaction (a group commit).
//!
//! Only registrations whose decisions cannot touch each other are grouped: each writes its own
//! node's key and nothing else (no bootstrap, no leader key, no re-arming), about a node no
//! other registration of the group names, and rests on compares of its own node's key and the
//! bootstrap key, which no member of the group writes. The group's transaction holds every
//! member's compares and every member's put: etcd applies all of them at one revision exactly
//! when every member's compares hold, which is what the members' own transactions, applied one
//! after another at that revision, would have done. If any compare fails (or etcd refuses the
//! group), nothing is written, and every member runs its own transaction as before, deciding
//! again on what its failure branch reads. So bootstrap stays exactly once: a registration
//! that could bootstrap is never grouped.
//!
//! As with lease renewals, the first registration to find no group in flight sends the one
//! pending (its own and every one that joined it); the others wait for its outcome.

use std::collections::HashMap;

use serde_json::Value;

use crate::api::NodeId;
use crate::lock;

use super::Shared;

/// Most registrations in one group: etcd refuses a transaction of over 128 operations (its
/// default `--max-txn-ops`), and each member brings two compares.
pub(super) const MAX_GROUP: usize = 64;

/// Registrations waiting to be sent as one transaction.
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// The members of the next group: their node, compares and put.
    pending: Vec<(NodeId, Vec<Value>, Value)>,
    /// The group `pending` will be sent in.
    next: u64,
    /// True while a group is being sent.
    sending: bool,
    /// Outcomes of the last groups: the revision their writes got, or `None` if they were
    /// not written (a compare failed, or etcd refused the group).
    outcomes: HashMap<u64, Option<i64>>,
}

impl Shared {
    /// Sends the registration of `node_id` (its `compares` and its `put`) with the next
    /// group: the revision it was written at, or `None` if it was not written and must run
    /// its own transaction. `None` at once if the group is full or names the node already.
    pub(super) fn grouped(&self, node_id: NodeId, compares: Vec<Value>, put: Value) -> Option<i64> {
        let mut groups = lock(&self.groups);
        if groups.pending.len() >= MAX_GROUP || groups.pending.iter().any(|p| p.0 == node_id) {
            return None;
        }
        groups.pending.push((node_id, compares, put));
        let group = groups.next;
        loop {
            if let Some(outcome) = groups.outcomes.get(&group) {
                return *outcome;
            }
            if !groups.sending {
                // This registration sends the group (and every one pending with it).
                groups.sending = true;
                let number = groups.next;
                groups.next += 1;
                let members = std::mem::take(&mut groups.pending);
                drop(groups);
                let outcome = self.send_group(members);
                groups = lock(&self.groups);
                groups.sending = false;
                groups.outcomes.insert(number, outcome);
                groups.outcomes.retain(|&g, _| g + 64 > number);
                self.grouped.notify_all();
                continue;
            }
            groups = self.grouped.wait(groups).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// One transaction for every member: the revision, or `None` if nothing was written.
    fn send_group(&self, members: Vec<(NodeId, Vec<Value>, Value)>) -> Option<i64> {
        let mut compares: Vec<Value> = Vec::with_capacity(members.len() * 2);
        let mut puts = Vec::with_capacity(members.len());
        for (_, member_compares, put) in members {
            for compare in member_compares {
                // The bootstrap key's compare is usually the same for every member.
                if !compares.contains(&compare) {
                    compares.push(compare);
                }
            }
            puts.push(put);
        }
        match self.etcd.txn(compares, puts, Vec::new()) {
            Ok(answer) if answer.succeeded => {
                self.answered();
                Some(answer.revision)
            }
            Ok(_) => None,
            Err(e) => {
                // Each member runs its own transaction, which says what is wrong (a lease gone,
                // etcd cut off) for that member.
                log::debug!("a group of registrations was refused: {e}");
                None
            }
        }
    }
}
