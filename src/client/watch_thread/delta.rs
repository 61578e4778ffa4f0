//! What the watch thread holds when the gateway sends delta answers (`changes=1`): every node
//! by id and the leader, kept by applying the events (pure, unit-tested).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::{ChangeKind, ChangesResponse, Node, NodeId, NodesResponse};
use crate::client::view::{ClusterInfo, split};

/// An answer to `GET /nodes?changes=1`: a delta answer, or a list from a gateway that does not
/// know the parameter (it ignores it). Told apart by the body: a list has no `full`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Answer {
    /// A delta answer, or every node marked `full`.
    Changes(ChangesResponse),
    /// A list: a gateway older than delta answers.
    List(NodesResponse),
}

/// Whether the gateway in use sends delta answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Ask with `changes=1` and see (the start, and after a switch to another gateway).
    Ask,
    /// It answered a list to `changes=1`: ask for lists.
    Lists,
}

/// The answer cannot be applied to what is held (an event this crate does not know, or one
/// without what it needs): start over from a full answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resync;

/// Every node (this one too, active and suspected) and the leader, as the delta answers so
/// far make them.
#[derive(Debug, Default, Clone)]
pub(super) struct Mirror {
    nodes: BTreeMap<NodeId, Node>,
    leader: Option<NodeId>,
    version: u64,
}

impl Mirror {
    /// Applies `answer`: a full one replaces everything, a delta is applied event by event.
    /// On `Err` what is held is partly applied: ask for a full answer before using it.
    pub(super) fn apply(&mut self, answer: ChangesResponse) -> Result<(), Resync> {
        if answer.full {
            self.nodes = answer.nodes.into_iter().map(|n| (n.node_id, n)).collect();
        } else {
            for change in answer.changes {
                match change.event {
                    ChangeKind::Joined
                    | ChangeKind::Updated
                    | ChangeKind::Suspected
                    | ChangeKind::Recovered => {
                        let node = change.node.ok_or(Resync)?;
                        self.nodes.insert(node.node_id, node);
                    }
                    ChangeKind::Left | ChangeKind::Reaped => {
                        self.nodes.remove(&change.node_id.ok_or(Resync)?);
                    }
                    ChangeKind::Leader => {}
                    _ => return Err(Resync),
                }
            }
        }
        self.leader = answer.leader;
        self.version = answer.registry_version;
        Ok(())
    }

    /// The view it makes for node `me` (left out of the peers): active peers, leader and
    /// version, and the suspected peers.
    pub(super) fn view(&self, me: Option<NodeId>) -> (ClusterInfo, Vec<Node>) {
        let (nodes, suspected) = split(self.nodes.values().cloned().collect(), me);
        let leader = self.leader.and_then(|id| self.nodes.get(&id).cloned());
        let cluster = ClusterInfo {
            nodes,
            leader,
            registry_version: self.version,
        };
        (cluster, suspected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: u64, status: &str) -> serde_json::Value {
        json!({"node_id": id, "ip_address": "10.0.0.1", "port": 5000 + id, "capabilities": [],
               "status": status, "last_seen": 1.0, "join_timestamp": 1.0, "metadata": {}})
    }

    fn answer(value: serde_json::Value) -> Answer {
        serde_json::from_value(value).expect("an answer")
    }

    fn changes(value: serde_json::Value) -> ChangesResponse {
        match answer(value) {
            Answer::Changes(changes) => changes,
            Answer::List(_) => panic!("read as a list"),
        }
    }

    fn ids(mirror: &Mirror, me: Option<u64>) -> (Vec<u64>, Vec<u64>, Option<u64>) {
        let (cluster, suspected) = mirror.view(me);
        (
            cluster.nodes.iter().map(|n| n.node_id).collect(),
            suspected.iter().map(|n| n.node_id).collect(),
            cluster.leader.map(|n| n.node_id),
        )
    }

    #[test]
    fn a_list_and_a_delta_answer_are_told_apart_by_their_body() {
        let list = answer(json!({"nodes": [node(1, "active")], "registry_version": 3}));
        assert!(matches!(list, Answer::List(_)));
        let full = answer(
            json!({"full": true, "changes": [], "nodes": [node(1, "active")],
                                 "leader": 1, "registry_version": 3}),
        );
        assert!(matches!(full, Answer::Changes(ref c) if c.full));
        let delta = answer(json!({"full": false, "changes": [], "leader": null,
                                  "registry_version": 3}));
        assert!(matches!(delta, Answer::Changes(ref c) if !c.full));
    }

    #[test]
    fn events_apply_in_order_on_top_of_a_full_answer() {
        let mut mirror = Mirror::default();
        mirror
            .apply(changes(
                json!({"full": true, "nodes": [node(1, "active"), node(2, "active")],
                                  "leader": 1, "registry_version": 5}),
            ))
            .unwrap();
        assert_eq!(ids(&mirror, Some(1)), (vec![2], vec![], Some(1)));
        mirror
            .apply(changes(json!({"full": false, "changes": [
                {"event": "joined", "registry_version": 6, "node_id": 3, "node": node(3, "active")},
                {"event": "suspected", "registry_version": 7, "node_id": 2, "node": node(2, "suspected")},
                {"event": "left", "registry_version": 8, "node_id": 1},
                {"event": "leader", "registry_version": 8, "leader_id": null},
                {"event": "leader", "registry_version": 9, "leader_id": 3}
            ], "leader": 3, "registry_version": 9})))
            .unwrap();
        assert_eq!(ids(&mirror, Some(1)), (vec![3], vec![2], Some(3)));
        assert_eq!(mirror.view(None).0.registry_version, 9);
        mirror
            .apply(changes(json!({"full": false, "changes": [
                {"event": "recovered", "registry_version": 10, "node_id": 2, "node": node(2, "active")},
                {"event": "reaped", "registry_version": 11, "node_id": 3},
                {"event": "leader", "registry_version": 11, "leader_id": null}
            ], "leader": null, "registry_version": 11})))
            .unwrap();
        assert_eq!(ids(&mirror, None), (vec![2], vec![], None));
    }

    #[test]
    fn an_unknown_event_or_one_without_its_record_asks_for_a_full_answer() {
        let mut mirror = Mirror::default();
        let unknown = changes(json!({"full": false, "changes": [
            {"event": "renamed", "registry_version": 2, "node_id": 1}
        ], "leader": null, "registry_version": 2}));
        assert_eq!(mirror.apply(unknown), Err(Resync));
        let bare = changes(json!({"full": false, "changes": [
            {"event": "joined", "registry_version": 2, "node_id": 1}
        ], "leader": null, "registry_version": 2}));
        assert_eq!(mirror.apply(bare), Err(Resync));
    }
}
