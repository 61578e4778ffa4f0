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

use crate::api::{Node, NodeId, NodeStatus};

/// The cluster as the gateway last described it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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

/// The last known view of the cluster, kept fresh by the heartbeat thread (and the watch thread,
/// when it runs); still there while the gateway is down.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterView {
    /// Peers and leader.
    pub cluster: ClusterInfo,
    /// Suspected peers (silent for `suspect_after`, not reaped yet), by node id: not in
    /// `cluster.nodes`, which lists active peers only. Learned from the lists the heartbeat and
    /// watch threads read (`status=all`); a registration's answer does not list them, and the
    /// original gateway may not either.
    pub suspected: Vec<Node>,
    /// The `epoch` of the gateway run that gave this view (`None` from the original gateway).
    pub epoch: Option<String>,
    /// When the gateway last confirmed this view.
    pub updated: Instant,
    /// Peers shown only because they were carried over a gateway restart: the gateway has not
    /// listed them again yet (they are in `cluster.nodes` or `suspected` as they were).
    pub carried: Vec<NodeId>,
    /// True if `cluster.leader` is carried over a gateway restart: the gateway names no leader
    /// yet, and this is the one the previous run named.
    pub leader_carried: bool,
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
/// received is always a complete picture. [`ClusterChange::events`] lists it as one
/// [`ChangeEvent`] per fact, for printing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterChange {
    /// The view after the change.
    pub view: ClusterView,
    /// Peers that appeared (as active, or, first seen already suspected, in `suspected` too).
    pub joined: Vec<Node>,
    /// Peers that are gone: removed or reaped by the gateway, or not back within the carry
    /// period after a gateway restart.
    pub left: Vec<NodeId>,
    /// Peers whose address, port, capabilities or metadata changed, or that registered anew
    /// (a new `join_timestamp`: removed and back between two reads, or registered again after
    /// a gateway restart without a data dir). A change of status is in `suspected` or
    /// `recovered`.
    pub updated: Vec<Node>,
    /// Peers that became suspected (silent for the gateway's `suspect_after`).
    pub suspected: Vec<Node>,
    /// Suspected peers that are active again (heard from before they were reaped).
    pub recovered: Vec<Node>,
    /// True if the leader is another node than before (or there is none now, or one now).
    pub leader_changed: bool,
    /// True if this change brings the news that this node bootstrapped the cluster (possibly
    /// learned by a registration the heartbeat thread made).
    pub bootstrapped: bool,
    /// True if the view now comes from another gateway run than before (a restart, a failover).
    pub epoch_changed: bool,
}

impl ClusterChange {
    /// The change as one event per fact, in this order: joined, updated, suspected, back,
    /// left, leader. A node first seen already suspected is both joined and suspected.
    pub fn events(&self) -> Vec<ChangeEvent> {
        let mut events: Vec<ChangeEvent> = Vec::new();
        events.extend(self.joined.iter().cloned().map(ChangeEvent::Joined));
        events.extend(self.updated.iter().cloned().map(ChangeEvent::Updated));
        events.extend(self.suspected.iter().cloned().map(ChangeEvent::Suspected));
        events.extend(self.recovered.iter().cloned().map(ChangeEvent::Back));
        events.extend(self.left.iter().copied().map(ChangeEvent::Left));
        if self.leader_changed {
            events.push(ChangeEvent::Leader(self.view.cluster.leader.clone()));
        }
        events
    }
}

/// One fact of a [`ClusterChange`]. `Display` gives one line (`joined 3 10.0.0.3:5003`,
/// `left 3`, `suspected 3 10.0.0.3:5003`, `back 3 10.0.0.3:5003`, `updated 3 10.0.0.3:5003`,
/// `leader 2 10.0.0.2:5002`, `leader none`); [`ChangeEvent::to_json`] one JSON object whose
/// `event` is the line's first word.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChangeEvent {
    /// A peer appeared.
    Joined(Node),
    /// A peer is gone (removed or reaped).
    Left(NodeId),
    /// A peer's address, port, capabilities or metadata changed, or it registered anew.
    Updated(Node),
    /// A peer became suspected.
    Suspected(Node),
    /// A suspected peer is active again.
    Back(Node),
    /// The leader is another node, or none.
    Leader(Option<Node>),
}

impl ChangeEvent {
    /// The event's name: `joined`, `left`, `updated`, `suspected`, `back`, `leader`.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeEvent::Joined(_) => "joined",
            ChangeEvent::Left(_) => "left",
            ChangeEvent::Updated(_) => "updated",
            ChangeEvent::Suspected(_) => "suspected",
            ChangeEvent::Back(_) => "back",
            ChangeEvent::Leader(_) => "leader",
        }
    }

    /// The node the event is about (none for a departure or a cluster without a leader).
    pub fn node(&self) -> Option<&Node> {
        match self {
            ChangeEvent::Joined(n)
            | ChangeEvent::Updated(n)
            | ChangeEvent::Suspected(n)
            | ChangeEvent::Back(n) => Some(n),
            ChangeEvent::Leader(n) => n.as_ref(),
            ChangeEvent::Left(_) => None,
        }
    }

    /// The id of the node the event is about (`None`: no leader now).
    pub fn node_id(&self) -> Option<NodeId> {
        match self {
            ChangeEvent::Left(id) => Some(*id),
            other => other.node().map(|n| n.node_id),
        }
    }

    /// One JSON object: `{"event": "joined", "node_id": 3, "node": {...}}`; `left` has no
    /// `node`; `leader` has `"node_id": null, "node": null` when there is none.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        object.insert("event".into(), self.name().into());
        object.insert("node_id".into(), self.node_id().into());
        if !matches!(self, ChangeEvent::Left(_)) {
            let node = self
                .node()
                .map(|n| serde_json::to_value(n).expect("a node serialises"));
            object.insert("node".into(), node.unwrap_or(serde_json::Value::Null));
        }
        serde_json::Value::Object(object)
    }
}

impl std::fmt::Display for ChangeEvent {
    /// One line whatever the gateway sent: a control character in an address (a newline
    /// would forge a second fact, an escape sequence drive the terminal) is shown escaped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.node_id(), self.node()) {
            (Some(id), Some(node)) => write!(
                f,
                "{} {id} {}",
                self.name(),
                escape_controls(&node.address())
            ),
            (Some(id), None) => write!(f, "{} {id}", self.name()),
            (None, _) => write!(f, "{} none", self.name()),
        }
    }
}

/// `text` with each control character as its Rust escape (`\n`, `\u{1b}`), the rest as is.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// A `status=all` list as the view holds it: active and suspected peers, without `me`.
pub(crate) fn split(nodes: Vec<Node>, me: Option<NodeId>) -> (Vec<Node>, Vec<Node>) {
    nodes
        .into_iter()
        .filter(|n| Some(n.node_id) != me)
        .partition(|n| n.status == NodeStatus::Active)
}

/// Peers and leader of the view before a gateway restart, shown until they are back.
#[derive(Debug, Clone)]
struct Carried {
    /// Active and suspected peers, with their status as last known.
    nodes: Vec<Node>,
    leader: Option<Node>,
    until: Instant,
}

/// The view, as the gateway said it and as shown.
#[derive(Debug, Clone, Default)]
pub(crate) struct ViewState {
    /// What the gateway last said, with its epoch.
    fresh: Option<(ClusterInfo, Option<String>)>,
    /// The suspected peers the gateway last listed.
    fresh_suspected: Vec<Node>,
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

    /// The gateway described the cluster as `info` in run `epoch`, with `suspected` peers
    /// (`None`: this answer does not list them, as a registration's does not; those known stay
    /// suspected unless `info` lists them active). `forgotten` says that it had forgotten this
    /// node (a restart or a reap), which starts carrying as a new epoch does.
    ///
    /// A description older than the one held (the same run, a lower version: the heartbeat and
    /// watch threads read on their own) is ignored.
    pub(crate) fn update(
        &mut self,
        info: ClusterInfo,
        suspected: Option<Vec<Node>>,
        epoch: Option<String>,
        forgotten: bool,
        carry_for: Duration,
        now: Instant,
    ) -> Option<ClusterChange> {
        if let Some((held, held_epoch)) = &self.fresh
            && epoch.is_some()
            && *held_epoch == epoch
            && info.registry_version < held.registry_version
        {
            return None;
        }
        let epoch_changed = self.fresh.as_ref().is_some_and(|(_, old)| *old != epoch);
        if (epoch_changed || forgotten)
            && let Some(old) = &self.shown
        {
            self.carried = Some(Carried {
                nodes: old
                    .cluster
                    .nodes
                    .iter()
                    .chain(&old.suspected)
                    .cloned()
                    .collect(),
                leader: old.cluster.leader.clone(),
                until: now + carry_for,
            });
        }
        self.fresh_suspected = match suspected {
            Some(listed) => listed,
            None if epoch_changed => Vec::new(),
            None => {
                let mut kept = std::mem::take(&mut self.fresh_suspected);
                kept.retain(|s| !info.nodes.iter().any(|n| n.node_id == s.node_id));
                kept
            }
        };
        self.fresh = Some((info, epoch));
        self.rebuild(now, epoch_changed)
    }

    /// Applies what a delta answer changed to the view the previous answer made, in place:
    /// only the nodes it names are touched, instead of the whole cluster being copied,
    /// compared and copied again for every change. It applies only on top of exactly that view
    /// (same run, at `patch.from`, nothing carried); otherwise it returns [`NotPatched`] and
    /// the caller describes the whole cluster to [`ViewState::update`], which the result of a
    /// patch always equals. `report`: build the change for subscribers (a copy of the view);
    /// without any, the change is only applied.
    pub(crate) fn patch(
        &mut self,
        patch: Patch,
        epoch: &Option<String>,
        report: bool,
        now: Instant,
    ) -> Result<Option<ClusterChange>, NotPatched> {
        let (Some((fresh, fresh_epoch)), None, Some(shown)) =
            (self.fresh.as_mut(), &self.carried, self.shown.as_mut())
        else {
            return Err(NotPatched);
        };
        if fresh_epoch != epoch
            || fresh.registry_version != patch.from
            || patch.version < patch.from
        {
            return Err(NotPatched);
        }
        let (mut joined, mut updated, mut left) = (Vec::new(), Vec::new(), Vec::new());
        let (mut suspected, mut recovered) = (Vec::new(), Vec::new());
        for (id, record) in patch.nodes {
            if Some(id) == patch.me {
                continue;
            }
            // Nothing is carried, so what is shown is what the gateway said: both change alike.
            let old = take(&mut fresh.nodes, id).or_else(|| take(&mut self.fresh_suspected, id));
            take(&mut shown.cluster.nodes, id);
            take(&mut shown.suspected, id);
            let Some(node) = record else {
                if old.is_some() {
                    left.push(id);
                }
                continue;
            };
            let was_suspected = old.as_ref().map(|o| o.status == NodeStatus::Suspected);
            match &old {
                None => joined.push(node.clone()),
                Some(old) if !same_record(old, &node) => updated.push(node.clone()),
                Some(_) => {}
            }
            match (was_suspected, node.status) {
                (None | Some(false), NodeStatus::Suspected) => suspected.push(node.clone()),
                (Some(true), NodeStatus::Active) => recovered.push(node.clone()),
                _ => {}
            }
            let (fresh_list, shown_list) = match node.status {
                NodeStatus::Active => (&mut fresh.nodes, &mut shown.cluster.nodes),
                NodeStatus::Suspected => (&mut self.fresh_suspected, &mut shown.suspected),
            };
            put(fresh_list, node.clone());
            put(shown_list, node);
        }
        let leader_id = |leader: &Option<Node>| leader.as_ref().map(|l| l.node_id);
        let leader_changed = leader_id(&fresh.leader) != leader_id(&patch.leader);
        fresh.leader.clone_from(&patch.leader);
        fresh.registry_version = patch.version;
        shown.cluster.leader = patch.leader;
        shown.cluster.registry_version = patch.version;
        shown.updated = now;
        let changed = !(joined.is_empty()
            && left.is_empty()
            && updated.is_empty()
            && suspected.is_empty()
            && recovered.is_empty())
            || leader_changed;
        if !changed || !report {
            return Ok(None);
        }
        // In the order a whole comparison gives: active peers first, each group by id.
        joined.sort_by_key(|n| n.status != NodeStatus::Active);
        updated.sort_by_key(|n| n.status != NodeStatus::Active);
        Ok(Some(ClusterChange {
            view: shown.clone(),
            joined,
            left,
            updated,
            suspected,
            recovered,
            leader_changed,
            bootstrapped: false,
            epoch_changed: false,
        }))
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
        let (fresh, epoch) = self.fresh.as_ref()?;
        let epoch = epoch.clone();
        let mut cluster = fresh.clone();
        let mut suspected = self.fresh_suspected.clone();
        let mut carried_ids = Vec::new();
        let mut leader_carried = false;
        if let Some(carried) = self.carried.as_mut() {
            if now >= carried.until {
                self.carried = None;
            } else {
                carried.nodes.retain(|n| {
                    !fresh
                        .nodes
                        .iter()
                        .chain(&suspected)
                        .any(|f| f.node_id == n.node_id)
                });
                for node in &carried.nodes {
                    carried_ids.push(node.node_id);
                    match node.status {
                        NodeStatus::Active => cluster.nodes.push(node.clone()),
                        NodeStatus::Suspected => suspected.push(node.clone()),
                    }
                }
                cluster.nodes.sort_by_key(|n| n.node_id);
                suspected.sort_by_key(|n| n.node_id);
                if cluster.leader.is_none() {
                    cluster.leader = carried.leader.clone();
                    leader_carried = cluster.leader.is_some();
                }
                if carried.nodes.is_empty() && (fresh.leader.is_some() || carried.leader.is_none())
                {
                    self.carried = None;
                }
            }
        }
        let view = ClusterView {
            cluster,
            suspected,
            epoch,
            updated: now,
            carried: carried_ids,
            leader_carried,
        };
        let change = diff(self.shown.as_ref(), &view, epoch_changed);
        self.shown = Some(view);
        change
    }
}

/// What one delta answer changed, for [`ViewState::patch`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Patch {
    /// The registry version of the view it applies to (the previous answer's).
    pub(crate) from: u64,
    /// The registry version after it.
    pub(crate) version: u64,
    /// Every node it changed, by id in ascending order: its record now, or `None` if it is
    /// gone. This node (`me`) may be among them; the view leaves it out.
    pub(crate) nodes: Vec<(NodeId, Option<Node>)>,
    /// The leader after it (this node's record, if it leads).
    pub(crate) leader: Option<Node>,
    /// This node, left out of the peers.
    pub(crate) me: Option<NodeId>,
}

/// A patch that does not apply to the view held: describe the whole cluster instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotPatched;

/// Takes node `id` out of `nodes`, if it is there.
fn take(nodes: &mut Vec<Node>, id: NodeId) -> Option<Node> {
    let at = nodes.iter().position(|n| n.node_id == id)?;
    Some(nodes.remove(at))
}

/// Puts `node` into `nodes` (by id, ascending) before the first node with a higher id.
fn put(nodes: &mut Vec<Node>, node: Node) {
    let at = nodes
        .iter()
        .position(|n| n.node_id > node.node_id)
        .unwrap_or(nodes.len());
    nodes.insert(at, node);
}

/// What changed from `old` to `new`; `None` if nothing a reader sees did (a first view always
/// counts as a change).
fn diff(
    old: Option<&ClusterView>,
    new: &ClusterView,
    epoch_changed: bool,
) -> Option<ClusterChange> {
    let empty = Vec::new();
    let old_active = old.map_or(&empty, |v| &v.cluster.nodes);
    let old_suspected = old.map_or(&empty, |v| &v.suspected);
    let old_any = |id| known(old_active, id).or_else(|| known(old_suspected, id));
    let new_any = |id| known(&new.cluster.nodes, id).or_else(|| known(&new.suspected, id));
    let every_new = new.cluster.nodes.iter().chain(&new.suspected);
    let joined: Vec<Node> = every_new
        .clone()
        .filter(|n| old_any(n.node_id).is_none())
        .cloned()
        .collect();
    let mut left: Vec<NodeId> = old_active
        .iter()
        .chain(old_suspected)
        .filter(|n| new_any(n.node_id).is_none())
        .map(|n| n.node_id)
        .collect();
    left.sort_unstable();
    let updated: Vec<Node> = every_new
        .filter(|n| old_any(n.node_id).is_some_and(|o| !same_record(o, n)))
        .cloned()
        .collect();
    let suspected: Vec<Node> = new
        .suspected
        .iter()
        .filter(|n| known(old_suspected, n.node_id).is_none())
        .cloned()
        .collect();
    let recovered: Vec<Node> = new
        .cluster
        .nodes
        .iter()
        .filter(|n| known(old_suspected, n.node_id).is_some())
        .cloned()
        .collect();
    let leader_id = |v: &ClusterView| v.cluster.leader.as_ref().map(|l| l.node_id);
    // A first view with no leader says nothing about one.
    let leader_changed = match old {
        Some(old) => leader_id(old) != leader_id(new),
        None => new.cluster.leader.is_some(),
    };
    if old.is_some()
        && !epoch_changed
        && joined.is_empty()
        && left.is_empty()
        && updated.is_empty()
        && suspected.is_empty()
        && recovered.is_empty()
        && !leader_changed
    {
        return None;
    }
    Some(ClusterChange {
        view: new.clone(),
        joined,
        left,
        updated,
        suspected,
        recovered,
        leader_changed,
        bootstrapped: false,
        epoch_changed,
    })
}

/// The node `id` in `nodes`.
fn known(nodes: &[Node], id: NodeId) -> Option<&Node> {
    nodes.iter().find(|n| n.node_id == id)
}

/// Same record but for `last_seen`, which moves on every heartbeat, and `status`, whose changes
/// are reported apart.
fn same_record(a: &Node, b: &Node) -> bool {
    a.ip_address == b.ip_address
        && a.port == b.port
        && a.capabilities == b.capabilities
        && a.metadata == b.metadata
        && a.join_timestamp == b.join_timestamp
}
#[cfg(test)]
mod tests;
