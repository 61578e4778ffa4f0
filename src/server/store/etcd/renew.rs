//! Lease renewals as a group commit: heartbeats that arrive while a group is being sent join
//! the next one, so etcd gets one keepalive request per group (16 renewals a POST), never one
//! per heartbeat.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crate::api::NodeId;
use crate::lock;

use super::Shared;

/// A group of renewals etcd answered: when it was sent, and the leases it no longer knows.
type Renewed = (Instant, Arc<HashSet<i64>>);

/// Heartbeats waiting for their leases to be renewed, as a group commit.
#[derive(Debug, Default)]
pub(super) struct Renewals {
    /// Leases to renew, with their nodes.
    pending: HashMap<i64, NodeId>,
    /// The group `pending` will be sent in.
    next: u64,
    /// True while a group is being sent.
    sending: bool,
    /// Outcomes of the last groups: when the group was sent and the leases etcd no longer
    /// knows, or why it failed.
    outcomes: HashMap<u64, Result<Renewed, String>>,
}

impl Shared {
    /// Renews `lease` (of `node_id`) with the next group of renewals: when the group was
    /// sent, or `None` if etcd no longer knows the lease. Without `wait`, the lease joins the
    /// next group and this returns at once (`None`); if no group is in flight, a short-lived
    /// thread sends one, so no request waits for renewals it does not need.
    pub(super) fn renew(
        self: &Arc<Self>,
        lease: i64,
        node_id: NodeId,
        wait: bool,
    ) -> Result<Option<Instant>, String> {
        let outcome = self.renew_group(&[(lease, node_id)], wait)?;
        Ok(outcome.and_then(|(sent, gone)| (!gone.contains(&lease)).then_some(sent)))
    }

    /// Renews every lease of `leases` (with its node) with the next group, and waits for it;
    /// errors are left to the registrations, which renew again if they must.
    pub(super) fn renew_all(self: &Arc<Self>, leases: &[(i64, NodeId)]) {
        if let Err(e) = self.renew_group(leases, true) {
            log::debug!("renewing the leases of a group of registrations: {e}");
        }
    }

    /// [`Shared::renew`] for several leases: when the group was sent and the leases etcd no
    /// longer knows (`None` without `wait`).
    fn renew_group(
        self: &Arc<Self>,
        leases: &[(i64, NodeId)],
        wait: bool,
    ) -> Result<Option<Renewed>, String> {
        let mut renewals = lock(&self.renewals);
        renewals.pending.extend(leases.iter().copied());
        let group = renewals.next;
        loop {
            if let Some(outcome) = renewals.outcomes.get(&group) {
                return outcome.clone().map(Some);
            }
            if !renewals.sending {
                renewals.sending = true;
                let number = renewals.next;
                renewals.next += 1;
                let leases: Vec<(i64, NodeId)> = renewals.pending.drain().collect();
                drop(renewals);
                if !wait {
                    let shared = Arc::clone(self);
                    let spawned = thread::Builder::new()
                        .name("gateway-etcd-renew".to_owned())
                        .spawn(move || shared.send_renewals(number, &leases));
                    if let Err(e) = spawned {
                        // Nothing sent: whoever waits on this group learns it failed.
                        let mut renewals = lock(&self.renewals);
                        renewals.sending = false;
                        renewals.outcomes.insert(number, Err(e.to_string()));
                        self.renewed.notify_all();
                    }
                    return Ok(None);
                }
                // This request sends the group (and every lease pending with it).
                self.send_renewals(number, &leases);
                renewals = lock(&self.renewals);
                continue;
            }
            if !wait {
                return Ok(None);
            }
            renewals = self
                .renewed
                .wait(renewals)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Sends one group of renewals, notes in the copy when each live lease was renewed, and
    /// publishes the outcome to the requests waiting for it.
    fn send_renewals(&self, number: u64, group: &[(i64, NodeId)]) {
        let sent = Instant::now();
        let leases: Vec<i64> = group.iter().map(|&(lease, _)| lease).collect();
        let outcome = self.etcd.keepalive(&leases).map(|gone| {
            let gone: HashSet<i64> = gone.into_iter().collect();
            let mut copy = lock(&self.copy);
            for (lease, node_id) in group {
                if let Some(entry) = copy.nodes.get_mut(node_id)
                    && entry.lease == *lease
                    && !gone.contains(lease)
                {
                    entry.renewed = Some(sent);
                }
            }
            (sent, Arc::new(gone))
        });
        let mut renewals = lock(&self.renewals);
        renewals.sending = false;
        renewals.outcomes.insert(number, outcome);
        renewals.outcomes.retain(|&g, _| g + 64 > number);
        self.renewed.notify_all();
    }
}
