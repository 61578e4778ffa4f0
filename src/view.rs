//! The client's cached view of the cluster: what the gateway last said, the peers carried over a
//! gateway restart until they are back, and what changed from one view to the next. Pure logic:
//! no I/O, no threads, time passed in.
//!
//! After a gateway restart (a new `epoch`, or a `not_found` heartbeat answer) the new gateway
//! knows only the nodes that registered again so far. A peer of the old view that it does not
//! list yet is *carried*: still shown, as it was, until the gateway lists it again or the carry
//! period (the gateway's `suspect_after`) ends. Only then is a peer that never came back reported
//! as gone. So a restart never reports a departure that did not happen; a real one is reported
//! late, by at most the carry period. The old leader is carried the same way while the new
//! gateway names none.

use std::time::{Duration, Instant};

use crate::api::{Node, NodeId};

/// The cluster as the gateway last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    /// Active peers, without this node.
    pub nodes: Vec<Node>,
    /// The leader, if any. It may be this node, and it may be a suspected node (which
    /// `nodes` does not list): the gateway keeps a suspected leader until it is reaped or
    /// replaced, and so does this view. Check `leader.status`.
    pub leader: Option<Node>,
    /// The registry version this view reflects (see [`ClusterView::key`]).
    pub registry_version: u64,
}

/// The last known view of the cluster, kept fresh by the heartbeat thread; still there while the
/// gateway is down.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// Peers and leader.
    pub cluster: ClusterInfo,
    /// The `epoch` of the gateway run that gave this view (`None` from the original gateway).
    pub epoch: Option<String>,
    /// When the gateway last confirmed this view.
    pub updated: Instant,
}

impl ClusterView {
    /// How old the view is.
    pub fn age(&self) -> Duration {
        self.updated.elapsed()
    }

    /// The view's change key, `(epoch, registry_version)`. A registry version means something
    /// only within one gateway run: after a restart it starts again (it may go backwards, or
    /// repeat with different content), so compare whole keys, never versions alone.
    pub fn key(&self) -> (Option<&str>, u64) {
        (self.epoch.as_deref(), self.cluster.registry_version)
    }
}

/// What changed in the cached view, as sent to subscribers
/// ([`crate::GatewayClient::subscribe`]). Each change carries the whole new view, so the last one
/// received is always a complete picture.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterChange {
    /// The view after the change.
    pub view: ClusterView,
    /// Peers that appeared.
    pub joined: Vec<Node>,
    /// Peers that are gone: removed or reaped by the gateway, or not back within the carry
    /// period after a gateway restart.
    pub left: Vec<NodeId>,
    /// Peers whose address, port, capabilities, metadata or status changed.
    pub updated: Vec<Node>,
    /// True if the leader is another node than before (or there is none now, or one now).
    pub leader_changed: bool,
    /// True if this change brings the news that this node bootstrapped the cluster (possibly
    /// learned by a registration the heartbeat thread made).
    pub bootstrapped: bool,
    /// True if the view now comes from another gateway run than before (a restart, a failover).
    pub epoch_changed: bool,
}

/// Peers and leader of the view before a gateway restart, shown until they are back.
#[derive(Debug, Clone)]
struct Carried {
    nodes: Vec<Node>,
    leader: Option<Node>,
    until: Instant,
}

/// The view, as the gateway said it and as shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct ViewState {
    /// What the gateway last said, with its epoch.
    fresh: Option<(ClusterInfo, Option<String>)>,
    carried: Option<Carried>,
    shown: Option<ClusterView>,
}

impl ViewState {
    /// The view as shown to readers.
    pub(crate) fn shown(&self) -> Option<&ClusterView> {
        self.shown.as_ref()
    }

    /// The change key of what the gateway last said (not of the carried view).
    pub(crate) fn fresh_key(&self) -> Option<(Option<&str>, u64)> {
        self.fresh
            .as_ref()
            .map(|(info, epoch)| (epoch.as_deref(), info.registry_version))
    }

    /// The gateway described the cluster as `info` in run `epoch`. `forgotten` says that it had
    /// forgotten this node (a restart or a reap), which starts carrying as a new epoch does.
    pub(crate) fn update(
        &mut self,
        info: ClusterInfo,
        epoch: Option<String>,
        forgotten: bool,
        carry_for: Duration,
        now: Instant,
    ) -> Option<ClusterChange> {
        let epoch_changed = self.fresh.as_ref().is_some_and(|(_, old)| *old != epoch);
        if (epoch_changed || forgotten)
            && let Some(old) = &self.shown
        {
            self.carried = Some(Carried {
                nodes: old.cluster.nodes.clone(),
                leader: old.cluster.leader.clone(),
                until: now + carry_for,
            });
        }
        self.fresh = Some((info, epoch));
        self.rebuild(now, epoch_changed)
    }

    /// The gateway confirmed the view unchanged: it is fresh as of `now`, and carried peers
    /// whose time is up are dropped.
    pub(crate) fn confirm(&mut self, now: Instant) -> Option<ClusterChange> {
        if let Some(shown) = self.shown.as_mut() {
            shown.updated = now;
        }
        if self.carried.is_some() {
            self.rebuild(now, false)
        } else {
            None
        }
    }

    /// Shows the fresh view plus what is still carried, and says what changed.
    fn rebuild(&mut self, now: Instant, epoch_changed: bool) -> Option<ClusterChange> {
        let (fresh, epoch) = self.fresh.clone()?;
        let mut cluster = fresh.clone();
        if let Some(carried) = self.carried.as_mut() {
            if now >= carried.until {
                self.carried = None;
            } else {
                carried
                    .nodes
                    .retain(|n| !fresh.nodes.iter().any(|f| f.node_id == n.node_id));
                cluster.nodes.extend(carried.nodes.iter().cloned());
                cluster.nodes.sort_by_key(|n| n.node_id);
                if cluster.leader.is_none() {
                    cluster.leader = carried.leader.clone();
                }
                if carried.nodes.is_empty() && (fresh.leader.is_some() || carried.leader.is_none())
                {
                    self.carried = None;
                }
            }
        }
        let view = ClusterView {
            cluster,
            epoch,
            updated: now,
        };
        let change = diff(self.shown.as_ref(), &view, epoch_changed);
        self.shown = Some(view);
        change
    }
}

/// What changed from `old` to `new`; `None` if nothing a reader sees did (a first view always
/// counts as a change).
fn diff(
    old: Option<&ClusterView>,
    new: &ClusterView,
    epoch_changed: bool,
) -> Option<ClusterChange> {
    let empty = Vec::new();
    let old_nodes = old.map_or(&empty, |v| &v.cluster.nodes);
    let find = |nodes: &[Node], id: NodeId| nodes.iter().find(|n| n.node_id == id).cloned();
    let joined: Vec<Node> = new
        .cluster
        .nodes
        .iter()
        .filter(|n| find(old_nodes, n.node_id).is_none())
        .cloned()
        .collect();
    let left: Vec<NodeId> = old_nodes
        .iter()
        .filter(|n| find(&new.cluster.nodes, n.node_id).is_none())
        .map(|n| n.node_id)
        .collect();
    let updated: Vec<Node> = new
        .cluster
        .nodes
        .iter()
        .filter(|n| find(old_nodes, n.node_id).is_some_and(|o| !same_record(&o, n)))
        .cloned()
        .collect();
    let leader_id = |v: &ClusterView| v.cluster.leader.as_ref().map(|l| l.node_id);
    let leader_changed = old.map(leader_id) != Some(leader_id(new));
    if old.is_some()
        && joined.is_empty()
        && left.is_empty()
        && updated.is_empty()
        && !leader_changed
    {
        return None;
    }
    Some(ClusterChange {
        view: new.clone(),
        joined,
        left,
        updated,
        leader_changed,
        bootstrapped: false,
        epoch_changed,
    })
}

/// Same record but for `last_seen`, which moves on every heartbeat.
fn same_record(a: &Node, b: &Node) -> bool {
    a.ip_address == b.ip_address
        && a.port == b.port
        && a.capabilities == b.capabilities
        && a.status == b.status
        && a.metadata == b.metadata
        && a.join_timestamp == b.join_timestamp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeStatus;

    fn node(id: NodeId) -> Node {
        Node {
            node_id: id,
            ip_address: "10.0.0.1".into(),
            port: 5000,
            capabilities: vec!["raft".into()],
            status: NodeStatus::Active,
            last_seen: 1.0,
            join_timestamp: 1.0,
            metadata: Default::default(),
        }
    }

    fn info(ids: &[NodeId], leader: Option<NodeId>, version: u64) -> ClusterInfo {
        ClusterInfo {
            nodes: ids.iter().map(|&i| node(i)).collect(),
            leader: leader.map(node),
            registry_version: version,
        }
    }

    fn ids(view: &ViewState) -> Vec<NodeId> {
        let shown = view.shown().unwrap();
        shown.cluster.nodes.iter().map(|n| n.node_id).collect()
    }

    const CARRY: Duration = Duration::from_secs(10);

    #[test]
    fn the_first_view_is_a_change_with_every_peer_joined() {
        let mut view = ViewState::default();
        let t = Instant::now();
        let change = view
            .update(info(&[2, 3], Some(2), 5), Some("a".into()), false, CARRY, t)
            .unwrap();
        assert_eq!(change.joined.len(), 2);
        assert!(change.leader_changed);
        assert_eq!(view.fresh_key(), Some((Some("a"), 5)));
    }

    #[test]
    fn a_new_version_with_the_same_content_is_no_change() {
        let mut view = ViewState::default();
        let t = Instant::now();
        view.update(info(&[2], None, 5), Some("a".into()), false, CARRY, t);
        let mut moved = info(&[2], None, 6);
        moved.nodes[0].last_seen = 99.0;
        assert_eq!(view.update(moved, Some("a".into()), false, CARRY, t), None);
    }

    #[test]
    fn departures_and_updates_within_one_run_are_reported_at_once() {
        let mut view = ViewState::default();
        let t = Instant::now();
        view.update(info(&[2, 3], Some(2), 5), Some("a".into()), false, CARRY, t);
        let mut next = info(&[2, 4], Some(2), 7);
        next.nodes[0].port = 6000;
        let change = view
            .update(next, Some("a".into()), false, CARRY, t)
            .unwrap();
        assert_eq!(change.left, vec![3]);
        assert_eq!(change.joined[0].node_id, 4);
        assert_eq!(change.updated[0].node_id, 2);
        assert!(!change.leader_changed && !change.epoch_changed);
    }

    #[test]
    fn a_restart_carries_peers_until_they_are_back_and_reports_no_departure() {
        let mut view = ViewState::default();
        let t = Instant::now();
        view.update(info(&[2, 3], Some(2), 9), Some("a".into()), false, CARRY, t);
        // The new run knows nobody yet, has no leader, and its version went backwards.
        let change = view.update(info(&[], None, 1), Some("b".into()), true, CARRY, t);
        assert_eq!(change, None, "nothing a reader sees changed");
        assert_eq!(ids(&view), vec![2, 3]);
        assert_eq!(
            view.shown()
                .unwrap()
                .cluster
                .leader
                .as_ref()
                .unwrap()
                .node_id,
            2
        );
        assert_eq!(view.shown().unwrap().key(), (Some("b"), 1));
        // Node 3 is back; node 2 not yet.
        assert_eq!(
            view.update(info(&[3], None, 2), Some("b".into()), false, CARRY, t),
            None
        );
        assert_eq!(ids(&view), vec![2, 3]);
        // Node 2 is back and is leader again: carrying ends.
        view.update(info(&[2, 3], Some(2), 4), Some("b".into()), false, CARRY, t);
        assert!(view.carried.is_none());
    }

    #[test]
    fn a_peer_that_never_comes_back_is_reported_gone_when_the_carry_period_ends() {
        let mut view = ViewState::default();
        let t = Instant::now();
        view.update(info(&[2, 3], None, 9), Some("a".into()), false, CARRY, t);
        view.update(info(&[2], None, 1), Some("b".into()), true, CARRY, t);
        assert_eq!(view.confirm(t + CARRY / 2), None);
        assert_eq!(ids(&view), vec![2, 3]);
        let change = view.confirm(t + CARRY).unwrap();
        assert_eq!(change.left, vec![3]);
        assert_eq!(ids(&view), vec![2]);
    }

    #[test]
    fn an_epoch_change_alone_starts_carrying() {
        let mut view = ViewState::default();
        let t = Instant::now();
        view.update(info(&[2], None, 9), Some("a".into()), false, CARRY, t);
        let change = view.update(info(&[], None, 9), Some("b".into()), false, CARRY, t);
        assert_eq!(change, None);
        assert_eq!(ids(&view), vec![2]);
    }
}
